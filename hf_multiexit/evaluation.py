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
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.benchmark import timer
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .flops import full_depth_flops, sample_flops
from .io import atomic_output, atomic_write_json, check_model_path
from .metrics import METRICS, check_metric, logits_metrics, primary_metric
from .models.multiexit_bert import EXIT_STRATEGIES, ExitConfig
from .models.multiexit_bert.exit_strategies import REGRESSION, SINGLE_LABEL, build_exit_strategy, resolve_problem_type

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


@dataclass
class InferenceResult:
    """`logits` `(N, C)` at each sample's exit, `exit_layers` `(N,)` 1-based, `layers_run` and `exit_checks` `(N,)`
    (encoder layers and exit heads each sample ran), `lengths` `(N,)` tokens per sample, `labels` `(N,)` or None,
    and `seconds` of model time (data loading excluded)."""

    logits: np.ndarray
    exit_layers: np.ndarray
    layers_run: np.ndarray
    exit_checks: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None
    seconds: float

    @property
    def avg_exit_layer(self) -> float:
        return float(self.exit_layers.mean())


def _batches(dataset, collator, batch_size: int, description: str | None):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
    return tqdm(loader, desc=description, leave=False, disable=description is None)


def _pop_labels(batch: dict, labels: list) -> None:
    if "labels" in batch:
        labels.append(batch.pop("labels").numpy())


def run_inference(model, dataset, collator, batch_size: int = 32, description: str | None = None, **exit_kwargs) -> InferenceResult:
    """Runs `model` in eval mode over `dataset` with the given exit arguments (defaults: `model.exit_config`).

    Batches go to the model's device and the outputs stay there until the last batch is done, then come to the CPU
    together, so no per-batch copy stalls the device. `seconds` is model time: each call is timed with
    `torch.utils.benchmark.timer`, which synchronises the accelerator before it reads the clock (kernels run
    asynchronously; without it the clock would time their launch, and the input copy would land in the next call)."""
    model.eval()
    device = model.device
    outputs, lengths, labels, seconds = [], [], [], 0.0
    with torch.inference_mode():
        for batch in _batches(dataset, collator, batch_size, description):
            _pop_labels(batch, labels)
            lengths.append(batch["attention_mask"].sum(dim=1).numpy())
            batch = {key: value.to(device) for key, value in batch.items()}
            start = timer()
            out = model(**batch, **exit_kwargs)
            seconds += timer() - start
            outputs.append((out.logits, out.exit_layers, out.layers_run, out.exit_checks))
    logits, exit_layers, layers_run, exit_checks = (torch.cat(column).cpu() for column in zip(*outputs))
    return InferenceResult(
        logits=logits.float().numpy(),
        exit_layers=exit_layers.numpy(),
        layers_run=layers_run.numpy(),
        exit_checks=exit_checks.numpy(),
        lengths=np.concatenate(lengths),
        labels=np.concatenate(labels) if labels else None,
        seconds=seconds,
    )


def all_exit_logits(model, dataset, collator, batch_size: int = 32, description: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One full-depth pass computing every exit: `(N, E, C)` logits and the labels (or None). Skip gates stay off,
    as in early exit with any strategy but `skip`, so these are the logits those strategies see. Batches go to the
    model's device; the logits come to the CPU once, at the end, in float32."""
    model.eval()
    device = model.device
    logits, labels = [], []
    with torch.inference_mode():
        for batch in _batches(dataset, collator, batch_size, description):
            _pop_labels(batch, labels)
            out = model(**{key: value.to(device) for key, value in batch.items()}, output_all_exits=True, gate_mode="off")
            logits.append(torch.stack(out.all_logits, dim=1))
    return torch.cat(logits).float().cpu().numpy(), (np.concatenate(labels) if labels else None)


@dataclass
class SimulatedExits:
    """What early exit would do on cached logits: `exit_layers` `(N,)`, `logits` `(N, C)` at the exit, and
    `exit_checks` `(N,)` (exit heads the strategy evaluates for each sample)."""

    exit_layers: np.ndarray
    logits: np.ndarray
    exit_checks: np.ndarray


def simulate_exits(all_logits: np.ndarray, model_config, exit_config: ExitConfig | None = None, **exit_kwargs) -> SimulatedExits:
    """Replays an exit strategy on cached all-exit logits `(N, E, C)`, exit by exit, with the strategy's own
    `needs_logits`/`should_exit` and per-sample state, exactly as the early-exit forward applies it, so the exits
    equal a real run's up to float rounding of the logits. Strategies that use skip gates change the hidden states
    themselves and cannot be replayed (`ValueError`)."""
    base = exit_config or ExitConfig()
    config = base.update(**exit_kwargs) if exit_kwargs else base
    strategy = build_exit_strategy(config, model_config)
    if strategy.uses_skip_gates:
        raise ValueError(
            f"exit_strategy={strategy.name!r} skips layers, which changes the hidden states: it cannot be replayed on "
            f"cached logits; measure it with run_inference. Replayable: "
            f"{[name for name, cls in EXIT_STRATEGIES.items() if not cls.uses_skip_gates]}."
        )
    logits = torch.as_tensor(all_logits)
    count, exit_layers = logits.shape[0], list(model_config.exit_layers)
    exit_index = torch.full((count,), len(exit_layers) - 1, dtype=torch.long)
    checks = torch.zeros(count, dtype=torch.long)
    active = torch.arange(count)
    state = strategy.init_state(count, logits.device)
    for index, layer in enumerate(exit_layers[:-1]):
        if not active.numel():
            break
        if not strategy.needs_logits(layer):
            continue
        checks[active] += 1
        leaving = strategy.should_exit(logits[active, index], layer, state)
        exit_index[active[leaving]] = index
        staying = ~leaving
        active = active[staying]
        state = {key: value[staying] for key, value in state.items()}
    checks[active] += 1  # the final classifier answers for everyone still running
    chosen = logits[torch.arange(count), exit_index]
    layers = torch.tensor(exit_layers)[exit_index]
    return SimulatedExits(exit_layers=layers.numpy(), logits=chosen.numpy(), exit_checks=checks.numpy())


def oracle_exits(all_logits: np.ndarray, labels: np.ndarray | None, exit_layers: Sequence[int], problem_type: str) -> dict | None:
    """The oracle bound of an exit rule for this model (single-label classification): each sample leaves at the
    first exit whose prediction equals the final exit's (`agree_final`: same predictions as full depth, fewest
    layers) or at the first exit that is correct (`first_correct`, the final exit if none is). Returns
    `{name: {avg_exit_layer, layer_speedup, accuracy}}`, or None for other problem types."""
    if problem_type != SINGLE_LABEL:
        return None
    predictions = all_logits.argmax(axis=-1)
    layers = np.asarray(exit_layers)
    num_layers = int(layers[-1])
    rules = {"agree_final": predictions == predictions[:, -1:]}
    if labels is not None:
        correct = predictions == labels[:, None]
        correct[:, -1] |= ~correct.any(axis=1)
        rules["first_correct"] = correct
    result = {}
    for name, mask in rules.items():
        index = mask.argmax(axis=1)  # the first True; every row has one (the final exit's column)
        avg = float(layers[index].mean())
        entry = {"avg_exit_layer": avg, "layer_speedup": num_layers / avg}
        if labels is not None:
            entry["accuracy"] = float((predictions[np.arange(len(index)), index] == labels).mean())
        result[name] = entry
    return result


def sweep_parameter(strategy: str) -> str | None:
    """The `ExitConfig` field a sweep of `strategy` varies: the strategy's first parameter (None for `none`)."""
    try:
        parameters = EXIT_STRATEGIES[strategy].parameters
    except KeyError:
        raise ValueError(f"Unknown exit_strategy={strategy!r}; valid strategies are {list(EXIT_STRATEGIES)}.") from None
    return parameters[0] if parameters else None


DEFAULT_GRID_STEP = 0.25
"""Largest layer speed-up step between consecutive default thresholds of a sweep: about 20 points from full depth to
6x on a 6-layer model, each timed by real runs when `wall_clock`."""


def default_sweep_values(strategy: str, model_config, all_logits: np.ndarray, max_step: float = DEFAULT_GRID_STEP) -> list:
    """A sweep grid that spans a strategy's range on this model and data: every exit layer (static), patience
    0..E-1, and for entropy, confidence and skip's entropy threshold the quantile grid of
    `calibration.candidate_values` on the exit scores of `all_logits` `(N, E, C)`: thresholds placed on the data
    so that consecutive points differ in layer speed-up by at most `max_step` (where ties allow), from full depth
    to every sample at its first exit. (A fixed grid such as 12 linear entropies up to ln C crowds its points where
    this model's entropies are not: one 4-class task jumped from about 2x to 6x in one step.) Skip's grid uses the
    entropies without gates, so its points' speed-ups are only roughly spaced."""
    from .calibration import candidate_values  # calibration replays strategies with this module's simulate_exits

    parameter = sweep_parameter(strategy)
    if parameter is None:
        return [None]
    if parameter == "exit_layer":
        return list(model_config.exit_layers)
    if parameter == "patience":
        return list(range(len(model_config.exit_layers)))
    if parameter == "entropy_threshold":
        return candidate_values(all_logits, model_config, "entropy", max_step)
    if parameter == "confidence_threshold":
        return candidate_values(all_logits, model_config, "confidence", max_step)
    raise ValueError(f"No default sweep for exit_strategy={strategy!r} ({parameter}); pass the values.")


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


def _interpolate(xs: list[float], ys: list[float], x: float) -> float | None:
    """`y(x)` on the piecewise-linear curve through the points (sorted by x); None outside their range."""
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    return float(np.interp(x, xs, ys))


def _fastest_within(points: list[dict], name: str, full: float, floor: float) -> tuple[dict | None, float | None]:
    """The point with the largest layer speed-up whose metric is at least `floor`, and that speed-up: 1.0 (full
    depth) when no point but full depth reaches it, None when not even full depth does."""
    best = max((p for p in points if p["metrics"][name] >= floor), key=lambda p: p["layer_speedup"], default=None)
    return best, best["layer_speedup"] if best is not None else (1.0 if full >= floor else None)


def tradeoff_summary(
    report: dict, strategy: str, speedups: Sequence[float] = (1.5, 2.0), tolerance: float = 0.01,
    reference: float | None = None, margins: Sequence[float] = (0.5, 1.0, 2.0),
) -> dict:
    """One strategy's curve in numbers: the primary metric at the given layer speed-ups (linear interpolation
    between sweep points, None beyond the largest), and the point with the largest layer speed-up whose metric is
    within `tolerance` (absolute, 0.01 = one accuracy point) of `reference` (default: this model at full depth;
    e.g. the same backbone fine-tuned without exits), with its measured wall-clock speed-up if it has one. That
    speed-up is 1.0 when only full depth is within `tolerance`, and None when not even full depth is.

    `fastest_within` finds the knee: for each margin in `margins` (in points, 1 = 0.01 of the metric) the fastest
    point within it of `reference`, as `{layer_speedup, wall_speedup, params, metric}` (`params` None and speed-up
    1.0 when only full depth is within it; None when nothing is)."""
    name = report["primary_metric"]
    full = report["full_depth"]["metrics"][name]
    reference = full if reference is None else reference
    points = sorted((p for p in report["points"] if p["strategy"] == strategy), key=lambda p: p["layer_speedup"])
    if not points:
        raise ValueError(f"The report has no points for exit_strategy={strategy!r}; it has {sorted({p['strategy'] for p in report['points']})}.")
    # One curve through (1, full depth) and the sweep points: a speed-up of 1 is the full-depth model itself.
    xs = [1.0] + [p["layer_speedup"] for p in points]
    ys = [full] + [p["metrics"][name] for p in points]
    order = np.argsort(xs, kind="stable")
    xs, ys = [xs[i] for i in order], [ys[i] for i in order]
    best, speedup = _fastest_within(points, name, full, reference - tolerance - 1e-12)
    fastest = {}
    for margin in margins:
        point, layer_speedup = _fastest_within(points, name, full, reference - margin / 100 - 1e-12)
        fastest[f"{margin:g}"] = None if layer_speedup is None else {
            "layer_speedup": layer_speedup,
            "wall_speedup": None if point is None else point.get("wall_speedup"),
            "params": None if point is None else point.get("params"),
            "metric": full if point is None else point["metrics"][name],
        }
    return {
        "metric": name,
        "full_depth": full,
        "reference": reference,
        "at_speedup": {str(s): _interpolate(xs, ys, s) for s in speedups},
        "speedup_within_tolerance": speedup,
        "operating_point": best,
        "fastest_within": fastest,
    }


def plot_report(report: dict, path: str | os.PathLike, title: str | None = None) -> None:
    """Writes a PNG: the primary metric against layer speed-up (every point) and against measured wall-clock
    speed-up (points with a wall-clock run), one curve per strategy, full depth as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = report["primary_metric"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for strategy in dict.fromkeys(p["strategy"] for p in report["points"]):
        points = [p for p in report["points"] if p["strategy"] == strategy]
        for axis, key in zip(axes, ("layer_speedup", "wall_speedup")):
            curve = sorted((p[key], p["metrics"][name]) for p in points if p[key] is not None)
            if curve:
                axis.plot(*zip(*curve), marker="o", markersize=3, label=strategy)
    for axis, label in zip(axes, ("layer speed-up (L / average exit layer)", "wall-clock speed-up (measured)")):
        axis.axhline(report["full_depth"]["metrics"][name], color="gray", linestyle="--", label="full depth")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_ylabel(name)
    fig.suptitle(title or f"{report.get('task') or 'evaluation'}: {report['num_samples']} samples, batch {report['batch_size']}")
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)


def _parse_values(text: str | None, convert, flag: str) -> list | None:
    if text is None:
        return None
    try:
        return [convert(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"--{flag}={text!r} must be a comma-separated list of numbers, e.g. 0.1,0.3,0.5.") from None


def resolve_device(name: str) -> str:
    """`--device`: "auto" is the accelerator torch finds (CUDA, XPU, MPS, ...), else the CPU; anything else must
    name a device torch knows and that is present here."""
    if name == "auto":
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        return "cpu" if accelerator is None else accelerator.type
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device={name!r} is not a device name: use 'auto', 'cpu', 'cuda', 'cuda:1', ... ({err})") from None
    if device.type != "cpu" and not (torch.accelerator.is_available() and torch.accelerator.current_accelerator().type == device.type):
        raise ValueError(f"--device={name!r}: no {device.type} device is available here; use --device cpu (or auto).")
    return name


@dataclass
class EvaluateArguments:
    """`hf-multiexit evaluate`: a trade-off sweep of a trained multi-exit model on a validation set."""

    model: str = field(metadata={"help": "A saved multi-exit model folder (or Hub id)."})
    output: str = field(metadata={"help": "Where to write report.json."})
    exit_strategy: str = field(
        default="entropy,static",
        metadata={"help": f"Strategy, or comma-separated strategies, to sweep: {list(EXIT_STRATEGIES)} (default "
                  "entropy and static: a single intermediate exit sometimes beats the final one)."},
    )
    thresholds: str | None = field(
        default=None,
        metadata={"help": "Comma-separated thresholds for entropy/confidence/skip (default: thresholds placed on this "
                  "data's exit statistics, consecutive points at most --grid_step apart in layer speed-up)."},
    )
    grid_step: float = field(
        default=DEFAULT_GRID_STEP, metadata={"help": "Largest layer speed-up step of the default threshold grids."}
    )
    patience: str | None = field(default=None, metadata={"help": "Comma-separated patience values (default 0..E-1)."})
    exit_layers: str | None = field(default=None, metadata={"help": "Comma-separated layers for static (default: all exits)."})
    task: str | None = field(default=None, metadata={"help": "GLUE task (or give --validation_file)."})
    data_dir: str | None = field(
        default_factory=lambda: os.environ.get("GLUE_DIR"),
        metadata={"help": "GLUE folder with the official TSV files (default: $GLUE_DIR, else datasets' glue)."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "CSV/TSV/JSON(L) evaluation file (non-GLUE)."})
    text_columns: list[str] = field(default_factory=lambda: ["sentence"], metadata={"help": "Text column(s) of the file."})
    label_column: str = field(default="label", metadata={"help": "Label column of the file."})
    metric: str | None = field(
        default=None,
        metadata={"help": f"Primary metric, one of {list(METRICS)} (default: the task's GLUE metric, else accuracy or "
                  "pearson): reported first per exit and per point, and the one the summary's speed-ups are read at."},
    )
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per example."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N examples."})
    batch_size: int = field(default=32, metadata={"help": "Inference batch size."})
    repeats: int = field(default=1, metadata={
        "help": "Timed rounds per setting, each one pass of the setting and one at full depth (the fastest of each counts)."})
    wall_clock: bool = field(default=True, metadata={"help": "Time a real early-exit run at every point."})
    plot: str | None = field(default=None, metadata={"help": "Also write the trade-off plot (PNG) here."})
    device: str = field(default="auto", metadata={
        "help": "Device to run on: 'auto' (the accelerator torch finds, else the CPU), 'cpu', 'cuda', 'cuda:1', ..."})

    _flags = {"entropy_threshold": "thresholds", "confidence_threshold": "thresholds", "patience": "patience",
              "exit_layer": "exit_layers"}
    """The flag that gives the values of each swept `ExitConfig` field."""

    def __post_init__(self):
        self.strategies = [name.strip() for name in self.exit_strategy.split(",") if name.strip()]
        parameters = {name: sweep_parameter(name) for name in self.strategies}
        values = {flag: _parse_values(getattr(self, flag), convert, flag)
                  for flag, convert in (("thresholds", float), ("patience", int), ("exit_layers", int))}
        self.sweep = {name: values.get(self._flags.get(parameter)) for name, parameter in parameters.items()}
        read = {self._flags.get(parameter) for parameter in parameters.values()}
        for flag in values:
            if getattr(self, flag) is not None and flag not in read:
                readers = [name for name, cls in EXIT_STRATEGIES.items()
                           if cls.parameters and self._flags.get(cls.parameters[0]) == flag]
                raise ValueError(f"--{flag} is given, but no strategy in --exit_strategy={self.exit_strategy!r} reads "
                                 f"it; add {' or '.join(readers)} to --exit_strategy or leave --{flag} out.")
        self.check_sweep()
        check_metric(self.metric, self.task)
        check_model_path(self.model, "--model", "the --output_dir of `hf-multiexit train` (or a Hub model id)")
        if (self.task is None) == (self.validation_file is None):
            raise ValueError("Give exactly one of --task (a GLUE task) and --validation_file.")
        for name in ("batch_size", "repeats", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be a positive integer.")
        self.device = resolve_device(self.device)

    def check_sweep(self, model_config=None) -> None:
        """Checks every value given to sweep, so that a bad one fails before anything is loaded: its range, and with
        `model_config` (read before the weights) whether the model can run it (`--exit_layers` must be exits)."""
        for strategy, values in self.sweep.items():
            parameter = sweep_parameter(strategy)
            for value in values or ():
                try:
                    exit_config = ExitConfig(exit_strategy=strategy, **{parameter: value})
                    if model_config is not None:
                        build_exit_strategy(exit_config, model_config)
                except ValueError as err:
                    flag = self._flags[parameter]
                    raise ValueError(f"--{flag}={getattr(self, flag)!r}: {err}") from None


def load_evaluation_set(args: EvaluateArguments, model, tokenizer):
    """The tokenised validation split of the GLUE task, or of the file (labels read with the model's label names)."""
    from .data import load_glue, load_text_files
    from .tasks import get_glue_task

    if args.validation_file is not None:
        names = None if model.config.num_labels == 1 else [model.config.id2label[i] for i in range(model.config.num_labels)]
        data = load_text_files(
            validation_file=args.validation_file, text_columns=tuple(args.text_columns), label_column=args.label_column,
            label_names=names, tokenizer=tokenizer, max_length=args.max_length,
        )["validation"]
    else:
        spec = get_glue_task(args.task)
        split = spec.validation_splits[0]
        data = load_glue(args.task, data_dir=args.data_dir, tokenizer=tokenizer, max_length=args.max_length, splits=split)[split]
    if args.max_eval_samples is not None:
        data = data.select(range(min(args.max_eval_samples, len(data))))
    return data


def trained_model_config(model: str, command: str, why: str):
    """The config of a trained multi-exit model given as `--model`, read before the weights; a folder without
    config.json or a plain (non multi-exit) checkpoint is refused, saying that `why` (its exits are untrained)."""
    from transformers import AutoConfig

    from .models.multiexit_bert import AUTO_FAMILIES

    if os.path.isdir(model) and not os.path.exists(os.path.join(model, "config.json")):
        raise FileNotFoundError(f"--model={model!r} has no config.json: it is not a saved model folder.")
    config = AutoConfig.from_pretrained(model)
    if type(config) not in AUTO_FAMILIES:
        raise ValueError(
            f"--model {model!r} is a plain {config.model_type!r} checkpoint, not a multi-exit one: its exits were "
            f"never trained (loading it gives them random weights), so {why}. Train it first, e.g. `hf-multiexit "
            f"train --method pabee --model_name_or_path {model} --output_dir OUT ...`, and {command} OUT."
        )
    return config


def run_evaluation(args: EvaluateArguments) -> dict:
    """Loads the model and data, sweeps, writes `report.json` (and the plot) atomically, returns the report."""
    from transformers import AutoTokenizer

    from .data import make_collator
    from .models.multiexit_bert import AUTO_FAMILIES

    config = trained_model_config(args.model, "evaluate", "a trade-off would measure noise")
    args.check_sweep(config)
    _, classifier_class = AUTO_FAMILIES[type(config)]
    model = classifier_class.from_pretrained(args.model, config=config).to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = load_evaluation_set(args, model, tokenizer)
    report = evaluate_tradeoff(
        model, data, make_collator(tokenizer), args.sweep, task=args.task, batch_size=args.batch_size,
        wall_clock=args.wall_clock, repeats=args.repeats, metric=args.metric, grid_step=args.grid_step,
    )
    report["model"] = args.model
    if args.plot:
        plot_report(report, args.plot)
        report["plot"] = args.plot
    atomic_write_json(args.output, report)
    return report
