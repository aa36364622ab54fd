"""The benchmarks' shared timing harness.

- `interleaved_times`: every variant timed once per round, in an order that rotates from round to round, so that a
  drift in the machine's load hits all of them alike and none always runs first on a warmer cache; each pass is
  read with `torch.utils.benchmark.timer` (`time_once`).
- `ratio_summary`: per-round ratios of two variants with their median and spread (the figure to report).
- `write_results`: the JSON and Markdown results, written atomically, with the command that produced them and the
  machine they ran on.

Run timed benchmarks alone on the machine: on two shared cores, another job's load changes every figure.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import timer

from hf_multiexit.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def time_once(function: Callable[[], Any]) -> float:
    """Seconds one call of `function` takes, read with `torch.utils.benchmark.timer` (which synchronises CUDA before
    reading the clock) and the garbage collector off, as `timeit` does. Not `Timer.timeit`: that runs the statement
    twice more first as a warm-up, which would triple a benchmark whose passes take seconds."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = timer()
        function()
        return timer() - start
    finally:
        if enabled:
            gc.enable()


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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state() -> dict[str, Any]:
    """The commit, and the package files that differ from it (the code actually measured)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.rstrip("\n") if out.returncode == 0 else None

    status = git("status", "--porcelain", "--", "hf_multiexit")
    return {"commit": git("rev-parse", "HEAD"), "modified_package_files": status.splitlines() if status else []}


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "git": git_state()}


def timing_setup(env: dict[str, Any], repeats: int, *versions: str) -> str:
    """The sentence a timed report states its machine and method in (`versions`: other runtimes, e.g. "ONNX Runtime
    1.23")."""
    runtimes = ", ".join([f"torch {env['torch']}", *versions])
    return (f"CPU: {env['cpu_model']}, {env['cpu_count']} cores, {env['threads']} torch threads; {runtimes}. Time: "
            f"median of {repeats} interleaved rounds after a warm-up pass")


def rows_by_task(rows: list[dict[str, Any]], tasks) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """`(task, its rows)` in the order of `tasks`, for the tasks that have rows (a report's sections)."""
    for task in tasks:
        task_rows = [row for row in rows if row["task"] == task]
        if task_rows:
            yield task, task_rows


def _cpu_seconds() -> dict[str, float] | None:
    try:
        values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    busy = sum(values[i] for i in (0, 1, 2, 5, 6) if i < len(values))  # user nice system irq softirq
    return {"wall": timer(), "busy": busy / hz, "steal": (values[7] if len(values) > 7 else 0) / hz,
            "own": usage.ru_utime + usage.ru_stime}


@contextmanager
def machine_share() -> Iterator[dict[str, float]]:
    """Fills the yielded dict, when the block ends, with the shares of the CPUs that other processes and the
    hypervisor (steal) took meanwhile: the check that a timing ran alone (Linux `/proc/stat`; empty elsewhere)."""
    share: dict[str, float] = {}
    before = _cpu_seconds()
    yield share
    after = _cpu_seconds()
    if before is not None and after is not None:
        capacity = (after["wall"] - before["wall"]) * (os.cpu_count() or 1)
        other = max(0.0, (after["busy"] - before["busy"]) - (after["own"] - before["own"]))
        share.update(other_processes_cpu_fraction=round(other / capacity, 4),
                     steal_fraction=round((after["steal"] - before["steal"]) / capacity, 4))


def write_results(stem: str | Path, data: dict[str, Any], markdown: list[str]) -> None:
    """Writes `<stem>.json` (`data` with the command and environment) and `<stem>.md` (`markdown`, after a line
    with the command), each atomically."""
    command = command_line()
    atomic_write_json(f"{stem}.json", {"command": command, "environment": environment(), **data})
    atomic_write_text(f"{stem}.md", "\n".join([markdown[0], "", f"Command: `{command}`", "", *markdown[1:]]) + "\n")
