"""Calibration of exit rules by Learn-then-Test: p-values, fixed-sequence testing, the guarantee in repeated
simulation, the empirical pick, the full-depth fallback, the metric criterion, the data-driven grids."""

import json
import math

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import f1_score

from hf_multiexit import MultiExitConfig
from hf_multiexit.calibration import (
    FULL_DEPTH,
    METRICS,
    binomial_pvalue,
    calibrate,
    calibrate_strategy,
    candidate_values,
    fixed_sequence_accepts,
    hoeffding_bentkus_pvalue,
    learn_then_test,
    min_calibration_samples,
    replay_candidates,
)
from hf_multiexit.evaluation import simulate_exits
from hf_multiexit.models.multiexit_bert import ExitConfig

P_VALUES = {"hoeffding_bentkus": hoeffding_bentkus_pvalue, "binomial": binomial_pvalue}


def nested_losses(risks, n, rng):
    """0/1 losses `(n, K)` with true risks `risks`, nested as early exit's are: a sample lost by a candidate is
    lost by every riskier one (one uniform per sample)."""
    return (rng.random((n, 1)) < np.asarray(risks)[None, :]).astype(float)


def six_layer_config(**overrides):
    return MultiExitConfig(
        num_hidden_layers=6, hidden_size=8, num_attention_heads=2, intermediate_size=8, num_labels=3, **overrides
    )


def synthetic_logits(n, seed=0, num_exits=6, num_classes=3):
    """Per-exit logits `(n, E, C)`: a per-sample class signal plus noise that shrinks with depth, so confident
    samples agree with the final exit early and doubtful ones late."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 1, num_classes)) * 3.0
    noise = rng.normal(size=(n, num_exits, num_classes)) * np.linspace(1.5, 0.0, num_exits)[None, :, None]
    return (signal + noise).astype(np.float32)


def test_hoeffding_bentkus_pvalue_is_the_ltt_formula():
    n, eps = 100, 0.1
    for risk in (0.0, 0.03, 0.07):
        a = min(risk, eps)
        h1 = (a * math.log(a / eps) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - eps))
        expected = min(math.exp(-n * h1), math.e * binom.cdf(math.ceil(n * risk - 1e-9), n, eps))
        assert hoeffding_bentkus_pvalue(risk, n, eps) == pytest.approx(expected, rel=1e-12)
    assert hoeffding_bentkus_pvalue(0.0, n, eps) == pytest.approx((1 - eps) ** n)  # no loss at all
    assert hoeffding_bentkus_pvalue(0.2, n, eps) == 1.0  # above the budget: no evidence
    # 7 of 100 losses: n * R_hat must count 7, not 8, though 0.07 * 100 is 7.000000000000001 in floating point.
    assert hoeffding_bentkus_pvalue(0.07, n, eps) < math.e * binom.cdf(8, n, eps)


@pytest.mark.parametrize("n", [50, 300, 2000])
@pytest.mark.parametrize("eps", [0.01, 0.05, 0.2])
def test_pvalues_are_valid_exactly_for_zero_one_losses(n, eps):
    """For 0/1 losses the number of losses is Binomial(n, R), so a p-value's size is an exact sum; the worst case
    under H0 (R > eps) is R -> eps."""
    counts = np.arange(n + 1)
    for delta in (0.05, 0.1, 0.2):
        hb = hoeffding_bentkus_pvalue(counts / n, n, eps)
        exact = binomial_pvalue(counts / n, n, eps)
        assert np.all(exact <= hb * (1 + 1e-12))  # the binomial tail is below both of HB's bounds (Chernoff)
        for p in (hb, exact):
            for risk in (eps, eps * 1.1):
                assert binom.pmf(counts, n, risk)[p <= delta].sum() <= delta
    # Not vacuous: with enough data both tests can reject, and the exact one is the bolder.
    if n * eps >= 15:
        assert binom.pmf(counts, n, eps)[exact <= 0.1].sum() > binom.pmf(counts, n, eps)[hb <= 0.1].sum() > 0


def test_pvalues_grow_with_the_empirical_risk_and_shrink_with_n():
    risks = np.linspace(0, 0.3, 301)
    for test in P_VALUES.values():
        p = test(risks, 400, 0.1)
        assert np.all(np.diff(p) >= 0) and p[0] < 1e-10 and p[-1] == pytest.approx(1.0)
        by_n = test(0.05, np.array([100, 400, 1600]), 0.1)
        assert np.all(by_n[1:] < by_n[:-1])


@pytest.mark.parametrize("p_value", ["hoeffding_bentkus", "binomial"])
def test_known_risk_curve_picks_the_last_safe_candidate(p_value):
    true_risks = [0.0, 0.002, 0.005, 0.01, 0.03, 0.1]
    losses = nested_losses(true_risks, 20000, np.random.default_rng(0))
    settings = [{"exit_strategy": "entropy", "entropy_threshold": t} for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)]
    result = learn_then_test(losses, max_drop=0.02, delta=0.1, p_value=p_value, settings=settings)
    assert result.chosen_index == 3 and not result.fallback
    assert [c.accepted for c in result.candidates] == [True, True, True, True, False, False]
    p_values = [c.p_value for c in result.candidates]
    assert p_values == sorted(p_values)  # nested losses: the empirical risk, and so p, grows along the sequence
    assert p_values[3] < 1e-6 and p_values[4] == pytest.approx(1.0)
    assert result.setting == settings[3]
    assert result.empirical_risk == pytest.approx(losses[:, 3].mean()) and result.p_value == p_values[3]
    assert (result.n, result.max_drop, result.delta, result.p_value_method) == (20000, 0.02, 0.1, p_value)
    saved = json.loads(json.dumps(result.to_dict()))
    assert saved["chosen_index"] == 3 and saved["candidates"][4]["accepted"] is False


def test_fixed_sequence_stops_at_the_first_failure():
    # The middle candidate is unsafe; the faster ones behind it look perfect but are never reached.
    losses = np.zeros((5000, 5))
    losses[:300, 2] = 1.0
    result = learn_then_test(losses, max_drop=0.02, delta=0.1)
    assert result.chosen_index == 1
    assert [c.accepted for c in result.candidates] == [True, True, False, False, False]
    assert result.candidates[4].p_value < 1e-10
    walks = fixed_sequence_accepts([[True, False, True], [True, True, True]])
    assert walks.tolist() == [[True, False, False], [True, True, True]]


def test_the_guarantee_holds_in_repeated_simulation():
    """2000 calibration sets of 1000 samples: the chosen setting's true risk exceeds epsilon in at most a delta
    share of them (plus 3 Monte-Carlo standard errors), and the empirical pick exceeds it far more often."""
    delta, eps, n, sets = 0.1, 0.05, 1000, 2000
    true_risks = np.array([0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.052, 0.06, 0.08, 0.12])
    rng = np.random.default_rng(1)
    uniforms = rng.random((sets, n))
    risk_hat = (uniforms[:, :, None] < true_risks).mean(axis=1)  # (sets, K): every set's empirical risks at once

    def chosen(passes):
        index = fixed_sequence_accepts(passes).sum(axis=1) - 1
        return np.where(index >= 0, true_risks[np.maximum(index, 0)], 0.0), index  # fallback: full depth, risk 0

    picks = {name: chosen(test(risk_hat, n, eps) <= delta) for name, test in P_VALUES.items()}
    picks["empirical"] = chosen(risk_hat <= eps)
    slack = 3 * math.sqrt(delta * (1 - delta) / sets)
    violations = {name: float((risk > eps).mean()) for name, (risk, _) in picks.items()}
    assert violations["hoeffding_bentkus"] <= delta + slack
    assert violations["binomial"] <= delta + slack
    assert violations["empirical"] >= delta + 0.15
    # Not vacuous: the guaranteed picks are well past full depth most of the time.
    assert np.median(picks["hoeffding_bentkus"][0]) >= 0.03 and np.median(picks["binomial"][0]) >= 0.03
    # The vectorised walk above is the library's procedure: learn_then_test agrees set by set.
    for s in range(40):
        losses = (uniforms[s][:, None] < true_risks).astype(float)
        for name, (_, index) in picks.items():
            delta_used, p_value = (0.0, "hoeffding_bentkus") if name == "empirical" else (delta, name)
            result = learn_then_test(losses, eps, delta_used, p_value=p_value)
            assert (-1 if result.chosen_index is None else result.chosen_index) == index[s]


def test_delta_zero_is_the_fixed_sequence_empirical_pick():
    # Empirical risks 0, 0.01, 0.03, 0.02, 0.05 over 100 samples, budget 0.025.
    losses = np.zeros((100, 5))
    for k, count in enumerate([0, 1, 3, 2, 5]):
        losses[:count, k] = 1.0
    result = learn_then_test(losses, max_drop=0.025, delta=0.0)
    assert [c.empirical_risk for c in result.candidates] == pytest.approx([0, 0.01, 0.03, 0.02, 0.05])
    assert result.chosen_index == 1  # the walk stops at 0.03; candidate 3 (0.02) behind it is not taken
    assert [c.accepted for c in result.candidates] == [True, True, False, False, False]
    assert result.candidates[1].p_value > 0.1  # p-values are reported, but delta=0 does not test them
    # A risk equal to the budget is within it; with 200 samples Learn-then-Test certifies only the zero-loss one.
    losses = np.zeros((200, 4))
    for k, count in enumerate([0, 2, 5, 6]):
        losses[:count, k] = 1.0
    assert learn_then_test(losses, max_drop=0.025, delta=0.0).chosen_index == 2
    assert learn_then_test(losses, max_drop=0.025, delta=0.1).chosen_index == 0
    # The same pick from predictions (agreement criterion): disagreements 0, 1, 3 of 100.
    final = np.zeros(100, dtype=int)
    predictions = np.zeros((100, 3), dtype=int)
    predictions[:1, 1] = 1
    predictions[:3, 2] = 2
    assert calibrate(predictions, final, max_drop=0.02, delta=0.0).chosen_index == 1
    assert calibrate(predictions, final, max_drop=0.03, delta=0.0).chosen_index == 2


def test_no_accepted_candidate_falls_back_to_full_depth_flagged():
    eps, delta = 0.01, 0.1
    need = min_calibration_samples(eps, delta)
    assert need == 230  # (1 - 0.01)^230 = 0.099 <= 0.1 < 0.99^229
    perfect = np.zeros((need, 3))
    assert learn_then_test(perfect, eps, delta).chosen_index == 2
    result = learn_then_test(
        perfect[:-1], eps, delta, settings=["a", "b", "c"], avg_exit_layers=[6, 4, 2], num_layers=6
    )
    assert result.fallback and result.chosen_index is None
    assert result.setting == FULL_DEPTH and result.empirical_risk == 0.0 and result.p_value is None
    assert result.avg_exit_layer == 6 and result.layer_speedup == 1.0
    assert not any(c.accepted for c in result.candidates)
    # An unsafe first candidate stops the walk: full depth, never a faster setting behind it.
    losses = np.zeros((5000, 3))
    losses[:500, 0] = 1.0
    for delta_used in (0.1, 0.0):
        result = learn_then_test(losses, eps, delta_used)
        assert result.fallback and result.setting == FULL_DEPTH
    assert ExitConfig().update(**result.setting).exit_strategy == "none"


@pytest.mark.parametrize("metric", ["macro_f1", "weighted_f1", "matthews_correlation", "pearson", "spearmanr"])
def test_metric_criterion_refuses_non_decomposable_metrics_with_delta(metric):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    final = np.where(rng.random(300) < 0.8, labels, (labels + 1) % 3)
    predictions = np.stack([final, np.where(rng.random(300) < 0.9, final, (final + 1) % 3)], axis=1)
    with pytest.raises(ValueError, match=rf"metric='{metric}'.*--criterion agreement.*--delta 0"):
        calibrate(predictions, final, max_drop=0.01, delta=0.1, criterion="metric", labels=labels, metric=metric)
    result = calibrate(predictions, final, max_drop=0.5, delta=0.0, criterion="metric", labels=labels, metric=metric)
    drops = [METRICS[metric](labels, final) - METRICS[metric](labels, predictions[:, k]) for k in range(2)]
    assert [c.empirical_risk for c in result.candidates] == pytest.approx(drops)
    assert drops[0] == 0 and drops[1] > 0
    assert result.chosen_index == 1 and result.p_value is None and result.p_value_method is None
    if metric == "macro_f1":
        by_sklearn = f1_score(labels, final, average="macro") - f1_score(labels, predictions[:, 1], average="macro")
        assert drops[1] == pytest.approx(by_sklearn)


@pytest.mark.parametrize("p_value", ["hoeffding_bentkus", "binomial"])
def test_metric_criterion_with_accuracy_tests_the_broken_answers(p_value):
    """The loss is 1[early wrong AND final right]: 0/1, an upper bound of the accuracy drop, and powerful enough to
    certify a 0.02 budget with 3000 samples (the rescaled signed drop needed tens of thousands)."""
    rng = np.random.default_rng(0)
    n = 3000
    labels = rng.integers(0, 2, n)
    final = np.where(rng.random(n) < 0.85, labels, 1 - labels)
    # Candidate 1 breaks 15 right answers and fixes 3: loss 0.005, drop 0.004. Candidate 2 is a weaker classifier.
    right, wrong = np.flatnonzero(final == labels), np.flatnonzero(final != labels)
    flipped = final.copy()
    flipped[np.concatenate([right[:15], wrong[:3]])] ^= 1
    early = np.where(rng.random(n) < 0.20, 1 - labels, labels)
    predictions = np.stack([final, flipped, early], axis=1)
    result = calibrate(predictions, final, max_drop=0.02, delta=0.1, criterion="metric", labels=labels, p_value=p_value)
    broken = (predictions != labels[:, None]) & (final == labels)[:, None]
    assert [c.empirical_risk for c in result.candidates] == pytest.approx(broken.mean(axis=0))
    assert result.candidates[1].empirical_risk == pytest.approx(0.005)
    drops = [METRICS["accuracy"](labels, final) - METRICS["accuracy"](labels, predictions[:, k]) for k in range(3)]
    assert [c.metric_drop for c in result.candidates] == pytest.approx(drops)
    assert drops[1] == pytest.approx(0.004) and drops[2] > 0.03
    assert all(c.empirical_risk >= c.metric_drop - 1e-12 for c in result.candidates)  # the bound, sample by sample
    assert [c.p_value for c in result.candidates] == pytest.approx(P_VALUES[p_value](broken.mean(axis=0), n, 0.02))
    assert result.chosen_index == 1 and result.p_value_method == p_value
    assert (result.criterion, result.metric) == ("metric", "accuracy")


def test_metric_criterion_with_accuracy_keeps_the_guarantee_in_simulation():
    """1000 calibration sets: the chosen candidate's true accuracy drop exceeds epsilon in at most a delta share.
    Candidates break right answers at rates 0, 0.01, ..., and fix half as many wrong ones."""
    delta, eps, n, sets = 0.1, 0.03, 1500, 1000
    break_rates = np.array([0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07])
    true_drops = 0.8 * break_rates - 0.2 * break_rates / 2  # P(final right) = 0.8: breaks minus fixes
    rng = np.random.default_rng(5)
    violations, chosen = 0, []
    for _ in range(sets):
        labels = np.zeros(n, dtype=int)
        final = np.where(rng.random(n) < 0.8, 0, 1)
        u = rng.random(n)[:, None]
        early = np.where(final[:, None] == 0, np.where(u < break_rates, 1, 0), np.where(u < break_rates / 2, 0, 1))
        result = calibrate(early, final, max_drop=eps, delta=delta, criterion="metric", labels=labels)
        violations += (0.0 if result.fallback else true_drops[result.chosen_index]) > eps
        chosen.append(-1 if result.fallback else result.chosen_index)
    assert violations / sets <= delta + 3 * math.sqrt(delta * (1 - delta) / sets)
    assert np.median(chosen) >= 2  # not vacuous: usually well past full depth


def test_bad_inputs_are_refused_with_the_reason():
    losses = np.zeros((10, 2))
    with pytest.raises(ValueError, match="delta"):
        learn_then_test(losses, 0.1, 1.0)
    with pytest.raises(ValueError, match="no finite"):
        learn_then_test(losses, 0.0, 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        learn_then_test(losses + 2, 0.1, 0.1)
    with pytest.raises(ValueError, match="binomial"):
        learn_then_test(losses + 0.5, 0.1, 0.1, p_value="binomial")
    with pytest.raises(ValueError, match="regression"):
        calibrate(np.zeros((10, 2)), np.zeros(10), max_drop=0.1)
    with pytest.raises(ValueError, match="labels"):
        calibrate(np.zeros((10, 2), dtype=int), np.zeros(10, dtype=int), max_drop=0.1, criterion="metric")


def test_quantile_grid_has_bounded_speedup_steps():
    config, max_step = six_layer_config(), 0.25
    logits = synthetic_logits(2000)
    for strategy in ("entropy", "confidence"):
        values = candidate_values(logits, config, strategy, max_step)
        speedups = 6 / replay_candidates(logits, config, strategy, values).exit_layers.mean(axis=0)
        steps = np.diff(speedups)
        assert speedups[0] == 1.0 and speedups[-1] == 6.0  # from full depth to everyone at the first exit
        assert np.all(steps > 0) and steps.max() <= max_step + 1e-9
        assert np.all(speedups[2:] - speedups[:-2] > max_step)  # greedy: no candidate could be dropped
        assert len(values) == len(set(values))
    values = candidate_values(logits, config, "entropy", max_step, ExitConfig(min_exit_layer=3))
    layers = replay_candidates(logits, config, "entropy", values, ExitConfig(min_exit_layer=3)).exit_layers
    assert layers.min() == 3 and 6 / layers[:, -1].mean() == 2.0
    assert candidate_values(logits, config, "patience") == [5, 4, 3, 2, 1, 0]
    assert candidate_values(logits, config, "static") == [6, 5, 4, 3, 2, 1]


def test_quantile_grid_steps_past_the_bound_only_at_ties():
    config, max_step = six_layer_config(), 0.1
    logits = synthetic_logits(2000, seed=4)
    logits[:600] = logits[0]  # 30% of the samples share every score: no threshold can split them
    values = candidate_values(logits, config, "entropy", max_step)
    layers = replay_candidates(logits, config, "entropy", values).exit_layers
    steps = np.diff(6 / layers.mean(axis=0))
    large = np.flatnonzero(steps > max_step + 1e-9)
    assert len(large) > 0
    for j in large:
        moved = layers[:, j + 1] != layers[:, j]
        assert np.unique(logits[moved], axis=0).shape[0] == 1


def test_calibrate_strategy_end_to_end_on_cached_logits():
    config = six_layer_config()
    logits = synthetic_logits(3000, seed=2)
    result = calibrate_strategy(logits, config, "entropy", max_drop=0.02, delta=0.1)
    assert not result.fallback and result.layer_speedup > 1.5 and result.p_value <= 0.1
    assert not result.candidates[result.chosen_index + 1].accepted
    replay = simulate_exits(logits, config, ExitConfig().update(**result.setting))
    final = logits[:, -1].argmax(-1)
    assert result.empirical_risk == pytest.approx((replay.logits.argmax(-1) != final).mean())
    assert result.avg_exit_layer == pytest.approx(replay.exit_layers.mean())
    assert result.num_layers == 6 and result.layer_speedup == pytest.approx(6 / result.avg_exit_layer)
    # A grid from other data, and user values, which are put safest first.
    other = synthetic_logits(500, seed=3)
    from_other = calibrate_strategy(logits, config, "confidence", max_drop=0.02, delta=0.1, grid_logits=other)
    grid = candidate_values(other, config, "confidence")
    assert [c.setting["confidence_threshold"] for c in from_other.candidates] == grid
    given = calibrate_strategy(logits, config, "confidence", max_drop=0.02, delta=0.1, values=[0.5, 0.99, 0.9])
    assert [c.setting["confidence_threshold"] for c in given.candidates] == [0.99, 0.9, 0.5]
    patience = calibrate_strategy(logits, config, "patience", max_drop=0.02, delta=0.1)
    assert [c.setting["patience"] for c in patience.candidates] == [5, 4, 3, 2, 1, 0]
    assert patience.candidates[0].avg_exit_layer == 6 and patience.candidates[0].empirical_risk == 0
