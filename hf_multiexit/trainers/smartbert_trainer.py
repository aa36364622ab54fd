"""SmartBERT training (Hu et al., "SmartBERT: A Promotion of Dynamic Early Exiting Mechanism for Accelerating BERT
Inference", IJCAI 2023)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..losses import skip_reward, task_loss, token_info_nce
from .base import MultiExitTrainer, move_to_own_groups, register_method, split_dataset
from .smartbert_config import SmartBertConfig


def projection_mlp(in_size: int, out_size: int) -> nn.Sequential:
    """The released code's contrastive projection: Linear -> LayerNorm -> tanh -> Linear."""
    return nn.Sequential(nn.Linear(in_size, out_size), nn.LayerNorm(out_size), nn.Tanh(), nn.Linear(out_size, out_size))


class ProjectionHeads(nn.ModuleList):
    """One `projection_mlp` per layer (or exit); `forward` projects each one's features with its own."""

    def __init__(self, in_size: int, out_size: int, count: int):
        super().__init__(projection_mlp(in_size, out_size) for _ in range(count))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [project(x) for project, x in zip(self, features)]


@register_method("smartbert", SmartBertConfig)
class SmartBertTrainer(MultiExitTrainer):
    """Two stages in one `train()` call, each with a fresh optimizer and schedule. With `h_i` the gated state after
    layer `i`, `g_i` the skip gates' probabilities and `z_i` the exits' logits:

    1. `"backbone"` (embeddings, layers, gates, final classifier, layer projections `P_i`):
       `(1 - eta1) [CE(z_L, y) + lambda / sum_i mean_b(g_i)] + eta1 sum_{i=1}^{L-1} InfoNCE(P_i(h_i), P_{i+1}(h_{i+1}); tau1)`,
       a token-level InfoNCE (`losses.token_info_nce`: positive = the same token one layer up, padding masked).
       The layers are weighted by the soft `g_i` for the first `soft_gate_fraction` of the epochs (shortened to
       leave at least `min_hard_gate_epochs` of hard gates), then by the straight-through hard weight
       `g + sg(1[g >= r] - g)` (`gate_weight` in the modeling file).
    2. `"exits"` (everything above frozen, gates hard; intermediate exits and exit projections `Q_e` train):
       `(1 - eta2) sum_{e<L} CE(z_e, y) + eta2 mean_e InfoNCE(Q_e(f_e), Q_{e+1}(f_{e+1}); tau2)`, where the exit
       heads read their layer's own output `Layer_e(h_{e-1})` (what they see at inference) and `f_e` is the head's
       token features `tanh(W_0 Layer_e(h_{e-1}))`.

    Inference (saved exit rule): strategy `skip` (a layer whose gate is `>= r` is skipped, with no exit check; the
    others run and exit when `H(p_i) < S`).

    Choices, against the released code: the cross-layer contrast pairs the layer outputs `h_1..h_L` (released: the
    layer inputs `h_0..h_{L-1}`); padding is neither anchor nor negative; the stage-2 InfoNCE keeps the positive in
    its denominator like stage 1 and averages over all consecutive pairs of intermediate exits (released: positive
    left out, last pair dropped, sum divided by `L-2`); the released code keeps each stage's best epoch on the dev set,
    this trainer on a split of the training data when `selection_split` is set (Trainer's `load_best_model_at_end`
    on `selection_score`), else the last epoch. The skipping reward
    is a batch-level term, so with gradient accumulation it uses each micro-batch's mean gate (every other term
    accumulates exactly). The projection MLPs are training-only: they are trainer modules (`add_trainer_module`, not
    part of the saved model), trained in their stage, clipped on their own and stored in every checkpoint, so
    training resumes exactly in either stage.
    """

    args: SmartBertConfig
    stages = ("backbone", "exits")

    def __init__(self, model=None, args: SmartBertConfig | None = None, train_dataset=None, **kwargs):
        self._attention_mask: torch.Tensor | None = None
        super().__init__(model=model, args=args, train_dataset=train_dataset, **kwargs)
        self.selection_dataset = None
        if self.args.selection_split is not None and train_dataset is not None:
            self.train_dataset, self.selection_dataset = split_dataset(
                train_dataset, self.args.selection_split, self.args.seed, "selection_split"
            )
        self._evaluation_outside_training: tuple | None = None

    def setup_model(self) -> None:
        """Checks that the model has skip gates and attention heads, and builds the projection MLPs for its sizes."""
        config = self.model.config
        if not config.use_skip_gates:
            raise ValueError("SmartBERT needs a model with skip gates: load it with use_skip_gates=True.")
        if config.exit_head != "attention":
            raise ValueError(
                f"SmartBERT needs attention exit heads (exit_head='attention'), got exit_head={config.exit_head!r}: its "
                "stage-2 contrastive loss reads the heads' token features."
            )
        super().setup_model()
        size = self.args.projection_size
        layers = ProjectionHeads(config.hidden_size, size, config.num_hidden_layers)
        exits = ProjectionHeads(config.exit_head_hidden_size, size, len(config.exit_layers) - 1)
        self.add_trainer_module("layer_projections", layers, stages=(0,))
        # Stage-2 projections feed the exits' loss, so they learn at the exits' rate.
        self.add_trainer_module("exit_projections", exits, stages=(1,), learning_rate=self.args.exit_learning_rate)
        self.projections = nn.ModuleDict({"layers": layers, "exits": exits})

    # ----------------------------------------------------------------------------------------------- objective
    def soft_gate_epochs(self) -> float:
        """Epochs of stage 1's soft phase: `min(f E, E - h)` where `E > h`, else `f E` (`E` stage 1's epochs, `f` =
        `soft_gate_fraction`, `h` = `min_hard_gate_epochs`)."""
        epochs = self.state.num_train_epochs or 0
        soft, hard = self.args.soft_gate_fraction * epochs, self.args.min_hard_gate_epochs
        return min(soft, epochs - hard) if epochs > hard else soft

    def gate_mode(self) -> str:
        """Soft gates for stage 1's soft phase (`soft_gate_epochs`), hard ones after and in stage 2."""
        soft_epochs = self.soft_gate_epochs()
        if self.stage == "backbone" and (self.state.epoch or 0.0) < soft_epochs:
            return "soft"
        return "hard"

    def forward_kwargs(self):
        return {"output_hidden_states": True, "gate_mode": self.gate_mode()}

    def model_outputs(self, model, inputs):
        # The contrastive terms mask padding, and `objective` sees only the outputs.
        mask = inputs.get("attention_mask")
        self._attention_mask = torch.ones_like(inputs["input_ids"]) if mask is None else mask
        return super().model_outputs(model, inputs)

    def objective(self, outputs, labels):
        mask = self._attention_mask
        if self.stage == "backbone":
            eta, tau = self.args.stage1_contrastive_weight, self.args.stage1_temperature
            views = self.trainer_module("layer_projections")(outputs.hidden_states[1:])
            return {
                "final": (1 - eta) * task_loss(outputs.all_logits[-1], labels, self.problem_type),
                "skip": (1 - eta) * skip_reward(
                    outputs.gate_probs, self.args.skip_lambda, self.args.skip_reward_reference_layers
                ),
                "contrastive": eta * sum(token_info_nce(a, b, mask, tau) for a, b in zip(views, views[1:])),
            }
        eta, tau = self.args.stage2_contrastive_weight, self.args.stage2_temperature
        heads = self.unwrapped_model().base_model.exits
        views = self.trainer_module("exit_projections")(
            [torch.tanh(head.features.proj(outputs.layer_outputs[layer - 1])) for head, layer in zip(heads, self.exit_layers[:-1])]
        )
        pairs = list(zip(views, views[1:]))
        no_pairs = outputs.all_logits[-1].new_zeros(labels.shape[0], dtype=torch.float)
        contrastive = sum(token_info_nce(a, b, mask, tau) for a, b in pairs) / len(pairs) if pairs else no_pairs
        return {
            "exits": (1 - eta) * sum(task_loss(z, labels, self.problem_type) for z in outputs.all_logits[:-1]),
            "contrastive": eta * contrastive,
        }

    # ----------------------------------------------------------------------------------------------- stages
    def stage_trainable(self, index, model):
        intermediate = self.intermediate_exit_parameters(model)
        if index == 1:
            return intermediate
        frozen = {id(p) for p in intermediate}
        return [p for p in model.parameters() if id(p) not in frozen]

    def stage_arguments(self, index):
        overrides = {}
        if index == 1:
            overrides = {"num_train_epochs": self.args.stage2_num_train_epochs, "learning_rate": self.args.stage2_learning_rate}
        if self.selection_dataset is not None:
            # Trainer's own best-checkpoint machinery, on the held-out training split (`begin_stage`).
            overrides.update(eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                             metric_for_best_model="selection_score", greater_is_better=True)
        return {name: value for name, value in overrides.items() if value is not None}

    def begin_stage(self, index: int) -> None:
        """With `selection_split`: the stage evaluates on the held-out training split, scored by `selection_score`."""
        super().begin_stage(index)
        if self.selection_dataset is None:
            return
        if self._evaluation_outside_training is None:
            self._evaluation_outside_training = (self.eval_dataset, self.compute_metrics)
        self.eval_dataset = {"selection": self.selection_dataset}
        self.compute_metrics = self.with_selection_score(self._evaluation_outside_training[1])

    def end_training(self) -> None:
        if self._evaluation_outside_training is not None:
            self.eval_dataset, self.compute_metrics = self._evaluation_outside_training
            self._evaluation_outside_training = None
        super().end_training()

    def with_selection_score(self, compute_metrics):
        """`compute_metrics` plus `score`: in stage 1 the final exit's primary metric (the first an exit reports), in
        stage 2 the mean of the intermediate exits' (what each stage trains)."""
        def compute(prediction):
            metrics = compute_metrics(prediction)
            primary = {}
            for layer in self.exit_layers:
                values = [value for key, value in metrics.items() if key.startswith(f"exit_{layer}_")]
                if not values:
                    raise ValueError("selection_split scores the per-exit metrics (exit_<layer>_<metric>); the "
                                     "compute_metrics passed to the trainer has none.")
                primary[layer] = values[0]
            layers = self.exit_layers[-1:] if self.stage == "backbone" else self.exit_layers[:-1] or self.exit_layers
            return {**metrics, "score": float(np.mean([primary[layer] for layer in layers]))}

        return compute

    # ----------------------------------------------------------------------------------------------- optimizer
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        optimizer = super().create_optimizer(model)
        if self.stage == "backbone" and self.args.gate_learning_rate is not None:
            move_to_own_groups(optimizer, list(self.unwrapped_model(model).base_model.skip_gates.parameters()),
                               self.args.gate_learning_rate)
        return optimizer
