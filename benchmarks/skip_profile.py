#!/usr/bin/env python
"""Where SmartBERT's `skip` strategy spends its time at batch 32, next to full depth, on the real MiniLM-L6 and the
SST-2 dev set: why its wall-clock speed-up falls short of its FLOPs speed-up at some thresholds.

    HF_HUB_OFFLINE=1 flock /tmp/hf-multiexit-cpu.lock .venv/bin/python benchmarks/skip_profile.py [--threshold 0.6]

Model: `runs/smartbert/sst2-smartbert` (trained by `benchmarks/smartbert.py`). Forward hooks time every call of the
embeddings, the skip gates, the encoder layers and the exit heads. A call is a "full-batch" call when it gets every
sample of the batch as it entered the model, else a "straggler" call (the samples still running after others left
or skipped the layer). `rest` is the forward time no hooked module accounts for: the exit loop's own work (gate
decisions, compaction, padding trims, counters). Times are the fastest of `--repeats` interleaved rounds of
(full depth, skip); FLOPs as `hf_multiexit.flops` counts them for the evaluator (real tokens, not padding).
Results: `benchmarks/results/skip_profile.json` and `.md`.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone

import torch
from smartbert import dev_set
from torch.utils.data import Subset
from training_runs import DEFAULT_GLUE_DIR, ROOT

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.evaluation import InferenceResult, run_inference
from hf_multiexit.flops import full_depth_flops, sample_flops
from hf_multiexit.io import atomic_write_json, atomic_write_text

MODEL = ROOT / "runs" / "smartbert" / "sst2-smartbert"
COMPONENTS = ("embeddings", "skip gates", "layers", "exit heads")


class CallTimer:
    """Forward hooks that add each call's time, rows and padded tokens to `(component, kind)`, where kind is
    `full batch` when the call gets as many rows as the model call it is part of, else `stragglers`."""

    def __init__(self, model):
        encoder = model.base_model
        groups = {"embeddings": [encoder.embeddings], "skip gates": list(encoder.skip_gates),
                  "layers": list(encoder.encoder.layer), "exit heads": list(encoder.exits)}
        self.batch_rows, self.enabled, self._starts = 0, False, []
        self.totals = defaultdict(lambda: {"seconds": 0.0, "calls": 0, "rows": 0, "padded_tokens": 0})
        model.register_forward_pre_hook(self._batch, with_kwargs=True)
        for component, modules in groups.items():
            for module in modules:
                module.register_forward_pre_hook(self._start, with_kwargs=True)
                module.register_forward_hook(self._stop(component), with_kwargs=True)

    def _batch(self, module, args, kwargs):
        self.batch_rows = kwargs["input_ids"].shape[0]

    def _start(self, module, args, kwargs):
        self._starts.append(time.perf_counter())

    def _stop(self, component):
        def hook(module, args, kwargs, output):
            seconds = time.perf_counter() - self._starts.pop()
            if not self.enabled:
                return
            first = args[0] if args else kwargs["input_ids"]  # the embeddings get keyword arguments
            kind = "full batch" if first.shape[0] == self.batch_rows else "stragglers"
            entry = self.totals[component, kind]
            entry["seconds"] += seconds
            entry["calls"] += 1
            entry["rows"] += first.shape[0]
            entry["padded_tokens"] += first.shape[0] * first.shape[1]
        return hook


def timed_pass(model, data, collator, timer: CallTimer, **exit_kwargs) -> tuple[InferenceResult, dict]:
    """One `run_inference` pass at batch 32 and its per-component totals."""
    timer.totals.clear()
    timer.enabled = True
    run = run_inference(model, data, collator, 32, **exit_kwargs)
    timer.enabled = False
    return run, {key: dict(value) for key, value in timer.totals.items()}


def profile(threshold: float, repeats: int, glue_dir: str) -> dict:
    model = MultiExitBertForSequenceClassification.from_pretrained(MODEL).eval()
    data, collator = dev_set("sst2", MODEL, glue_dir)
    timer = CallTimer(model)
    settings = {"none": {"exit_strategy": "none"}, "skip": {"exit_strategy": "skip", "entropy_threshold": threshold}}
    for kwargs in settings.values():  # warm-up
        timed_pass(model, Subset(data, range(64)), collator, timer, **kwargs)
    best = {}
    for _ in range(repeats):
        for name, kwargs in settings.items():
            run, parts = timed_pass(model, data, collator, timer, **kwargs)
            if name not in best or run.seconds < best[name][0].seconds:
                best[name] = run, parts
    lengths = best["none"][0].lengths
    full_flops = float(full_depth_flops(model.config, lengths).mean())
    result = {}
    for name, (run, parts) in best.items():
        flops = float(sample_flops(model.config, lengths, run.layers_run, run.exit_checks, gates_run=run.exit_layers).mean()) if name == "skip" else full_flops
        result[name] = {
            "seconds": run.seconds, "flops_per_sample": flops, "parts": {f"{c}/{k}": v for (c, k), v in sorted(parts.items())},
            "rest_seconds": run.seconds - sum(v["seconds"] for v in parts.values()),
            "avg_layers_run": float(run.layers_run.mean()), "avg_exit_layer": float(run.exit_layers.mean()),
        }
    skip, full = result["skip"], result["none"]
    result["wall_speedup"] = full["seconds"] / skip["seconds"]
    result["flops_speedup"] = full_flops / skip["flops_per_sample"]
    result["wall_over_flops"] = result["wall_speedup"] / result["flops_speedup"]
    return {"threshold": threshold, "repeats": repeats, "num_samples": len(lengths), "batches": math.ceil(len(lengths) / 32), **result}


def markdown(report: dict, command: str) -> str:
    lines = [
        "# Where `skip` spends its time (SmartBERT, SST-2 dev, batch 32)", "",
        f"Generated by `benchmarks/skip_profile.py` on {report['created']}: `{command}`. Model `runs/smartbert/sst2-smartbert`; "
        f"{report['num_samples']} sentences in {report['batches']} batches; {report['torch_threads']} CPU threads; fastest of "
        f"{report['repeats']} interleaved rounds.", "",
        f"`skip` at S = {report['threshold']}: {report['skip']['avg_layers_run']:.2f} layers run and exit layer "
        f"{report['skip']['avg_exit_layer']:.2f} on average; wall-clock speed-up {report['wall_speedup']:.2f}x, FLOPs "
        f"speed-up {report['flops_speedup']:.2f}x, wall / FLOPs {report['wall_over_flops']:.3f}.", "",
        "| run | component | calls | rows | padded tokens | seconds | share of the run | us per padded token | us per call |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("none", "skip"):
        run = report[name]
        for key, part in run["parts"].items():
            lines.append(
                f"| {name} | {key} | {part['calls']} | {part['rows']} | {part['padded_tokens']} | {part['seconds']:.3f} | "
                f"{part['seconds'] / run['seconds']:.1%} | {1e6 * part['seconds'] / part['padded_tokens']:.2f} | "
                f"{1e6 * part['seconds'] / part['calls']:.0f} |")
        lines.append(f"| {name} | rest (exit loop) | | | | {run['rest_seconds']:.3f} | {run['rest_seconds'] / run['seconds']:.1%} | | |")
        lines.append(f"| {name} | **total** | | | | {run['seconds']:.3f} | | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold", type=float, default=0.6, help="entropy threshold S of `skip`")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of (full depth, skip); the fastest counts")
    parser.add_argument("--glue_dir", default=DEFAULT_GLUE_DIR)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not (MODEL / "config.json").exists():
        sys.exit(f"{MODEL} is missing: train it with `python benchmarks/smartbert.py --tasks sst2`.")
    command = "python benchmarks/skip_profile.py " + " ".join(sys.argv[1:])
    report = {"command": command, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              **profile(args.threshold, args.repeats, args.glue_dir)}
    results = ROOT / "benchmarks" / "results"
    atomic_write_json(results / "skip_profile.json", report)
    text = markdown(report, command)
    atomic_write_text(results / "skip_profile.md", text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
