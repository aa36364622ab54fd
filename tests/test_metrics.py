"""Tests for hf_multiexit.metrics against hand-computed values."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from hf_multiexit.metrics import (
    compute_metrics,
    logits_to_predictions,
    metric_names,
    primary_metric,
)

# preds vs labels: tp=2 (rows 0, 3), tn=1 (row 1), fp=1 (row 2), fn=0.
PREDS = [1, 0, 1, 1]
LABELS = [1, 0, 0, 1]


def test_accuracy():
    for task in ("sst2", "rte", "wnli", "qnli", "mnli", "mnli_mismatched"):
        assert compute_metrics(task, PREDS, LABELS) == {"accuracy": 0.75}


def test_accuracy_and_f1():
    # precision 2/3, recall 2/2 -> F1 = 2 * (2/3 * 1) / (2/3 + 1) = 0.8
    for task in ("mrpc", "qqp"):
        result = compute_metrics(task, PREDS, LABELS)
        assert set(result) == {"accuracy", "f1"}
        assert result["accuracy"] == 0.75
        assert result["f1"] == pytest.approx(0.8)


def test_matthews_correlation():
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 0) / sqrt(3*2*2*1)
    result = compute_metrics("cola", PREDS, LABELS)
    assert set(result) == {"matthews_correlation"}
    assert result["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))


def test_pearson_and_spearman():
    # x = 1,2,3 (mean 2), y = 1,2,4 (mean 7/3): cov sum = 3, sum dx^2 = 2, sum dy^2 = 42/9,
    # r = 3 / sqrt(2 * 42/9) = 9 / sqrt(84); the ranks agree exactly, so rho = 1.
    result = compute_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert set(result) == {"pearson", "spearmanr"}
    assert result["pearson"] == pytest.approx(9 / math.sqrt(84))
    assert result["spearmanr"] == pytest.approx(1.0)
    # One swapped pair among 4: rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 12/60 = 0.8
    result = compute_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert result["spearmanr"] == pytest.approx(0.8)
    assert result["pearson"] == pytest.approx(0.8)  # equally spaced values: same as rho


def test_values_are_python_floats():
    for task, preds, labels in (("cola", PREDS, LABELS), ("mrpc", PREDS, LABELS),
                                ("stsb", [0.1, 0.7, 0.2], [0.0, 1.0, 0.5])):
        for value in compute_metrics(task, np.array(preds), np.array(labels)).values():
            assert type(value) is float


def test_constant_predictions_give_zero_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning must not fire either
        assert compute_metrics("stsb", [2.5, 2.5, 2.5], [1.0, 2.0, 4.0]) == {
            "pearson": 0.0, "spearmanr": 0.0}
        assert compute_metrics("stsb", [1.0, 2.0], [3.0, 3.0]) == {
            "pearson": 0.0, "spearmanr": 0.0}
        assert compute_metrics("cola", [1, 1, 1, 1], LABELS) == {"matthews_correlation": 0.0}
        result = compute_metrics("mrpc", [0, 0, 0, 0], LABELS)
    assert result == {"accuracy": 0.5, "f1": 0.0}


def test_non_finite_regression_predictions_are_nan():
    result = compute_metrics("stsb", [1.0, float("nan"), 2.0], [1.0, 2.0, 3.0])
    assert math.isnan(result["pearson"]) and math.isnan(result["spearmanr"])


def test_custom_tasks():
    assert compute_metrics("my_task", PREDS, LABELS) == {"accuracy": 0.75}
    assert compute_metrics("classification", PREDS, LABELS) == {"accuracy": 0.75}
    regression = compute_metrics("my_task", np.array([1.0, 2.0, 3.0]), [1.0, 2.0, 4.0])
    assert regression["pearson"] == pytest.approx(9 / math.sqrt(84))
    forced = compute_metrics("my_task", [1, 2, 3], [1, 2, 4], is_regression=True)
    assert forced == regression
    assert compute_metrics("regression", [1, 2, 3], [1, 2, 4]) == regression


def test_primary_metric_and_names():
    assert primary_metric("cola") == "matthews_correlation"
    assert primary_metric("stsb") == "pearson"
    assert primary_metric("mrpc") == "f1"
    assert primary_metric("QQP") == "f1"
    for task in ("sst2", "mnli", "qnli", "rte", "wnli", "custom"):
        assert primary_metric(task) == "accuracy"
    assert primary_metric("custom", is_regression=True) == "pearson"
    assert primary_metric("regression") == "pearson"
    assert metric_names("mrpc") == ("accuracy", "f1")
    assert metric_names("custom", is_regression=True) == ("pearson", "spearmanr")


def test_logits_to_predictions():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    preds = logits_to_predictions(logits, is_regression=False)
    assert preds.tolist() == [1, 0, 1] and preds.dtype == np.int64
    assert logits_to_predictions(torch.tensor(logits), False).tolist() == [1, 0, 1]
    scores = logits_to_predictions(torch.tensor([[0.5], [1.5]], dtype=torch.bfloat16), True)
    assert scores.shape == (2,) and scores.tolist() == [0.5, 1.5]
    assert logits_to_predictions([0.5, 1.5], True).tolist() == [0.5, 1.5]
    with pytest.raises(ValueError, match=r"shape \(n, num_labels\)"):
        logits_to_predictions([1.0, 2.0], is_regression=False)
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(n, 1\)"):
        logits_to_predictions(logits, is_regression=True)


def test_errors():
    with pytest.raises(ValueError, match="same length"):
        compute_metrics("sst2", [1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics("sst2", [], [])
    with pytest.raises(ValueError, match="logits_to_predictions"):
        compute_metrics("sst2", [[0.1, 0.9], [0.8, 0.2]], [1, 0])
    with pytest.raises(ValueError, match=r"class ids.*0\.3"):
        compute_metrics("sst2", [0.3, 1.0], [1, 0])
    with pytest.raises(ValueError, match="regression task, but is_regression=False"):
        compute_metrics("stsb", [1.0, 2.0], [1.0, 2.0], is_regression=False)


def test_chosen_metric_for_custom_tasks_is_sklearns_and_comes_first():
    from sklearn.metrics import f1_score, matthews_corrcoef

    preds, labels = np.array([0, 1, 2, 2, 1, 0, 2]), np.array([0, 1, 1, 2, 2, 0, 0])
    for metric, average in (("macro_f1", "macro"), ("micro_f1", "micro"), ("weighted_f1", "weighted")):
        result = compute_metrics("tweets", preds, labels, metric=metric)
        assert list(result) == [metric, "accuracy"]
        assert result[metric] == pytest.approx(f1_score(labels, preds, average=average))
        assert result["accuracy"] == pytest.approx(4 / 7)
    mcc = compute_metrics("tweets", preds, labels, metric="matthews_correlation")["matthews_correlation"]
    assert mcc == pytest.approx(matthews_corrcoef(labels, preds))
    assert compute_metrics("tweets", PREDS, LABELS, metric="f1")["f1"] == pytest.approx(0.8)
    scores = compute_metrics("ratings", np.array([1.0, 2.0, 3.0, 4.0]), [1.0, 3.0, 2.0, 4.0], metric="spearmanr")
    assert list(scores) == ["spearmanr", "pearson"] and scores["spearmanr"] == pytest.approx(0.8)
    # A GLUE task keeps its metrics; the choice only orders them (and names the primary one).
    assert list(compute_metrics("mrpc", PREDS, LABELS, metric="accuracy")) == ["accuracy", "f1"]
    assert primary_metric("mrpc", metric="accuracy") == "accuracy" and primary_metric("tweets", metric="macro_f1") == "macro_f1"
    assert metric_names("tweets", metric="macro_f1") == ("macro_f1", "accuracy")


def test_check_metric_names_the_bad_value_and_the_choices():
    from hf_multiexit.metrics import METRICS, check_metric

    assert check_metric(None) is None and check_metric("macro_f1", None, 4) == "macro_f1"
    with pytest.raises(ValueError, match=rf"Unknown metric='auc'; valid metrics are {re.escape(str(list(METRICS)))}"):
        check_metric("auc")
    with pytest.raises(ValueError, match=r"metric='f1' does not fit classification with 4 classes; valid .*'macro_f1'"):
        check_metric("f1", None, 4)
    with pytest.raises(ValueError, match=r"metric='pearson' does not fit classification with 2 classes"):
        check_metric("pearson", None, 2)
    with pytest.raises(ValueError, match=r"metric='accuracy' does not fit regression; valid metrics there are \['pearson', 'spearmanr'\]"):
        check_metric("accuracy", None, 1)
    with pytest.raises(ValueError, match=r"metric='macro_f1' is not a metric of GLUE task sst2, which reports \['accuracy'\]"):
        check_metric("macro_f1", "SST-2")
    with pytest.raises(ValueError, match="does not fit classification predictions"):
        compute_metrics("tweets", PREDS, LABELS, metric="pearson")
