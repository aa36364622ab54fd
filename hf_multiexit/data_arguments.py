"""The data flags of `hf-multiexit train` and `hf-multiexit evaluate`, each defined once.

`EvaluationDataArguments` names an evaluation set (a GLUE task's validation split, or a file) and how it is read;
`hf-multiexit evaluate` parses it as part of `EvaluateArguments`. `DataArguments` adds the training set, for
`hf-multiexit train`, whose GLUE ``--task`` is a training argument (the trainer's metrics read it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .metrics import METRICS, check_metric


@dataclass(kw_only=True)
class EvaluationDataArguments:
    data_dir: str | None = field(
        default_factory=lambda: os.environ.get("GLUE_DIR"),
        metadata={"help": "GLUE folder with the official TSV files (default: $GLUE_DIR, else datasets' glue)."},
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "CSV/TSV/JSON(L) validation file (a task that is not GLUE)."}
    )
    text_columns: list[str] = field(default_factory=lambda: ["sentence"], metadata={"help": "Text column(s) of the files."})
    label_column: str = field(default="label", metadata={"help": "Label column of the files."})
    metric: str | None = field(
        default=None,
        metadata={"help": f"Primary metric, one of {list(METRICS)} (e.g. macro_f1 for unbalanced classes): reported "
                  "first for every exit, used to pick checkpoints and to read the speed-ups of a sweep at. Default: "
                  "accuracy for classification, pearson for regression; a GLUE --task keeps its metrics (this may "
                  "pick one)."},
    )
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per example (longer ones are truncated)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation examples."})

    def __post_init__(self):
        check_metric(self.metric)
        if self.max_length < 1:
            raise ValueError(f"--max_length={self.max_length} must be a positive integer.")
        self._check_sample_count("max_eval_samples")

    def _check_sample_count(self, name: str) -> None:
        value = getattr(self, name)
        if value is not None and value < 1:
            raise ValueError(f"{name}={value} must be a positive number of examples.")


@dataclass(kw_only=True)
class DataArguments(EvaluationDataArguments):
    train_file: str | None = field(default=None, metadata={"help": "CSV/TSV/JSON(L) training file (a task that is not GLUE)."})
    class_names: list[str] | None = field(
        default=None,
        metadata={"help": "Class names in id order, for files whose labels are names (e.g. --class_names negative "
                  "positive); integer labels need none. (TrainingArguments' --label_names is something else: the "
                  "batch keys that hold labels.)"},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})

    def __post_init__(self):
        super().__post_init__()
        self._check_sample_count("max_train_samples")
        if (self.train_file is None) != (self.validation_file is None):
            raise ValueError("Give both --train_file and --validation_file, or neither (then --task selects GLUE data).")
        if self.class_names is not None and self.train_file is None:
            raise ValueError(
                f"--class_names {self.class_names} names the classes of --train_file/--validation_file labels; a GLUE "
                "--task has its own. Leave --class_names out, or give the files."
            )
