"""Configuration of curriculum training with layer-wise distillation (Gu et al., "Accelerating Multi-Exit BERT
Inference via Curriculum Learning and Knowledge Distillation", IJSEKE 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import MethodPaper, MultiExitTrainingArguments, check_fields
from .curriculum import DIFFICULTY_SCORERS, PACING_FUNCTIONS, SAMPLING_MODES

DISTILLATION_TEACHERS = {
    "layerwise": lambda exit_index, num_exits: exit_index + 1,
    "last_layer": lambda exit_index, num_exits: num_exits - 1,
}
"""`teacher(i, E)`: the exit (0-based) that intermediate exit `i` learns from."""


@dataclass
class CurriculumConfig(MultiExitTrainingArguments):
    """Curriculum over training samples plus layer-wise (or last-layer) self-distillation. No code was released;
    the reconstruction's choices are documented on each field and in `CurriculumTrainer`. Training defaults are
    BERT fine-tuning's (lr 2e-5, batch 32, 3 epochs)."""

    paper: ClassVar[MethodPaper] = MethodPaper(
        "Curriculum learning with layer-wise distillation",
        "Curriculum learning and layer-wise distillation for multi-exit BERT (Gu et al., IJSEKE 2023)",
    )
    default_exit_strategy: ClassVar[str] = "patience"
    exit_rule_fields: ClassVar[tuple[str, ...]] = ("patience",)

    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (BERT fine-tuning's 2e-5)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs of the curriculum stage."})
    difficulty_scorer: str = field(
        default="depth_weighted_loss",
        metadata={"help": f"One of {list(DIFFICULTY_SCORERS)}: 'depth_weighted_loss' = a warm-up model's task losses "
                  "weighted by exit depth (layer / sum of layers, PABEE's weights; default since issue 19, so that the "
                  "deep exits and not the shallow ones' fit decide the order); 'loss' = their plain mean (earlier "
                  "versions); 'first_correct_exit' = the first exit at which the warm-up model is right (ties by "
                  "loss); 'length' = number of tokens (no warm-up)."},
    )
    difficulty_warmup_epochs: float = field(
        default=1.0,
        metadata={"help": "Epochs of the warm-up stage (uniform sampling, same objective) whose model scores the "
                  "training set for 'loss' and 'first_correct_exit'; training continues from it."},
    )
    pacing: str = field(
        default="sqrt",
        metadata={"help": f"One of {list(PACING_FUNCTIONS)}: competence c(t) = min(1, sqrt(t (1 - c0^2) / T + "
                  "c0^2)) ('sqrt'), min(1, t (1 - c0) / T + c0) ('linear'), or baby steps: min(1, (floor(t K / T) "
                  "+ 1) / K) ('baby_steps')."},
    )
    curriculum_sampling: str = field(
        default="pass",
        metadata={"help": "'pass': the steps go through the current pool without replacement (every sample of the pool "
                  "once before any twice; new samples join the current pass); 'independent': each step draws from "
                  "the pool on its own (earlier versions; with the whole set in the pool an epoch sees ~63% of it)."},
    )
    initial_competence: float = field(
        default=0.2, metadata={"help": "c0 in (0, 1]: the easiest fraction of the data available at step 0."}
    )
    curriculum_fraction: float = field(
        default=0.5,
        metadata={"help": "T as a fraction of the curriculum stage's optimizer steps, in (0, 1]: from then on every "
                  "sample is in the pool (c = 1)."},
    )
    shared_schedule: bool = field(
        default=True,
        metadata={"help": "One optimizer and learning-rate schedule across the warm-up and curriculum stages (one "
                  "training run); False restarts both at the curriculum stage, as earlier versions did."},
    )
    baby_steps_buckets: int = field(default=4, metadata={"help": "K, the number of difficulty buckets of 'baby_steps'."})
    distillation: str = field(
        default="layerwise",
        metadata={"help": f"One of {list(DISTILLATION_TEACHERS)}: 'layerwise' = each exit learns from the next deeper "
                  "one (Gu et al.); 'last_layer' = every exit learns from the final one ('vanilla')."},
    )
    gamma: float = field(
        default=0.5, metadata={"help": "Weight of distillation vs. labels for the intermediate exits, in [0, 1]."}
    )
    temperature: float = field(default=3.0, metadata={"help": "Distillation temperature T > 0."})
    patience: int = field(
        default=3, metadata={"help": "Patience t saved as the model's default exit rule (exit_config.json)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, difficulty_scorer=DIFFICULTY_SCORERS, pacing=PACING_FUNCTIONS,
                     distillation=DISTILLATION_TEACHERS, curriculum_sampling=SAMPLING_MODES,
                     difficulty_warmup_epochs="> 0", initial_competence="(0, 1]", curriculum_fraction="(0, 1]",
                     baby_steps_buckets="integer >= 1", gamma="[0, 1]", temperature="> 0", patience="integer >= 0")
