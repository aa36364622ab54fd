"""Configuration of DeeBERT training (Xin et al., "DeeBERT: Dynamic Early Exiting for Accelerating BERT
Inference", ACL 2020)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import MethodPaper, MultiExitTrainingArguments, check_fields


@dataclass
class DeeBertConfig(MultiExitTrainingArguments):
    """DeeBERT: stage 1 fine-tunes backbone and final classifier; stage 2 freezes them and trains the intermediate
    exits. Defaults are the paper's (lr 2e-5, batch 8, 3 epochs per stage)."""

    paper: ClassVar[MethodPaper] = MethodPaper(
        "DeeBERT",
        "DeeBERT: Dynamic Early Exiting for Accelerating BERT Inference (Xin et al., ACL 2020)",
        "https://arxiv.org/abs/2004.12993",
    )
    default_exit_strategy: ClassVar[str] = "entropy"
    exit_rule_fields: ClassVar[tuple[str, ...]] = ("entropy_threshold",)

    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate of stage 1 (paper: 2e-5)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size per device (paper: 8)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs of stage 1 (paper: 3)."})
    stage2_num_train_epochs: float | None = field(
        default=None, metadata={"help": "Epochs of stage 2 (None: the same as stage 1, as in the paper)."}
    )
    stage2_learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate of stage 2 (None: the same as stage 1, as in the paper)."}
    )
    entropy_threshold: float = field(
        default=0.3, metadata={"help": "Entropy threshold S saved as the model's default exit rule (exit_config.json)."}
    )
    skip_first_stage: bool = field(
        default=False,
        metadata={"help": "Start at stage 2: the backbone and final exit come fine-tuned, e.g. loaded from a fine-tuned "
                  "<Arch>ForSequenceClassification, whose head becomes the final exit; only the other exits train."},
    )

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, stage2_num_train_epochs="positive or None", stage2_learning_rate="positive or None",
                     entropy_threshold=">= 0")
