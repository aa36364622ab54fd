"""Configuration of RomeBERT training (Gao et al., "RomeBERT: Robust Training of Multi-Exit BERT", 2021)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..losses import KD_REDUCTIONS
from .base import MethodPaper, MultiExitTrainingArguments, check_fields

GRADIENT_REGULARIZATIONS = ("gp", "ge", "none")


@dataclass
class RomeBertConfig(MultiExitTrainingArguments):
    """RomeBERT: one stage of self-distillation from the final exit plus gradient regularisation. Defaults are the
    paper's (lr 2e-5, batch 8, 3 epochs, gamma 0.9, T 3, gradient projection as released)."""

    paper: ClassVar[MethodPaper] = MethodPaper(
        "RomeBERT",
        "RomeBERT: Robust Training of Multi-Exit BERT (2021)",
        "https://arxiv.org/abs/2101.09755",
    )
    default_exit_strategy: ClassVar[str] = "entropy"
    exit_rule_fields: ClassVar[tuple[str, ...]] = ("entropy_threshold",)

    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (paper: 2e-5)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size per device (paper: 8)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs (paper: 3)."})
    gamma: float = field(
        default=0.9, metadata={"help": "Weight of distillation vs. labels for the intermediate exits, in [0, 1]."}
    )
    temperature: float = field(default=3.0, metadata={"help": "Distillation temperature T > 0."})
    regression_distillation: bool = field(
        default=False,
        metadata={"help": "On a regression task, also distil the final exit's value into the exits by squared error, "
                  "weighted gamma (this project's extension, the behaviour before issue 19). Off (default): on "
                  "regression the exits learn from the labels alone. RomeBERT distils class distributions; its "
                  "paper and released scripts cover classification tasks only, and the released regression "
                  "branch cannot run."},
    )
    kd_reduction: str = field(
        default="batchmean",
        metadata={"help": f"KL reduction, one of {list(KD_REDUCTIONS)}: 'batchmean' is the per-sample KL; 'released' "
                  "divides it by the number of classes, as RomeBERT's code (KLDivLoss with mean reduction) does."},
    )
    gradient_regularization: str = field(
        default="gp",
        metadata={"help": f"One of {list(GRADIENT_REGULARIZATIONS)}: 'gp' projects the final-exit gradient off the "
                  "exits' gradient where they conflict (as released); 'ge' is gradient equilibrium (ElasticBERT); "
                  "'none' trains on the plain summed loss."},
    )
    gp_swap_groups: bool = field(
        default=False,
        metadata={"help": "Project the exits' gradient off the final-exit gradient instead (the released code does "
                  "this on MNLI and QQP)."},
    )
    entropy_threshold: float = field(
        default=0.3, metadata={"help": "Entropy threshold S saved as the model's default exit rule (exit_config.json)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, gamma="[0, 1]", temperature="> 0", kd_reduction=KD_REDUCTIONS,
                     gradient_regularization=GRADIENT_REGULARIZATIONS, entropy_threshold=">= 0")
