"""The trade-off sweep: replayed points for every setting, real early-exit runs timed against full depth where wall
clock is asked for, and the report of `hf-multiexit evaluate` (fields in the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Subset
from tqdm.auto import tqdm

from ..flops import full_depth_flops, sample_flops
from ..metrics import check_metric, logits_metrics, primary_metric
from ..models.multiexit_bert import EXIT_STRATEGIES
from ..models.multiexit_bert.exit_strategies import REGRESSION, resolve_problem_type
from .inference import InferenceResult, all_exit_logits, run_inference
from .replay import DEFAULT_GRID_STEP, default_sweep_values, oracle_exits, simulate_exits, sweep_parameter


class TradeoffEvaluator:
    """The trade-off of one model on one evaluation set.

    Construction runs one all-exits pass (per-exit metrics, oracle, cached logits for `simulate_exits`) and one timed
    full-depth pass (`exit_strategy="none"`: the reference for `wall_speedup` and `flops_speedup`). `point()` then
    evaluates one strategy setting, after one warm-up batch.

    A timed setting runs `repeats` rounds of (one pass of the setting, one full-depth pass), and its `wall_speedup`
    is the fastest full-depth pass of those rounds over the setting's fastest pass (`full_seconds` in the point).
    Pairing keeps load changes during a long sweep out of the speed-ups (a reference timed once at the start would
    turn them into speed-ups), and taking the fastest of equally many passes on both sides keeps the estimate
    unbiased (the fastest of all the sweep's full-depth passes would be the luckiest of many tries against a
    setting's few, and made a setting identical to full depth measure below 1x). `full_depth.seconds` in the report
    is the fastest full-depth pass seen.
    """

    def __init__(
        self, model, dataset, collator, task: str | None = None, batch_size: int = 32, repeats: int = 1,
        progress: bool = True, metric: str | None = None,
    ):
        if batch_size < 1 or repeats < 1:
            raise ValueError(f"batch_size={batch_size} and repeats={repeats} must be positive integers.")
        if len(dataset) == 0:
            raise ValueError("The evaluation set is empty.")
        self.model, self.dataset, self.collator = model, dataset, collator
        self.config = model.config
        self.task, self.batch_size, self.repeats, self.progress = task, batch_size, repeats, progress
        self.problem_type = resolve_problem_type(self.config)
        self.metric = check_metric(metric, task, self.config.num_labels)
        self.num_layers = self.config.num_hidden_layers
        self.all_logits, self.labels = all_exit_logits(model, dataset, collator, batch_size, self._describe("all exits"))
        if self.labels is None:
            raise ValueError("The evaluation set has no labels: a trade-off needs a metric.")
        run_inference(model, Subset(dataset, range(min(batch_size, len(dataset)))), collator, batch_size, exit_strategy="none")
        self.full = self._timed(exit_strategy="none")
        self.full_seconds = self.full.seconds
        self.full_flops = float(full_depth_flops(self.config, self.full.lengths).mean())

    def _describe(self, what: str) -> str | None:
        return what if self.progress else None

    def _metrics(self, logits: np.ndarray) -> dict[str, float]:
        return logits_metrics(self.task, self.problem_type, logits, self.labels, self.metric)

    def _run(self, **exit_kwargs) -> InferenceResult:
        return run_inference(self.model, self.dataset, self.collator, self.batch_size, **exit_kwargs)

    def _timed(self, **exit_kwargs) -> InferenceResult:
        return min((self._run(**exit_kwargs) for _ in range(self.repeats)), key=lambda result: result.seconds)

    def _timed_against_full_depth(self, **exit_kwargs) -> tuple[InferenceResult, float]:
        """The setting's fastest pass and the fastest full-depth pass, over `repeats` interleaved rounds."""
        runs, full = [], []
        for _ in range(self.repeats):
            runs.append(self._run(**exit_kwargs))
            full.append(self._run(exit_strategy="none").seconds)
        self.full_seconds = min(self.full_seconds, *full)
        return min(runs, key=lambda result: result.seconds), min(full)

    @property
    def primary_metric(self) -> str:
        regression = self.problem_type == REGRESSION
        return primary_metric(self.task or ("regression" if regression else "classification"), regression, self.metric)

    def per_exit(self) -> list[dict]:
        return [
            {"layer": layer, "metrics": self._metrics(self.all_logits[:, index])}
            for index, layer in enumerate(self.config.exit_layers)
        ]

    def point(self, strategy: str, value: Any = None, wall_clock: bool = True) -> dict:
        """One setting: metric, average exit layer and FLOPs from the cached logits when the strategy can be
        replayed (else from a real run), plus `wall_speedup`, `seconds` and `full_seconds` (the full-depth passes
        timed alongside) from real runs when `wall_clock` (None otherwise). `exit_agreement` is the fraction of
        samples whose real exit equals the replayed one."""
        parameter = sweep_parameter(strategy)
        params = {} if parameter is None else {parameter: value}
        kwargs = {"exit_strategy": strategy, **params}
        uses_gates = EXIT_STRATEGIES[strategy].uses_skip_gates
        real, full_seconds = None, None
        if wall_clock:
            real, full_seconds = self._timed_against_full_depth(**kwargs)
        elif uses_gates:  # skipped layers cannot be replayed from the all-exits pass
            real = self._run(**kwargs)
        lengths = self.full.lengths
        if uses_gates:
            exit_layers, logits = real.exit_layers, real.logits
            flops = sample_flops(self.config, lengths, real.layers_run, real.exit_checks, gates_run=real.exit_layers)
        else:
            simulated = simulate_exits(self.all_logits, self.config, **kwargs)
            exit_layers, logits = simulated.exit_layers, simulated.logits
            flops = sample_flops(self.config, lengths, exit_layers, simulated.exit_checks)
        avg_exit_layer = float(exit_layers.mean())
        point = {
            "strategy": strategy,
            "params": params,
            "metrics": self._metrics(logits),
            "avg_exit_layer": avg_exit_layer,
            "layer_speedup": self.num_layers / avg_exit_layer,
            "flops_speedup": self.full_flops / float(flops.mean()),
            "flops_per_sample": float(flops.mean()),
            "wall_speedup": full_seconds / real.seconds if wall_clock else None,
            "seconds": real.seconds if wall_clock else None,
            "full_seconds": full_seconds,
            "exits_per_layer": [int((exit_layers == layer).sum()) for layer in self.config.exit_layers],
            "simulated": not uses_gates,
        }
        if real is not None and not uses_gates:
            point["exit_agreement"] = float((real.exit_layers == exit_layers).mean())
        return point

    def sweep(
        self, strategies: Mapping[str, Sequence | None], wall_clock: bool = True, grid_step: float = DEFAULT_GRID_STEP
    ) -> list[dict]:
        """Points for every strategy and value; a strategy mapped to None gets `default_sweep_values` on this
        evaluation set's exit statistics, with speed-up steps of at most `grid_step`. The model's saved rule is
        added to the sweep of its strategy (`_with_saved_rule`)."""
        for strategy, values in strategies.items():
            if values is not None and not values:
                raise ValueError(f"No values to sweep for exit_strategy={strategy!r}.")
        settings = [
            (strategy, value)
            for strategy, values in strategies.items()
            for value in self._with_saved_rule(
                strategy,
                default_sweep_values(strategy, self.config, self.all_logits, grid_step) if values is None else values,
            )
        ]
        bar = tqdm(settings, desc="sweep", disable=not self.progress, leave=False)
        return [self.point(strategy, value, wall_clock) for strategy, value in bar]

    def _with_saved_rule(self, strategy: str, values: Sequence) -> list:
        """`values`, plus the model's saved rule (`model.exit_config`) last when it is this strategy and not among
        them: the report then always measures what `model(**batch)` does, which the model card states."""
        saved = self.model.exit_config
        parameter = sweep_parameter(strategy)
        values = list(values)
        if saved.exit_strategy != strategy or parameter is None:
            return values
        value = getattr(saved, parameter)
        if any(np.isclose(value, v, rtol=1e-6, atol=1e-9) for v in values if v is not None):
            return values
        return values + [value]

    def report(self, points: list[dict]) -> dict:
        """`report.json`: the contract's fields plus the oracle bound, sample count and batch size."""
        return {
            "task": self.task,
            "primary_metric": self.primary_metric,
            "num_layers": self.num_layers,
            "exit_layers": list(self.config.exit_layers),
            "num_samples": len(self.labels),
            "batch_size": self.batch_size,
            "full_depth": {
                "metrics": self._metrics(self.full.logits),
                "seconds": self.full_seconds,
                "flops_per_sample": self.full_flops,
            },
            "per_exit": self.per_exit(),
            "oracle": oracle_exits(self.all_logits, self.labels, self.config.exit_layers, self.problem_type),
            "points": points,
        }


def evaluate_tradeoff(
    model, dataset, collator, strategies: Mapping[str, Sequence | None], task: str | None = None, batch_size: int = 32,
    wall_clock: bool = True, repeats: int = 1, progress: bool = True, metric: str | None = None,
    grid_step: float = DEFAULT_GRID_STEP,
) -> dict:
    """The whole report of `hf-multiexit evaluate` for `strategies` (`{strategy: values or None for defaults}`)."""
    evaluator = TradeoffEvaluator(model, dataset, collator, task, batch_size, repeats, progress, metric)
    return evaluator.report(evaluator.sweep(strategies, wall_clock, grid_step))
