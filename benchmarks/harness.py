"""The benchmarks' shared timing harness.

- `interleaved_times`: every variant timed once per round, in an order that rotates from round to round, so that a
  drift in the machine's load hits all of them alike and none always runs first on a warmer cache; each pass is
  timed by `torch.utils.benchmark.Timer` at the process's thread count.
- `ratio_summary`: per-round ratios of two variants with their median and spread (the figure to report).
- `write_results`: the JSON and Markdown results, written atomically, with the command that produced them and the
  machine they ran on.

Run timed benchmarks alone on the machine: on two shared cores, another job's load changes every figure.
"""

from __future__ import annotations

import platform
import shlex
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import Timer

from hf_multiexit.io import atomic_write_json, atomic_write_text


def time_once(function: Callable[[], Any]) -> float:
    """Seconds one call of `function` takes (`torch.utils.benchmark.Timer`, which also synchronises CUDA)."""
    timer = Timer(stmt="function()", globals={"function": function}, num_threads=torch.get_num_threads())
    return timer.timeit(number=1).times[0]


def interleaved_times(variants: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """`{variant: [seconds per round]}`: each variant timed once per round, the order rotated by one each round."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_once(variants[name]))
    return times


def ratio_summary(numerator: list[float], denominator: list[float]) -> dict[str, Any]:
    """Per-round `numerator / denominator` with its median, minimum and maximum."""
    ratios = [n / d for n, d in zip(numerator, denominator)]
    return {"per_round": ratios, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def command_line() -> str:
    """The command that is running, as a user would type it from the repository root."""
    return "python " + " ".join(shlex.quote(arg) for arg in sys.argv)


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor() or None}


def write_results(stem: str | Path, data: dict[str, Any], markdown: list[str]) -> None:
    """Writes `<stem>.json` (`data` with the command and environment) and `<stem>.md` (`markdown`, after a line
    with the command), each atomically."""
    command = command_line()
    atomic_write_json(f"{stem}.json", {"command": command, "environment": environment(), **data})
    atomic_write_text(f"{stem}.md", "\n".join([markdown[0], "", f"Command: `{command}`", "", *markdown[1:]]) + "\n")
