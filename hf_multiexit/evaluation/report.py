"""Reading a trade-off report: the fastest point within a tolerance of full depth (`tradeoff_summary`) and the
plot (`plot_report`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..io import atomic_output


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
