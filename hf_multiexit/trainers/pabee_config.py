"""Configuration of PABEE training (Zhou et al., "BERT Loses Patience", NeurIPS 2020)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import MethodPaper, MultiExitTrainingArguments, check_fields


@dataclass
class PabeeConfig(MultiExitTrainingArguments):
    """PABEE: one stage, every parameter, the weighted joint loss `sum_j w_j CE(z_j, y) / sum_j w_j`, `w_j = j`.
    Defaults are the paper's (lr 2e-5, batch 32, 5 epochs)."""

    paper: ClassVar[MethodPaper] = MethodPaper(
        "PABEE",
        "BERT Loses Patience: Fast and Robust Inference with Early Exit (Zhou et al., NeurIPS 2020)",
        "https://arxiv.org/abs/2006.04152",
    )
    exit_head: ClassVar[str] = "linear"
    default_exit_strategy: ClassVar[str] = "patience"
    exit_rule_fields: ClassVar[tuple[str, ...]] = ("patience",)

    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (paper: 2e-5)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device (paper: 32)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs (paper: 5)."})
    exit_loss_weights: list[float] | None = field(
        default=None,
        metadata={"help": "One weight per exit for the joint loss; default j for the exit after layer j (deeper "
                  "exits weigh more)."},
    )
    patience: int = field(
        default=3, metadata={"help": "Patience t saved as the model's default exit rule (exit_config.json)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.exit_loss_weights is not None and (
            not self.exit_loss_weights or any(w < 0 for w in self.exit_loss_weights) or sum(self.exit_loss_weights) <= 0
        ):
            raise ValueError(
                f"exit_loss_weights={self.exit_loss_weights} must be non-negative with a positive sum, one per exit."
            )
        check_fields(self, patience="integer >= 0")
