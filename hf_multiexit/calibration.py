"""Choosing an exit rule on a calibration split, with a distribution-free guarantee: Learn-then-Test.

Setting. Candidate settings `lambda_1, ..., lambda_K` of one exit strategy, ordered from the safest (slowest) to
the fastest; per-sample losses `L_i(lambda_k)` on `n` calibration samples; the risk `R(lambda) = E[L(lambda)]` on
new data; a budget `epsilon` (`max_drop`) and an error level `delta`.

Procedure (Learn-then-Test: Angelopoulos, Bates, Candes, Jordan, Lei, "Learn then Test: Calibrating Predictive
Algorithms to Achieve Risk Control", 2021; with fixed-sequence testing over exit thresholds as CALM does: Schuster
et al., "Confident Adaptive Language Modeling", NeurIPS 2022):

1. for every candidate a p-value `p_k` of `H0_k: R(lambda_k) > epsilon` from the empirical risk
   `R_hat_k = (1/n) sum_i L_i(lambda_k)` (`hoeffding_bentkus_pvalue` by default, `binomial_pvalue` for 0/1 losses);
2. fixed-sequence testing: accept `lambda_1, lambda_2, ...` while `p_k <= delta`, stop at the first `p_k > delta`;
3. the chosen setting is the last (fastest) accepted candidate.

Guarantee: `P(R(lambda_hat) <= epsilon) >= 1 - delta` over the draw of the calibration set, provided that
(a) calibration samples and the data the rule is used on are i.i.d. draws from one distribution, (b) the losses lie
in [0, 1], and (c) the candidates and their order are fixed independently of the calibration samples. A false
acceptance requires accepting the first truly unsafe candidate of the sequence, which a valid p-value allows with
probability at most `delta`; so the error is controlled whatever the number of candidates (a finer grid costs
nothing) and whether or not the risk is monotone in the setting (monotonicity only makes the test powerful).

Criteria (risk relative to the model's own final exit, so full depth has risk exactly 0):

- `"agreement"`: `L_i = 1[y_hat_i(lambda) != y_hat_i(final)]`, the disagreement rate with full depth. Needs no labels.
- `"metric"` with accuracy (`PER_SAMPLE_METRICS`): `L_i = 1[y_hat_i(lambda) wrong AND y_hat_i(final) right]`, the
  share of answers early exit breaks. Its mean bounds the accuracy drop from above, since
  `drop = P(early wrong, final right) - P(early right, final wrong) <= P(early wrong, final right) = R`, so
  `R <= epsilon` with probability `1 - delta` gives `drop <= epsilon` with the same probability, and the loss is
  0/1 (the exact `binomial_pvalue` applies). Answers early exit fixes are not credited: the bound gives up the
  second term to keep a loss that is 0 for every unchanged sample (a signed per-sample drop rescaled to [0, 1]
  would put 1/2 on each of them, which the bounds treat as variance: about 37,000 samples to certify anything
  at `max_drop=0.01`). Each candidate also reports its `metric_drop`, the plain accuracy drop.
- `"metric"` with a non-decomposable metric (F1 variants, Matthews correlation, Pearson, Spearman): no per-sample
  loss and no p-value exist, so only `delta=0` is allowed, with `R_hat_k = m(final) - m(lambda_k)`.

`delta=0` is the plain empirical pick: the same fixed-sequence walk with `R_hat_k <= epsilon` in place of the test.
It is the walk rather than the fastest candidate with `R_hat_k <= epsilon` over the whole grid because the grid is
ordered by speed, so a slower candidate that already misses the budget says the faster ones are unsafe; a global
pick would jump past it to whichever faster candidate's noise happens to be most favourable, a winner's curse that
grows with the grid. With a monotone empirical risk curve the two coincide.

When no candidate is accepted, the result falls back to full depth (`FULL_DEPTH`, flagged by `fallback=True`),
never to the safest candidate: full depth is the one setting whose risk is known (zero) without data, while the
safest candidate of a user's grid may itself exit early.

Default grids (`candidate_values`): entropy and confidence thresholds placed on this data's exit statistics so that
consecutive candidates differ in layer speed-up by at most `max_step` (see `quantile_thresholds`), patience
`E-1, ..., 0`, static exit layers from the last down. A grid computed on the calibration samples themselves depends
on their scores (not their labels), which condition (c) excludes; pass `grid_logits` from other data (e.g. part
of the training set) or explicit values for the guarantee to hold exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import xlogy
from scipy.stats import binom

from .evaluation.replay import simulate_exits, sweep_parameter
from .metrics import METRICS
from .models.multiexit_bert import EXIT_STRATEGIES, ExitConfig
from .models.multiexit_bert.exit_strategies import MULTI_LABEL, REGRESSION, entropy, resolve_problem_type

__all__ = [
    "CRITERIA",
    "FULL_DEPTH",
    "METRICS",
    "P_VALUES",
    "PER_SAMPLE_METRICS",
    "STRATEGIES",
    "CalibrationResult",
    "CandidateExits",
    "CandidateResult",
    "binomial_pvalue",
    "calibrate",
    "calibrate_strategy",
    "candidate_values",
    "exit_scores",
    "fixed_sequence_accepts",
    "hoeffding_bentkus_pvalue",
    "learn_then_test",
    "min_calibration_samples",
    "quantile_thresholds",
    "replay_candidates",
]

CRITERIA = ("agreement", "metric")
P_VALUES = ("hoeffding_bentkus", "binomial")
FULL_DEPTH: dict[str, Any] = {"exit_strategy": "none"}
"""The fallback setting: every sample runs every layer (risk 0 under both criteria)."""


PER_SAMPLE_METRICS = ("accuracy",)
"""Metrics that are the mean of a per-sample score, so that their drop has a per-sample loss LTT can test."""

# Which way each strategy's swept parameter is safer: sort candidates with `reverse=` this to get safest first.
_SAFEST_FIRST_REVERSE = {"entropy": False, "confidence": True, "patience": True, "static": True}
STRATEGIES = tuple(_SAFEST_FIRST_REVERSE)
"""The strategies that can be calibrated: those with one swept parameter that `simulate_exits` can replay."""
# Thresholds that never let a sample leave early: no entropy is below 0, no top probability above 1.
_SAFEST_THRESHOLD = {"entropy": 0.0, "confidence": 1.0}


def _mismatch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`(n,)`: where two prediction arrays differ; multi-label rows (trailing dimensions) differ in any label."""
    differ = np.asarray(a) != np.asarray(b)
    return differ.reshape(differ.shape[0], -1).any(axis=1) if differ.ndim > 1 else differ


def _check_budget(epsilon: float) -> None:
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon={epsilon!r} is out of range: a risk budget for losses in [0, 1] must lie in (0, 1).")


def _successes(risk: np.ndarray, n: int) -> np.ndarray:
    # n * R_hat is a whole number for 0/1 losses but may come back as k + 1e-13 from the division in the mean;
    # rounding first keeps ceil() from counting one loss too many.
    return np.ceil(np.round(n * np.asarray(risk, dtype=float), 9))


def hoeffding_bentkus_pvalue(risk: np.ndarray | float, n: int, epsilon: float) -> np.ndarray:
    """The Hoeffding-Bentkus p-value of `H0: R > epsilon` from the mean `risk` of `n` losses in [0, 1] (LTT,
    Angelopoulos et al. 2021, after the HB bound of Bates et al., "Distribution-Free, Risk-Controlling Prediction
    Sets", 2021):

        p = min( exp(-n h1(min(R_hat, epsilon), epsilon)),  e * P(Binom(n, epsilon) <= ceil(n R_hat)) ),
        h1(a, b) = a ln(a / b) + (1 - a) ln((1 - a) / (1 - b)).

    Valid (`P(p <= u) <= u` under H0) for i.i.d. losses bounded in [0, 1], whatever their distribution: the first
    term is Hoeffding's bound in its KL form, the second Bentkus' inequality. Vectorised over `risk`; at most 1."""
    _check_budget(epsilon)
    risk = np.asarray(risk, dtype=float)
    a = np.minimum(risk, epsilon)
    h1 = xlogy(a, a / epsilon) + xlogy(1.0 - a, (1.0 - a) / (1.0 - epsilon))
    return np.minimum(np.exp(-n * h1), math.e * binom.cdf(_successes(risk, n), n, epsilon))


def binomial_pvalue(risk: np.ndarray | float, n: int, epsilon: float) -> np.ndarray:
    """The exact binomial p-value of `H0: R > epsilon` for 0/1 losses: `p = P(Binom(n, epsilon) <= n R_hat)`.

    Valid only for losses in {0, 1}: then `n R_hat ~ Binom(n, R)`, which under H0 is stochastically larger than
    `Binom(n, epsilon)`. Tighter than Hoeffding-Bentkus there (no factor e, no Hoeffding term). Vectorised."""
    _check_budget(epsilon)
    return binom.cdf(_successes(risk, n), n, epsilon)


_P_VALUE_FUNCTIONS = {"hoeffding_bentkus": hoeffding_bentkus_pvalue, "binomial": binomial_pvalue}


def fixed_sequence_accepts(passes: np.ndarray | Sequence[bool]) -> np.ndarray:
    """Fixed-sequence testing: candidate `k` is accepted iff candidates `1..k` all pass (`p_j <= delta`), i.e. the
    walk stops at the first failure. Works along the last axis, so many calibration sets can be decided at once."""
    return np.logical_and.accumulate(np.asarray(passes, dtype=bool), axis=-1)


def min_calibration_samples(max_drop: float, delta: float) -> int:
    """The fewest calibration samples with which Hoeffding-Bentkus can accept anything with a 0/1 loss (`"agreement"`,
    or `"metric"` with accuracy): even a candidate without a single loss has `p = (1 - epsilon)^n`, so `n >= ln(delta) / ln(1 - epsilon)` is needed
    (230 for epsilon 0.01, delta 0.1). Below it every calibration falls back to full depth."""
    _check_budget(max_drop)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta={delta!r} is out of range: it must lie in (0, 1).")
    return math.ceil(math.log(delta) / math.log1p(-max_drop) - 1e-9)


@dataclass
class CandidateResult:
    """One candidate: its `setting`, `empirical_risk` on the calibration split (disagreement rate, or metric drop
    in the metric's units), `p_value` of `R > max_drop` (None where no per-sample loss exists), whether the
    fixed-sequence walk `accepted` it, its average exit layer on the calibration split (None if not given), and for
    the metric criterion with accuracy the plain accuracy drop `metric_drop` (the risk there is its upper bound)."""

    setting: Any
    empirical_risk: float
    p_value: float | None
    accepted: bool
    avg_exit_layer: float | None = None
    metric_drop: float | None = None


@dataclass
class CalibrationResult:
    """What was calibrated and what was chosen; `to_dict()` is JSON-ready, for `exit_config.json` and reports.

    `chosen_index` is the accepted candidate with the largest index, or None when none was accepted; then
    `fallback` is True and `setting` is `FULL_DEPTH`, with `empirical_risk` 0.0 (full depth is the reference of both
    criteria), `p_value` None and `avg_exit_layer` `num_layers`. `p_value_method` is None for non-decomposable
    metrics; with `delta=0` the p-values are computed where possible but only reported, the walk uses the risks."""

    criterion: str
    metric: str | None
    max_drop: float
    delta: float
    n: int
    p_value_method: str | None
    chosen_index: int | None
    fallback: bool
    setting: Any
    empirical_risk: float
    p_value: float | None
    avg_exit_layer: float | None
    layer_speedup: float | None
    num_layers: int | None
    candidates: list[CandidateResult]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _decide(
    *, criterion: str, metric: str | None, max_drop: float, delta: float, n: int, risks: np.ndarray,
    p_values: np.ndarray | None, p_value_method: str | None, settings: Sequence[Any] | None,
    avg_exit_layers: Sequence[float] | None, num_layers: int | None,
) -> CalibrationResult:
    count = len(risks)
    settings = list(range(count)) if settings is None else list(settings)
    if len(settings) != count or (avg_exit_layers is not None and len(avg_exit_layers) != count):
        raise ValueError(
            f"{count} candidates but {len(settings)} settings"
            + ("" if avg_exit_layers is None else f" and {len(avg_exit_layers)} average exit layers") + "."
        )
    accepted = fixed_sequence_accepts(p_values <= delta if delta > 0 else risks <= max_drop)
    chosen = int(accepted.sum()) - 1 if accepted.any() else None
    candidates = [
        CandidateResult(
            setting=settings[k],
            empirical_risk=float(risks[k]),
            p_value=None if p_values is None else float(p_values[k]),
            accepted=bool(accepted[k]),
            avg_exit_layer=None if avg_exit_layers is None else float(avg_exit_layers[k]),
        )
        for k in range(count)
    ]
    if chosen is None:
        setting, risk, p_value, avg = dict(FULL_DEPTH), 0.0, None, (None if num_layers is None else float(num_layers))
    else:
        best = candidates[chosen]
        setting, risk, p_value, avg = best.setting, best.empirical_risk, best.p_value, best.avg_exit_layer
    return CalibrationResult(
        criterion=criterion, metric=metric, max_drop=float(max_drop), delta=float(delta), n=int(n),
        p_value_method=p_value_method, chosen_index=chosen, fallback=chosen is None, setting=setting,
        empirical_risk=risk, p_value=p_value, avg_exit_layer=avg,
        layer_speedup=None if avg is None or num_layers is None else num_layers / avg,
        num_layers=num_layers, candidates=candidates,
    )


def _check_levels(max_drop: float, delta: float) -> None:
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta={delta!r} is out of range: it must lie in [0, 1) (0: empirical pick, no guarantee).")
    if delta > 0:
        if not 0.0 < max_drop < 1.0:
            raise ValueError(
                f"max_drop={max_drop!r} is out of range with delta={delta}: it must lie in (0, 1) (no finite "
                "calibration set can certify a zero risk)."
            )
    elif max_drop < 0:
        raise ValueError(f"max_drop={max_drop!r} is out of range: it must be >= 0.")


def _check_p_value(p_value: str) -> Callable:
    try:
        return _P_VALUE_FUNCTIONS[p_value]
    except KeyError:
        raise ValueError(f"Unknown p_value={p_value!r}; valid choices are {list(P_VALUES)}.") from None


def _p_values(test: Callable, risks: np.ndarray, n: int, epsilon: float) -> np.ndarray | None:
    # With delta=0 the budget may lie outside (0, 1), where no test exists; the p-values are only reported then.
    return test(risks, n, epsilon) if 0.0 < epsilon < 1.0 else None


def learn_then_test(
    losses: np.ndarray, max_drop: float, delta: float = 0.1, *, p_value: str = "hoeffding_bentkus",
    settings: Sequence[Any] | None = None, avg_exit_layers: Sequence[float] | None = None,
    num_layers: int | None = None,
) -> CalibrationResult:
    """Learn-then-Test with fixed-sequence testing (module docstring) on given per-sample losses `(n, K)` in [0, 1],
    candidates safest first: accept while `p_k <= delta` (`delta=0`: while `R_hat_k <= max_drop`), choose the last
    accepted, else fall back to full depth. `settings` label the candidates (default 0..K-1); the result's
    criterion is `"loss"`."""
    _check_levels(max_drop, delta)
    test = _check_p_value(p_value)
    losses = np.asarray(losses, dtype=float)
    if losses.ndim != 2 or not losses.size:
        raise ValueError(f"losses must have shape (n, K) with n, K >= 1, got {losses.shape}.")
    if losses.min() < 0 or losses.max() > 1:
        raise ValueError(f"losses must lie in [0, 1]; got values in [{losses.min()}, {losses.max()}].")
    if p_value == "binomial" and not np.isin(losses, (0.0, 1.0)).all():
        raise ValueError("p_value='binomial' is valid only for losses in {0, 1}; use p_value='hoeffding_bentkus'.")
    n = losses.shape[0]
    risks = losses.mean(axis=0)
    p_values = _p_values(test, risks, n, max_drop)
    return _decide(
        criterion="loss", metric=None, max_drop=max_drop, delta=delta, n=n, risks=risks, p_values=p_values,
        p_value_method=None if p_values is None else p_value, settings=settings, avg_exit_layers=avg_exit_layers,
        num_layers=num_layers,
    )


def calibrate(
    predictions: np.ndarray, final_predictions: np.ndarray, *, max_drop: float, delta: float = 0.1,
    criterion: str = "agreement", labels: np.ndarray | None = None, metric: str = "accuracy",
    settings: Sequence[Any] | None = None, avg_exit_layers: Sequence[float] | None = None,
    num_layers: int | None = None, p_value: str = "hoeffding_bentkus",
) -> CalibrationResult:
    """Calibrates one exit strategy from its candidates' predictions on the calibration split.

    `predictions` `(n, K)` (or `(n, K, C)` multi-label) are each candidate's predictions, candidates ordered safest
    first; `final_predictions` `(n,)` (`(n, C)`) the final exit's. `criterion="agreement"`: the risk is the
    disagreement rate with the final exit; `"metric"`: the drop of `metric` (a key of `METRICS`) against `labels`,
    tested through the 0/1 loss `1[early wrong AND final right]` that bounds it for accuracy, and only empirically
    (`delta=0`) for the other metrics (module docstring). Raises `ValueError`
    for a non-decomposable metric with `delta > 0`, naming the metric and the two ways out."""
    if criterion not in CRITERIA:
        raise ValueError(f"Unknown criterion={criterion!r}; valid criteria are {list(CRITERIA)}.")
    _check_levels(max_drop, delta)
    _check_p_value(p_value)
    predictions, final = np.asarray(predictions), np.asarray(final_predictions)
    if predictions.ndim < 2 or predictions.shape[0] != final.shape[0] or predictions.shape[2:] != final.shape[1:]:
        raise ValueError(
            f"predictions must have shape (n, K) or (n, K, C) matching final_predictions (n,) or (n, C); got "
            f"{predictions.shape} and {final.shape}."
        )
    count = predictions.shape[1]
    common = {"settings": settings, "avg_exit_layers": avg_exit_layers, "num_layers": num_layers}

    if criterion == "agreement":
        if np.issubdtype(final.dtype, np.floating):
            raise ValueError(
                "criterion='agreement' compares predicted classes, and regression outputs never agree exactly; "
                "use criterion='metric' with metric='pearson' or 'spearmanr' and delta=0."
            )
        losses = np.stack([_mismatch(predictions[:, k], final) for k in range(count)], axis=1)
        result = learn_then_test(losses, max_drop, delta, p_value=p_value, **common)
        return dataclasses.replace(result, criterion=criterion)

    if metric not in METRICS:
        raise ValueError(f"Unknown metric={metric!r}; valid metrics are {list(METRICS)}.")
    if labels is None:
        raise ValueError("criterion='metric' needs the calibration labels (labels=...).")
    labels = np.asarray(labels)
    if metric in PER_SAMPLE_METRICS:
        final_right = ~_mismatch(final, labels)
        wrong = np.stack([_mismatch(predictions[:, k], labels) for k in range(count)], axis=1)
        result = learn_then_test(wrong & final_right[:, None], max_drop, delta, p_value=p_value, **common)
        drops = wrong.mean(axis=0) - (1.0 - final_right.mean())
        candidates = [dataclasses.replace(c, metric_drop=float(d)) for c, d in zip(result.candidates, drops)]
        return dataclasses.replace(result, criterion=criterion, metric=metric, candidates=candidates)
    if delta > 0:
        raise ValueError(
            f"metric={metric!r} is not a mean of per-sample scores, so its drop has no per-sample loss and "
            f"Learn-then-Test cannot guarantee it at delta={delta}. Use --criterion agreement (disagreement "
            f"with the final exit, with the guarantee) or --delta 0 (the empirical {metric} drop on the "
            "calibration split, without one)."
        )
    full = METRICS[metric](labels, final)
    risks = np.array([full - METRICS[metric](labels, predictions[:, k]) for k in range(count)])
    return _decide(
        criterion=criterion, metric=metric, max_drop=max_drop, delta=delta, n=len(labels), risks=risks,
        p_values=None, p_value_method=None, **common,
    )


def exit_scores(all_logits: np.ndarray, strategy: str) -> np.ndarray:
    """`(n, E)` float32 per-exit scores exactly as the strategy computes them: entropies `H(softmax(z))` for
    `entropy`, top probabilities `max softmax(z)` for `confidence`."""
    logits = torch.as_tensor(np.asarray(all_logits))
    if strategy == "entropy":
        return entropy(logits).numpy()
    if strategy == "confidence":
        return torch.softmax(logits.float(), dim=-1).amax(dim=-1).numpy()
    raise ValueError(f"exit_scores: strategy={strategy!r} has no per-exit score; valid: ['entropy', 'confidence'].")


def _short_between(low: np.float32, high: np.float32) -> float:
    """The decimal with the fewest significant digits strictly between two float32 values, compared in float32
    as the strategies compare (9 digits always separate two float32 values with another one between them)."""
    middle = (float(low) + float(high)) / 2
    for digits in range(1, 10):
        value = float(f"{middle:.{digits}g}")
        if low < np.float32(value) < high:
            return value
    return float(np.nextafter(low, np.float32(np.inf)))  # adjacent floats: `high` itself, which `< t` excludes


def quantile_thresholds(
    scores: np.ndarray, exit_layers: Sequence[int], strategy: str, max_step: float = 0.1, min_exit_layer: int = 1,
) -> list[float]:
    """Thresholds for `entropy` (leave when `score < S`) or `confidence` (leave when `score > c`), safest first,
    placed on the data so that consecutive candidates differ in layer speed-up `s = L / mean exit layer` by at
    most `max_step`.

    Rule: for threshold `t`, sample `i` leaves at the first checked exit `k` (exits `>= min_exit_layer`, the final
    one aside) whose score passes, so its exit layer only changes when `t` crosses one of its running minima
    (maxima for confidence) `m_ik`; the mean exit layer `A(t)` is a step function with these breakpoints, computed
    exactly at all of them. Starting from the safest threshold (`s = 1`: entropy 0, confidence 1), each next
    candidate is the breakpoint with the largest `s <= s_prev + max_step`, i.e. a quantile of the per-sample exit
    layer distribution; where one breakpoint alone moves `s` by more (many samples tied at one score), it is taken
    anyway, so a step exceeds `max_step` only where no threshold could split it. The last candidate lets every
    sample leave at its first checked exit. Each threshold is the shortest decimal strictly between its breakpoint
    and the next one (`_short_between`): readable in `exit_config.json`, and away from every score, so float
    rounding of the scores in a real run cannot move a sample across it."""
    if strategy not in _SAFEST_THRESHOLD:
        raise ValueError(f"quantile_thresholds: strategy={strategy!r}; valid: {list(_SAFEST_THRESHOLD)}.")
    if not max_step > 0:
        raise ValueError(f"max_step={max_step!r} is out of range: it must be > 0.")
    scores = np.asarray(scores, dtype=np.float32)
    layers = np.asarray(exit_layers)
    if scores.ndim != 2 or scores.shape[1] != len(layers):
        raise ValueError(f"scores must have shape (n, {len(layers)}) (one column per exit), got {scores.shape}.")
    checked = layers[:-1] >= min_exit_layer
    # Confidence leaves when score > c: negated, both rules read "leaves when value < t".
    values = scores[:, :-1][:, checked] * (1 if strategy == "entropy" else -1)
    safest = _SAFEST_THRESHOLD[strategy]
    if not values.size:
        return [safest]
    running = np.minimum.accumulate(values, axis=1)
    # Leaving at checked exit k instead of the next checked one (or the final layer) saves this many layers.
    saved_per_exit = np.diff(np.append(layers[:-1][checked], layers[-1]))
    breakpoints, inverse = np.unique(running, return_inverse=True)
    saved = np.bincount(inverse.ravel(), weights=np.tile(saved_per_exit, len(values)), minlength=len(breakpoints))
    num_layers = float(layers[-1])
    speedup = num_layers / (num_layers - np.cumsum(saved) / len(values))
    picked, current, last = [], 1.0, -1
    while last < len(breakpoints) - 1:
        last = max(int(np.searchsorted(speedup, current + max_step, side="right")) - 1, last + 1)
        picked.append(last)
        current = speedup[last]
    last_value = breakpoints[-1]
    beyond = np.append(breakpoints, last_value + np.float32(max(abs(float(last_value)), 1e-6) / 2))
    sign = 1 if strategy == "entropy" else -1
    return [safest] + [sign * _short_between(beyond[j], beyond[j + 1]) for j in picked]


def candidate_values(
    all_logits: np.ndarray, model_config, strategy: str, max_step: float = 0.1, exit_config: ExitConfig | None = None,
) -> list:
    """The default candidates of `strategy`, safest first: `quantile_thresholds` of the exit scores of
    `all_logits` `(n, E, C)` for entropy (unnormalised, `normalize_entropy=False`) and confidence; patience
    `E-1, ..., 0` (`E-1` never leaves early); static exit layers from the last down. `exit_config` supplies
    `min_exit_layer`."""
    base = exit_config or ExitConfig()
    layers = list(model_config.exit_layers)
    if strategy in _SAFEST_THRESHOLD:
        return quantile_thresholds(exit_scores(all_logits, strategy), layers, strategy, max_step, base.min_exit_layer)
    if strategy == "patience":
        return list(range(len(layers) - 1, -1, -1))
    if strategy == "static":
        return [layer for layer in reversed(layers) if layer >= base.min_exit_layer]
    raise ValueError(f"No calibration grid for exit_strategy={strategy!r}; valid: {list(_SAFEST_FIRST_REVERSE)}.")


@dataclass
class CandidateExits:
    """Replayed candidates: `settings` (complete exit arguments: `ExitConfig().update(**s)` reproduces each),
    `exit_layers` `(n, K)` 1-based, `predictions` `(n, K)` class ids / floats, or `(n, K, C)` multi-label."""

    settings: list[dict[str, Any]]
    exit_layers: np.ndarray
    predictions: np.ndarray


def _predictions(logits: np.ndarray, problem_type: str) -> np.ndarray:
    if problem_type == REGRESSION:
        return logits[..., 0].astype(np.float64)
    if problem_type == MULTI_LABEL:
        return logits > 0
    return logits.argmax(axis=-1)


def replay_candidates(
    all_logits: np.ndarray, model_config, strategy: str, values: Sequence, exit_config: ExitConfig | None = None,
) -> CandidateExits:
    """Each candidate value of `strategy`'s swept parameter replayed on cached all-exit logits `(n, E, C)` by
    `evaluation.simulate_exits` (the strategy's own rule); the other exit arguments come from `exit_config`."""
    base = exit_config or ExitConfig()
    parameter = sweep_parameter(strategy)
    if parameter is None:
        raise ValueError(f"exit_strategy={strategy!r} has no parameter to calibrate.")
    shared = {name: getattr(base, name) for name in (*EXIT_STRATEGIES[strategy].parameters, "min_exit_layer")}
    settings = [{**shared, "exit_strategy": strategy, parameter: value} for value in values]
    problem_type = resolve_problem_type(model_config)
    layers, predictions = [], []
    for setting in settings:
        replay = simulate_exits(all_logits, model_config, base.update(**setting))
        layers.append(replay.exit_layers)
        predictions.append(_predictions(replay.logits, problem_type))
    return CandidateExits(
        settings=settings, exit_layers=np.stack(layers, axis=1), predictions=np.stack(predictions, axis=1)
    )


def calibrate_strategy(
    all_logits: np.ndarray, model_config, strategy: str, *, max_drop: float, delta: float = 0.1,
    criterion: str = "agreement", labels: np.ndarray | None = None, metric: str = "accuracy",
    values: Sequence | None = None, grid_logits: np.ndarray | None = None, max_step: float = 0.1,
    exit_config: ExitConfig | None = None, p_value: str = "hoeffding_bentkus",
) -> CalibrationResult:
    """Calibrates `strategy` on the calibration split's cached all-exit logits `(n, E, C)`: candidates are `values`
    (sorted safest first by the strategy's direction, a data-free order) or `candidate_values` of `grid_logits`
    (default: the calibration logits themselves; see the module docstring on what that costs the guarantee),
    replayed by `replay_candidates`, then decided by `calibrate` against the final exit's predictions."""
    if strategy not in _SAFEST_FIRST_REVERSE:
        raise ValueError(f"Cannot calibrate exit_strategy={strategy!r}; valid: {list(_SAFEST_FIRST_REVERSE)}.")
    base = exit_config or ExitConfig()
    all_logits = np.asarray(all_logits)
    if values is None:
        if strategy == "entropy":
            base = base.update(normalize_entropy=False)  # the grid is in the unnormalised entropies it was built on
        grid_data = all_logits if grid_logits is None else grid_logits
        values = candidate_values(grid_data, model_config, strategy, max_step, base)
    else:
        values = sorted(values, reverse=_SAFEST_FIRST_REVERSE[strategy])
    replay = replay_candidates(all_logits, model_config, strategy, values, base)
    return calibrate(
        replay.predictions, _predictions(all_logits[:, -1], resolve_problem_type(model_config)),
        max_drop=max_drop, delta=delta, criterion=criterion, labels=labels, metric=metric, settings=replay.settings,
        avg_exit_layers=replay.exit_layers.mean(axis=0), num_layers=int(model_config.exit_layers[-1]), p_value=p_value,
    )
