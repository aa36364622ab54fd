"""The GLUE task table: each task's columns, labels, files and metrics (Wang et al., 2019, "GLUE: A Multi-Task
Benchmark and Analysis Platform for Natural Language Understanding", ICLR 2019).

Its own module, free of the data loader's dependencies, because metrics, the model card and calibration need only
the table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GLUE_TASKS", "GlueTask", "TsvLayout", "get_glue_task", "normalize_task_name"]


@dataclass(frozen=True)
class TsvLayout:
    """How to read one task's official GLUE ``.tsv`` files.

    Attributes:
        header: column names the file's header line must contain, or ``None`` for files with no
            header (CoLA), which are read by position.
        text_fields: header names (or 0-based positions) of the text field(s), in the order of
            :attr:`GlueTask.text_columns`; empty: the file uses the text columns' own names.
        label_field: header name (or position) of the label field.
        label_format: ``"int"`` (class id written as a digit), ``"name"`` (class name written
            out, e.g. ``entailment``) or ``"float"`` (regression score).
        num_fields: number of tab-separated fields of a header-less file.
    """

    header: tuple[str, ...] | None
    text_fields: tuple[str | int, ...] = ()
    label_field: str | int = "label"
    label_format: Literal["int", "name", "float"] = "int"
    num_fields: int | None = None


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: column and label names as the Hub's GLUE builder gives them, where the
    official release keeps its files, how to parse them, and which metrics GLUE reports.

    Attributes:
        name: the ``datasets`` config name (``"sst2"``, ``"mnli"``, ...).
        folder: the task's folder in the GLUE release (``"SST-2"``, ``"MNLI"``, ...).
        text_columns: output text column name(s).
        label_names: class names in ``ClassLabel`` id order; empty for regression (STS-B).
        tsv: how to parse the ``.tsv`` files.
        split_files: ``(split name, file name)`` pairs, training split first.
        metrics: metric names reported for the task (the names ``evaluate``'s GLUE metric uses).
        primary_metric: the metric used to pick the best checkpoint.
    """

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    tsv: TsvLayout
    split_files: tuple[tuple[str, str], ...] = (("train", "train.tsv"), ("validation", "dev.tsv"))
    metrics: tuple[str, ...] = ("accuracy",)
    primary_metric: str = "accuracy"

    @property
    def tsv_text_fields(self) -> tuple[str | int, ...]:
        """Where each text column stands in the ``.tsv`` files."""
        return self.tsv.text_fields or self.text_columns

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        """Size of the model's output layer: the number of classes, or 1 for regression."""
        return len(self.label_names) or 1

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.split_files)

    @property
    def validation_splits(self) -> tuple[str, ...]:
        return tuple(split for split in self.splits if split != "train")


_PAIR = ("sentence1", "sentence2")
_NLI = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        # No header; fields: source code, label (0/1), original author mark, sentence.
        GlueTask("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"),
                 TsvLayout(None, text_fields=(3,), label_field=1, num_fields=4),
                 metrics=("matthews_correlation",), primary_metric="matthews_correlation"),
        GlueTask("sst2", "SST-2", ("sentence",), ("negative", "positive"), TsvLayout(("sentence", "label"))),
        GlueTask("mrpc", "MRPC", _PAIR, ("not_equivalent", "equivalent"),
                 TsvLayout(("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                           text_fields=("#1 String", "#2 String"), label_field="Quality"),
                 metrics=("accuracy", "f1"), primary_metric="f1"),
        GlueTask("stsb", "STS-B", _PAIR, (),
                 TsvLayout(("index", "genre", "filename", "year", "old_index", "source1", "source2", *_PAIR, "score"),
                           label_field="score", label_format="float"),
                 metrics=("pearson", "spearmanr"), primary_metric="pearson"),
        GlueTask("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"),
                 TsvLayout(("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                           label_field="is_duplicate"),
                 metrics=("accuracy", "f1"), primary_metric="f1"),
        # train.tsv has one annotator column (label1), the dev files five; only the columns below are required, and
        # the label is always gold_label.
        GlueTask("mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
                 TsvLayout((*_PAIR, "gold_label"), text_fields=_PAIR, label_field="gold_label", label_format="name"),
                 split_files=(("train", "train.tsv"), ("validation_matched", "dev_matched.tsv"),
                              ("validation_mismatched", "dev_mismatched.tsv"))),
        GlueTask("qnli", "QNLI", ("question", "sentence"), _NLI,
                 TsvLayout(("index", "question", "sentence", "label"), label_format="name")),
        GlueTask("rte", "RTE", _PAIR, _NLI, TsvLayout(("index", *_PAIR, "label"), label_format="name")),
        # Unlike RTE/QNLI, WNLI's files write 0/1 and 1 means entailment, so the order of the names is reversed to
        # keep the file's ids.
        GlueTask("wnli", "WNLI", _PAIR, _NLI[::-1], TsvLayout(("index", *_PAIR, "label"))),
    )
}

# Other spellings people use for the same tasks (after lower-casing and dropping "-"/"_").
_TASK_ALIASES = {"mnlimatched": "mnli", "mnlimismatched": "mnli", "mnlimm": "mnli"}


def normalize_task_name(task: str) -> str:
    key = task.strip().lower().replace("-", "").replace("_", "")
    return _TASK_ALIASES.get(key, key)


def get_glue_task(task: str) -> GlueTask:
    """Return the registry entry for ``task``.

    Case, ``-`` and ``_`` are ignored, so the GLUE folder names work too (``"SST-2"``,
    ``"STS-B"``); ``"mnli_matched"``, ``"mnli_mismatched"`` and ``"mnli-mm"`` mean ``"mnli"``.

    Raises:
        ValueError: ``task`` is not one of the nine GLUE tasks.
    """
    if not isinstance(task, str):
        raise ValueError(f"task must be a string naming a GLUE task, got {task!r}")
    spec = GLUE_TASKS.get(normalize_task_name(task))
    if spec is None:
        raise ValueError(
            f"unknown GLUE task {task!r}; choose one of {', '.join(GLUE_TASKS)}. "
            "For another dataset, use load_text_files()."
        )
    return spec
