"""GLUE evaluation metrics, computed with scikit-learn and SciPy.

The metric for each task follows the GLUE benchmark (Wang et al., 2019, "GLUE: A Multi-Task
Benchmark and Analysis Platform for Natural Language Understanding", ICLR 2019), and the result
keys are the names the ``evaluate`` library's GLUE metric uses, so numbers and logs line up with
other GLUE code:

======================================  ==============================
task                                    keys
======================================  ==============================
cola                                    ``matthews_correlation``
sst2, mnli, qnli, rte, wnli             ``accuracy``
mrpc, qqp                               ``accuracy``, ``f1``
stsb                                    ``pearson``, ``spearmanr``
any other (custom) classification task  ``accuracy``
any other (custom) regression task      ``pearson``, ``spearmanr``
======================================  ==============================

F1 is binary F1 of the positive class (id 1: ``equivalent`` / ``duplicate``), as in GLUE.

A custom task may choose its metric (``metric=``, the ``--metric`` flag of train/evaluate/calibrate) from
:data:`METRICS`: ``accuracy``, ``f1`` (binary), ``macro_f1``, ``micro_f1``, ``weighted_f1``,
``matthews_correlation`` for classification, ``pearson``, ``spearmanr`` for regression. It becomes the primary
metric and is reported first, beside the defaults above. A GLUE task keeps its metrics; ``metric=`` may only pick
one of them as the primary metric (e.g. ``accuracy`` for MRPC instead of ``f1``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .tasks import GLUE_TASKS, normalize_task_name
from .models.multiexit_bert.exit_strategies import MULTI_LABEL, REGRESSION

__all__ = [
    "CLASSIFICATION_METRICS",
    "METRICS",
    "REGRESSION_METRICS",
    "check_metric",
    "compute_metrics",
    "logits_metrics",
    "logits_to_predictions",
    "metric_names",
    "primary_metric",
]

_GENERIC_KINDS = {"classification": False, "regression": True}


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch.Tensor, recognised without importing torch
        values = values.detach().cpu()
        if values.is_floating_point():
            values = values.float()  # NumPy has no bfloat16
        values = values.numpy()
    return np.asarray(values)


def _resolve(task_or_metric_kind: str, is_regression: bool | None,
             predictions: np.ndarray) -> tuple[tuple[str, ...], bool]:
    """Return ``(metric names, is_regression)`` for a GLUE task, a generic kind or a custom
    task."""
    key = normalize_task_name(task_or_metric_kind)
    spec = GLUE_TASKS.get(key)
    if spec is not None:
        if is_regression is not None and is_regression != spec.is_regression:
            kind = "a regression" if spec.is_regression else "a classification"
            raise ValueError(
                f"GLUE task {spec.name} is {kind} task, but is_regression={is_regression} was "
                "passed; drop the argument"
            )
        return spec.metrics, spec.is_regression
    if key in _GENERIC_KINDS:
        regression = _GENERIC_KINDS[key]
        if is_regression is not None and is_regression != regression:
            raise ValueError(
                f"metric kind {task_or_metric_kind!r} contradicts is_regression={is_regression}"
            )
    elif is_regression is None:
        # A custom task: logits_to_predictions gives integer class ids for classification
        # and floats for regression, so the dtype tells the two apart.
        regression = bool(np.issubdtype(predictions.dtype, np.floating))
    else:
        regression = bool(is_regression)
    return (("pearson", "spearmanr") if regression else ("accuracy",)), regression


def metric_names(task_or_metric_kind: str, is_regression: bool = False, metric: str | None = None) -> tuple[str, ...]:
    """The keys :func:`compute_metrics` returns for a GLUE task, ``"classification"``,
    ``"regression"`` or a custom task (whose kind ``is_regression`` gives): ``metric`` first, then the defaults."""
    key = normalize_task_name(task_or_metric_kind)
    if key in GLUE_TASKS:
        names = GLUE_TASKS[key].metrics
    else:
        names = ("pearson", "spearmanr") if _GENERIC_KINDS.get(key, is_regression) else ("accuracy",)
    return tuple(dict.fromkeys((metric, *names))) if metric else names


def primary_metric(task: str, is_regression: bool = False, metric: str | None = None) -> str:
    """The metric used to rank checkpoints: GLUE's main number for the task.

    ``cola``: ``matthews_correlation``; ``stsb``: ``pearson``; ``mrpc``/``qqp``: ``f1`` (their
    classes are unbalanced, so F1 is the more telling of GLUE's two numbers); other GLUE tasks:
    ``accuracy``. A custom task: ``pearson`` if ``is_regression`` (or ``task="regression"``),
    else ``accuracy``. A chosen ``metric`` (see :func:`check_metric`) replaces these. Higher is better for all.
    """
    if metric:
        return metric
    key = normalize_task_name(task)
    if key in GLUE_TASKS:
        return GLUE_TASKS[key].primary_metric
    return "pearson" if _GENERIC_KINDS.get(key, is_regression) else "accuracy"


def logits_to_predictions(logits: Any, is_regression: bool) -> np.ndarray:
    """Turn model outputs into predictions for :func:`compute_metrics`.

    Classification: ``logits`` of shape ``(n, num_labels)`` -> ``int64`` class ids (argmax).
    Regression: shape ``(n, 1)`` or ``(n,)`` -> ``float`` scores of shape ``(n,)``.
    Accepts NumPy arrays, lists and torch tensors.
    """
    arr = _to_numpy(logits)
    if is_regression:
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise ValueError(
                f"regression outputs must have shape (n,) or (n, 1), got {arr.shape}"
            )
        return arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"classification logits must have shape (n, num_labels), got {arr.shape}; pass one "
            "exit's logits at a time"
        )
    return arr.argmax(axis=-1).astype(np.int64)


def _correlation(kind: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import pearsonr, spearmanr

    if not (np.isfinite(predictions).all() and np.isfinite(labels).all()):
        return math.nan  # e.g. a diverged model; hiding it would be worse than NaN
    # A correlation with a constant series is 0/0. We report 0.0, as scikit-learn does for
    # Matthews' coefficient: a constant predictor (typical early in training, or of a shallow
    # exit) carries no information about the targets. A NaN would also break "best checkpoint"
    # comparisons, since every comparison with NaN is False.
    if len(predictions) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    fn = pearsonr if kind == "pearson" else spearmanr
    return float(fn(predictions, labels)[0])


def _accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    # Exact match: a multi-label row (trailing dimensions) is right only when every label is.
    same = np.asarray(predictions) == np.asarray(labels)
    return float(same.reshape(same.shape[0], -1).all(axis=1).mean())


def _f1(average: str):
    def f1(labels: np.ndarray, predictions: np.ndarray) -> float:
        from sklearn.metrics import f1_score

        return float(f1_score(labels, predictions, average=average, zero_division=0.0))

    return f1


def _matthews(labels: np.ndarray, predictions: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, predictions))


def _correlation_metric(kind: str):
    return lambda labels, predictions: _correlation(kind, np.asarray(predictions, float), np.asarray(labels, float))


CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1", "micro_f1", "weighted_f1", "matthews_correlation")
REGRESSION_METRICS = ("pearson", "spearmanr")
METRICS = {
    "accuracy": _accuracy,
    "f1": _f1("binary"),
    "macro_f1": _f1("macro"),
    "micro_f1": _f1("micro"),
    "weighted_f1": _f1("weighted"),
    "matthews_correlation": _matthews,
    "pearson": _correlation_metric("pearson"),
    "spearmanr": _correlation_metric("spearmanr"),
}
"""``metric(labels, predictions) -> float`` (higher is better), from scikit-learn and SciPy: the names ``--metric``
accepts, the GLUE names among them. ``f1`` is binary F1 of class id 1."""


def check_metric(metric: str | None, task: str | None = None, num_labels: int | None = None) -> str | None:
    """Validates a ``--metric`` choice and returns it: a key of :data:`METRICS` that fits the problem (regression
    when ``num_labels == 1``), ``f1`` only with 2 classes, and for a GLUE ``task`` one of that task's metrics.
    ``None`` passes (the defaults). Raises ``ValueError`` naming the value and the valid choices."""
    if metric is None:
        return None
    if metric not in METRICS:
        raise ValueError(f"Unknown metric={metric!r}; valid metrics are {list(METRICS)}.")
    if task is not None and normalize_task_name(task) in GLUE_TASKS:
        spec = GLUE_TASKS[normalize_task_name(task)]
        if metric not in spec.metrics:
            raise ValueError(
                f"metric={metric!r} is not a metric of GLUE task {spec.name}, which reports {list(spec.metrics)}; "
                "GLUE tasks keep their metrics (--metric is for custom files, or picks one of these)."
            )
        return metric
    if num_labels is not None:
        # Binary F1 scores class 1 against the rest, which is meaningless with more than two classes.
        valid = REGRESSION_METRICS if num_labels == 1 else tuple(
            name for name in CLASSIFICATION_METRICS if name != "f1" or num_labels == 2
        )
        if metric not in valid:
            kind = "regression" if num_labels == 1 else f"classification with {num_labels} classes"
            raise ValueError(f"metric={metric!r} does not fit {kind}; valid metrics there are {list(valid)}.")
    return metric


def compute_metrics(
    task_or_metric_kind: str,
    predictions: Any,
    labels: Any,
    *,
    is_regression: bool | None = None,
    metric: str | None = None,
) -> dict[str, float]:
    """Compute GLUE metrics (Wang et al., 2019) for one set of predictions.

    Args:
        task_or_metric_kind: a GLUE task name (``"cola"``, ``"SST-2"``, ``"mnli_mismatched"``,
            ...), ``"classification"``, ``"regression"``, or any other name for a custom task.
        predictions: class ids (classification) or scores (regression), shape ``(n,)``; see
            :func:`logits_to_predictions`.
        labels: gold class ids or scores, shape ``(n,)``.
        is_regression: only needed for a custom task; if omitted there, floating-point
            predictions mean regression and integer ones classification.
        metric: a key of :data:`METRICS` computed first, beside the task's own metrics
            (:func:`check_metric` says which fit).

    Returns:
        ``{metric name: value}`` with plain Python floats (see the module docstring for the
        names). Pearson/Spearman of a constant series are 0.0 (see ``_correlation``); with
        non-finite regression predictions they are NaN.

    Raises:
        ValueError: shapes differ, no examples, or classification predictions that are not
            class ids (e.g. logits passed by mistake).
    """
    preds = _to_numpy(predictions)
    gold = _to_numpy(labels)
    if preds.ndim == 2 and preds.shape[1] == 1:
        preds = preds[:, 0]
    if gold.ndim == 2 and gold.shape[1] == 1:
        gold = gold[:, 0]
    if preds.ndim != 1 or gold.ndim != 1 or len(preds) != len(gold):
        raise ValueError(
            f"predictions and labels must be 1-D with the same length, got shapes "
            f"{preds.shape} and {gold.shape}"
            + ("; for logits use logits_to_predictions() first" if preds.ndim == 2 else "")
        )
    if len(preds) == 0:
        raise ValueError("cannot compute metrics on zero examples")

    names, regression = _resolve(task_or_metric_kind, is_regression, preds)
    if metric is not None:
        check_metric(metric, task_or_metric_kind, 1 if regression else None)
        if (metric in REGRESSION_METRICS) != regression:
            kind = "regression" if regression else "classification"
            raise ValueError(f"metric={metric!r} does not fit {kind} predictions; valid metrics there are "
                             f"{list(REGRESSION_METRICS if regression else CLASSIFICATION_METRICS)}.")
        names = tuple(dict.fromkeys((metric, *names)))
    if regression:
        preds = preds.astype(np.float64)
        gold = gold.astype(np.float64)
        return {name: METRICS[name](gold, preds) for name in names}

    for what, arr in (("predictions", preds), ("labels", gold)):
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.mod(arr, 1) == 0):
            raise ValueError(
                f"classification {what} must be class ids, got non-integer values such as "
                f"{arr[np.mod(arr, 1) != 0][0]!r}; convert logits with logits_to_predictions()"
            )
    preds = preds.astype(np.int64)
    gold = gold.astype(np.int64)
    return {name: METRICS[name](gold, preds) for name in names}


def logits_metrics(
    task: str | None, problem_type: str, logits: Any, labels: Any, metric: str | None = None
) -> dict[str, float]:
    """Metrics of one exit's logits ``(n, C)`` for a model's ``problem_type``: the GLUE metrics of ``task``
    (or of ``"classification"``/``"regression"`` when ``task`` is None), with ``metric`` first when given;
    multi-label models get exact-match accuracy of the thresholded logits (``z > 0``)."""
    logits = _to_numpy(logits)
    if problem_type == MULTI_LABEL:
        if metric not in (None, "accuracy"):
            raise ValueError(f"metric={metric!r}: multi-label models report exact-match 'accuracy' only.")
        return {"accuracy": _accuracy(_to_numpy(labels) > 0.5, logits > 0)}
    is_regression = problem_type == REGRESSION
    predictions = logits_to_predictions(logits, is_regression)
    return compute_metrics(
        task or ("regression" if is_regression else "classification"), predictions, labels, metric=metric
    )
