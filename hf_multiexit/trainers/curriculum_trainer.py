"""Curriculum training with layer-wise distillation (Gu et al., "Accelerating Multi-Exit BERT Inference via
Curriculum Learning and Knowledge Distillation", IJSEKE 2023). No code was released; this is the reconstruction of
`ALGORITHMS.md`."""

from __future__ import annotations


import torch

from ..losses import chained_distillation_loss
from .base import MultiExitTrainer, register_method
from .curriculum import DIFFICULTY_SCORERS, PACING_FUNCTIONS, CurriculumCallback, CurriculumSampler, difficulty_order
from .curriculum_config import DISTILLATION_TEACHERS, CurriculumConfig


@register_method("curriculum", CurriculumConfig)
class CurriculumTrainer(MultiExitTrainer):
    """Two levels (Gu et al. 2023):

    - Samples: a curriculum. A difficulty scorer (`difficulty_scorer`) sorts the training set from easy to hard;
      at optimizer step `t` the step's samples (all processes' and micro-steps' batches together, so N processes
      train on what one process with N times the batch would) are drawn uniformly from the easiest `c(t)` fraction,
      `c` a pacing function (`pacing`: competence `sqrt` (default) or `linear` of Platanios et al. 2019, or
      `baby_steps`) reaching 1 after `curriculum_fraction` of the steps. The model-based scorers (`loss`,
      `first_correct_exit`) need a model that has seen the data: a first stage (`difficulty_warmup_epochs`, uniform
      sampling, same objective) trains it, scores every training sample at the start of the curriculum stage, and
      training continues from it (so the curriculum shapes the later training, not a fresh start). The two stages
      are one run (`shared_schedule`, default): one optimizer, whose state carries over, and one learning-rate schedule over
      the steps of both, since the warm-up is the first epochs of the same training (same parameters, objective and
      learning rates) with uniform sampling; a restart would warm the learning rate up and decay it twice. `length`
      needs no warm-up stage. The curriculum is a `CurriculumSampler` plus a `CurriculumCallback` that stores the order in
      checkpoints: resuming continues at the same batch of the same curriculum.
    - Features: distillation between exits, with the label loss on the final exit,

          L = CE(z_L, y) + sum_{i<L} [ (1 - gamma) CE(z_i, y) + gamma T^2 KL(sg(p_{t(i)}^T) || p_i^T) ]

      where `t(i) = i + 1` for layer-wise distillation (`distillation="layerwise"`, each exit learns from the next
      deeper one) or `t(i) = L` for last-layer ("vanilla") distillation (`"last_layer"`).

    Inference uses patience exit (`patience`), as for PABEE and LeeBERT.
    """

    args: CurriculumConfig

    @property
    def shared_schedule(self) -> bool:
        return self.args.shared_schedule

    def __init__(self, model=None, args: CurriculumConfig | None = None, **kwargs):
        if isinstance(args, CurriculumConfig):
            warmup = DIFFICULTY_SCORERS[args.difficulty_scorer].needs_warmup
            self.stages = ("warmup", "curriculum") if warmup else ("curriculum",)
        super().__init__(model=model, args=args, **kwargs)
        self.add_callback(CurriculumCallback())

    def objective(self, outputs, labels):
        num_exits = len(outputs.all_logits)
        teacher = DISTILLATION_TEACHERS[self.args.distillation]
        teachers = [teacher(i, num_exits) for i in range(num_exits - 1)]
        loss = chained_distillation_loss(
            outputs.all_logits, labels, self.problem_type, teachers, self.args.gamma, self.args.temperature
        )
        return {self.args.distillation: loss}

    def stage_arguments(self, index: int):
        return {"num_train_epochs": self.args.difficulty_warmup_epochs} if self.stages[index] == "warmup" else {}

    # ----------------------------------------------------------------------------------------------- curriculum
    def curriculum_steps(self) -> int:
        """`T`: the optimizer step of the curriculum stage from which the whole training set is in the pool."""
        return max(1, round(self.args.curriculum_fraction * self.stage_steps(self.stages.index("curriculum"))))

    def _get_train_sampler(self, train_dataset=None):
        # The one private Trainer method a trainer here overrides: Trainer has no public way to supply the training
        # sampler, and overriding the public `get_train_dataloader` instead would copy its DataLoader set-up (workers,
        # seeding, accelerate's preparation and DDP sharding), which the curriculum needs unchanged.
        if self.stage != "curriculum":
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        args = self.args
        pacing, total = PACING_FUNCTIONS[args.pacing], self.curriculum_steps()
        return CurriculumSampler(
            num_samples=len(dataset),
            batch_size=self._train_batch_size,
            batches_per_step=args.gradient_accumulation_steps * args.world_size,
            competence=lambda step: pacing(step, total, args.initial_competence, args.baby_steps_buckets),
            seed=args.seed,
            order_fn=lambda: difficulty_order(self.difficulty_scores(dataset)),
            sampling=args.curriculum_sampling,
        )

    def difficulty_scores(self, dataset) -> torch.Tensor:
        """`(N,)` difficulties of the training samples from the configured scorer (model-based ones use the model
        as it is now, in eval mode, every exit; gathered over processes by `Trainer.predict`)."""
        scorer = DIFFICULTY_SCORERS[self.args.difficulty_scorer]
        lengths = torch.tensor([_num_tokens(dataset[i]) for i in range(len(dataset))])
        if not scorer.needs_warmup:
            return scorer.score(None, None, lengths, self.problem_type, self.exit_layers)
        prediction = self.predict(dataset, metric_key_prefix="difficulty")
        logits, labels = torch.from_numpy(prediction.predictions), torch.from_numpy(prediction.label_ids)
        return scorer.score(logits.float(), labels, lengths, self.problem_type, self.exit_layers)


def _num_tokens(example) -> int:
    mask = example.get("attention_mask")
    return int(torch.as_tensor(mask).sum()) if mask is not None else len(example["input_ids"])
