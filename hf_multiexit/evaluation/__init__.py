"""Evaluation of a multi-exit model's accuracy/speed trade-off: per-exit metrics, exit-strategy sweeps, FLOPs,
wall-clock speed-up, the oracle bound, the report of `hf-multiexit evaluate` and its plot.

One all-exits pass caches every exit's logits; a strategy's decisions are then replayed on the cached logits by
the strategy's own `should_exit` (`simulate_exits`), which gives metric, average exit layer and FLOPs for any number
of thresholds or patience values without running the encoder again. Wall-clock speed-up needs real early-exit
runs, made at the points asked for (`wall_clock=True`) and timed against a full-depth run of the same data in the
same process. Strategies that change the hidden states (skip gates) are always measured by real runs.

Report fields (`TradeoffEvaluator.report`, the contract of `hf-multiexit evaluate`): `num_layers`, `full_depth`
{metrics, seconds, flops_per_sample}, `per_exit` [{layer, metrics}], `points` [{strategy, params, metrics,
avg_exit_layer, layer_speedup (= L / avg_exit_layer), flops_speedup, wall_speedup, seconds, full_seconds, ...}],
`oracle`.

The package is split by concern: `inference` runs the model, `replay` replays exit rules on cached logits,
`tradeoff` sweeps and times real runs, `report` reads a report and plots it, `command` is `hf-multiexit evaluate`.
"""

from .command import EvaluateArguments, run_evaluation
from .inference import InferenceResult, all_exit_logits, run_inference
from .replay import DEFAULT_GRID_STEP, SimulatedExits, default_sweep_values, oracle_exits, simulate_exits, sweep_parameter
from .report import plot_report, tradeoff_summary
from .tradeoff import TradeoffEvaluator, evaluate_tradeoff

__all__ = [
    "InferenceResult",
    "SimulatedExits",
    "TradeoffEvaluator",
    "all_exit_logits",
    "EvaluateArguments",
    "DEFAULT_GRID_STEP",
    "default_sweep_values",
    "evaluate_tradeoff",
    "oracle_exits",
    "plot_report",
    "run_evaluation",
    "run_inference",
    "simulate_exits",
    "sweep_parameter",
    "tradeoff_summary",
]
