#!/usr/bin/env python
"""SmartBERT on the real MiniLM-L6: accuracy vs. FLOPs and wall-clock with the skip gates on and off, next to
RomeBERT and PABEE trained with the same budget.

    HF_HUB_OFFLINE=1 flock /tmp/hf-multiexit-cpu.lock .venv/bin/python benchmarks/smartbert.py [--tasks sst2,rte]

Training: `hf-multiexit train --method smartbert` with `run_all.py`'s budget (SST-2: 4096 sentences, RTE: the whole
training set; 2 epochs, batch 32, lr 1e-4, exits 1e-3, 10% warm-up, seed 42) and 2 epochs of stage 2 (DeeBERT gets
2 + 2 in that budget), into `runs/smartbert/<task>-smartbert/`. RomeBERT, PABEE and DeeBERT (whose final exit is
the fine-tuned full-depth reference) are `run_all.py`'s models and sweeps in `runs/run_all/<task>-<method>/`, trained
here with the same command when missing.

Evaluation of SmartBERT on the dev set at batch 32 (`hf_multiexit.evaluation.TradeoffEvaluator`: real early-exit
runs, time = the fastest of `--repeats` passes, full depth re-timed after every setting, FLOPs from
`hf_multiexit.flops` with the layers, exit heads and gates each sample ran):
- gates on: strategy `skip` (a layer whose gate is >= r = 0.5 is skipped with no exit check, the others exit when
  `H(p) < S`) at each entropy threshold S of `THRESHOLDS`; S = 0 is skipping alone;
- gates off: strategy `entropy` at the same S (every layer runs until the exit; per-exit accuracy without gates),
  timed at two of them.
The wall-clock target is `wall_speedup / flops_speedup >= 0.85` for `skip` at batch 32.

Resumable: a trained model is not trained again, and a model whose sweep is in `runs/smartbert/<task>-smartbert[-reduced]-sweep.json` is
not swept again (`--resweep`). Results: `benchmarks/results/smartbert.json` and `.md`, written after each task.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from run_all import TASKS as BUDGETS
from run_all import sweep_model, task_args
from training_runs import DEFAULT_GLUE_DIR, ROOT, train_run
from transformers import AutoTokenizer

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.data import get_glue_task, load_glue, make_collator
from hf_multiexit.evaluation import TradeoffEvaluator, run_inference
from hf_multiexit.io import atomic_write_json, atomic_write_text
from hf_multiexit.metrics import logits_metrics
from hf_multiexit.models.multiexit_bert.exit_strategies import resolve_problem_type

TASKS = ("sst2", "rte")
BASELINES = ("romebert", "pabee")
REFERENCE = "deebert"
THRESHOLDS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.69)
TIMED_GATES_OFF = (0.4, 0.6)
"""Entropy thresholds S (natural log; ln 2 = 0.693); gates-off points are replayed from the cached exits, and timed
at `TIMED_GATES_OFF` only."""
STAGE2 = ["--stage2_num_train_epochs", "2"]
REDUCED = ["--max_train_samples", "1024", "--num_train_epochs", "1", "--stage2_num_train_epochs", "1"]
WALL_TARGET = 0.85
TOLERANCE = 0.01


def dev_set(task: str, model_dir: Path, glue_dir: str):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    split = get_glue_task(task).validation_splits[0]
    data = load_glue(task, data_dir=glue_dir, tokenizer=tokenizer, max_length=BUDGETS[task][1], splits=split)[split]
    return data, make_collator(tokenizer)


def hard_gate_pass(model, data, collator, task: str) -> dict:
    """One all-exits pass with hard gates (S = 0 path): per layer, the fraction of dev samples whose gate skips it,
    and per exit, the metric of the exit on its layer's output with the gates before it applied (the final exit
    reads the gated state), i.e. what each exit sees under `skip`."""
    skipped, logits, labels = [], [], []
    with torch.inference_mode():
        for start in range(0, len(data), 64):
            batch = collator([data[i] for i in range(start, min(start + 64, len(data)))])
            labels.append(batch.pop("labels").numpy())
            out = model(**batch, output_all_exits=True, gate_mode="hard")
            skipped.append(torch.stack([g >= model.config.gate_threshold for g in out.gate_probs], dim=1).float())
            logits.append(torch.stack(out.all_logits, dim=1).float().numpy())
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    problem_type = resolve_problem_type(model.config)
    return {
        "skip_rate_per_layer": torch.cat(skipped).mean(0).tolist(),
        "per_exit_hard_gates": [
            {"layer": layer, "metrics": logits_metrics(task, problem_type, logits[:, index], labels)}
            for index, layer in enumerate(model.config.exit_layers)
        ],
    }


def sweep_smartbert(task: str, out: Path, glue_dir: str, repeats: int) -> dict:
    model = MultiExitBertForSequenceClassification.from_pretrained(out).eval()
    data, collator = dev_set(task, out, glue_dir)
    result = hard_gate_pass(model, data, collator, task)
    gates_on = TradeoffEvaluator(model, data, collator, task=task, batch_size=32, repeats=repeats, progress=False)
    points = [gates_on.point("skip", s) for s in THRESHOLDS]
    for point in points:  # layers run, which the FLOPs count but the point does not report
        run = run_inference(model, data, collator, 32, exit_strategy="skip", **point["params"])
        point["avg_layers_run"] = float(run.layers_run.mean())
    result["gates_on"] = gates_on.report(points)
    # Gates off: the all-exits pass (per-exit accuracy, cached logits) then runs every layer, like `entropy` does.
    model.config.gate_mode = "off"
    gates_off = TradeoffEvaluator(model, data, collator, task=task, batch_size=32, repeats=repeats, progress=False)
    result["gates_off"] = gates_off.report([gates_off.point("entropy", s, wall_clock=s in TIMED_GATES_OFF) for s in THRESHOLDS])
    return result


def baseline_report(task: str, method: str, glue_dir: str) -> dict:
    out = ROOT / "runs" / "run_all" / f"{task}-{method}"
    train_report, command = train_run(method, task, out, task_args(task), glue_dir)
    path = out / "report.json"
    if not path.exists():
        report = sweep_model(task, out, glue_dir)
        report.update(method=method, command=command, train_runtime=train_report["train_runtime"])
        atomic_write_json(path, report)
    return json.loads(path.read_text())


def fmt(value, digits=3, suffix="") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def best_within(points: list[dict], metric: str, reference: float) -> dict | None:
    """The point with the largest FLOPs speed-up whose metric is within TOLERANCE of the reference."""
    good = [p for p in points if p["metrics"][metric] >= reference - TOLERANCE]
    return max(good, key=lambda p: p["flops_speedup"]) if good else None


def at_flops(points: list[dict], metric: str, speedup: float) -> float | None:
    """The metric at a FLOPs speed-up, linearly interpolated between the sweep's points (None outside their range)."""
    ordered = sorted(points, key=lambda p: p["flops_speedup"])
    xs = [p["flops_speedup"] for p in ordered]
    if not xs or not xs[0] <= speedup <= xs[-1]:
        return None
    return float(np.interp(speedup, xs, [p["metrics"][metric] for p in ordered]))


def task_section(task: str, entry: dict) -> list[str]:
    metric, reference = entry["metric"], entry["reference"]
    on, off = entry["smartbert"]["gates_on"], entry["smartbert"]["gates_off"]
    lines = [
        f"## {task.upper()} ({metric}; dev {on['num_samples']} samples; reference = fine-tuned full depth "
        f"(DeeBERT's final exit) {reference:.3f})", "",
        f"Command: `{entry.get('command', '')}`. SmartBERT training: {entry['train_runtime']:.0f} s"
        + (" (reduced budget: 1024 examples, 1 + 1 epochs; the baselines had the full one)" if entry.get("reduced_budget") else "")
        + ". Hard-gate skip rate per layer on dev: "
        + ", ".join(f"L{i + 1} {r:.2f}" for i, r in enumerate(entry["smartbert"]["skip_rate_per_layer"])) + ".", "",
        "Per-exit accuracy, gates on (exits on their layer's output, hard gates before) / gates off (every layer runs):", "",
        "| | " + " | ".join(f"exit {e['layer']}" for e in on["per_exit"]) + " |",
        "|---" * (len(on["per_exit"]) + 1) + "|",
        "| gates on | " + " | ".join(f"{e['metrics'][metric]:.3f}" for e in entry["smartbert"]["per_exit_hard_gates"]) + " |",
        "| gates off | " + " | ".join(f"{e['metrics'][metric]:.3f}" for e in off["per_exit"]) + " |", "",
        f"SmartBERT at batch 32 (full depth: {on['full_depth']['seconds']:.2f} s, "
        f"{on['full_depth']['flops_per_sample'] / 1e6:.0f} MFLOPs/sample, {metric} {off['full_depth']['metrics'][metric]:.3f} "
        "with every layer run):", "",
        f"| strategy | S | {metric} | avg layers run | avg exit layer | FLOPs speed-up | wall-clock speed-up | wall / FLOPs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, report in (("skip (gates on)", on), ("entropy (gates off)", off)):
        for p in report["points"]:
            layers_run = p.get("avg_layers_run", p["avg_exit_layer"])
            lines.append(
                f"| {name} | {p['params']['entropy_threshold']:.2f} | {p['metrics'][metric]:.3f} | {fmt(layers_run, 2)} | "
                f"{p['avg_exit_layer']:.2f} | {p['flops_speedup']:.2f}x | {fmt(p['wall_speedup'], 2, 'x')} | "
                f"{fmt(p['wall_speedup'] / p['flops_speedup'] if p['wall_speedup'] else None)} |"
            )
    ratios = [p["wall_speedup"] / p["flops_speedup"] for p in on["points"]]
    met = sum(r >= WALL_TARGET for r in ratios)
    lowest = min(range(len(ratios)), key=ratios.__getitem__)
    lines += ["", f"Target wall / FLOPs >= {WALL_TARGET} for `skip`: met at {met} of {len(ratios)} thresholds (lowest "
              f"{ratios[lowest]:.3f} at S = {on['points'][lowest]['params']['entropy_threshold']:.2f})."]
    lines += ["", f"Next to the baselines (same budget; FLOPs speed-up of the best point within {TOLERANCE:.2f} of the "
              "reference, metric interpolated at 2x and 3x FLOPs speed-up):", "",
              "| method | strategy | full depth | @2x FLOPs | @3x FLOPs | FLOPs speed-up within 1 pt | wall-clock there | train s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    rows = [("smartbert", "skip", on, entry["train_runtime"]), ("smartbert", "entropy, gates off", off, entry["train_runtime"])]
    for method in BASELINES:
        report = entry["baselines"][method]
        for strategy in ("entropy", "patience"):
            rows.append((method, strategy, {**report, "points": [p for p in report["points"] if p["strategy"] == strategy]}, report["train_runtime"]))
    for method, strategy, report, seconds in rows:
        best = best_within(report["points"], metric, reference)
        lines.append(
            f"| {method} | {strategy} | {report['full_depth']['metrics'][metric]:.3f} | "
            f"{fmt(at_flops(report['points'], metric, 2.0))} | {fmt(at_flops(report['points'], metric, 3.0))} | "
            f"{fmt(best and best['flops_speedup'], 2, 'x')} | {fmt(best and best['wall_speedup'], 2, 'x')} | {seconds:.0f} |"
        )
    return lines + [""]


def write_results(entries: dict, command: str) -> None:
    atomic_write_json(ROOT / "benchmarks" / "results" / "smartbert.json", {
        "command": command, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
        "thresholds": list(THRESHOLDS), "wall_target": WALL_TARGET, "tasks": entries,
    })
    lines = ["# SmartBERT on MiniLM-L6: skip gates on/off, entropy thresholds, next to RomeBERT and PABEE", "",
             "Commands (each task's section names the one that produced it): "
             + ", ".join(sorted({f"`{e.get('command', command)}`" for e in entries.values()})), "",
             "Same budget for every method (`benchmarks/run_all.py`: 2 epochs, batch 32, lr 1e-4, exits 1e-3, seed 42; "
             "SmartBERT and DeeBERT 2 + 2 epochs). Wall-clock at batch 32 on 2 CPU threads, against full depth timed in "
             "the same process; the baselines' wall-clock comes from `run_all.py`'s own sweep. FLOPs count the layers, "
             "exit heads and gates each sample ran (`hf_multiexit/flops.py`).", ""]
    for task, entry in entries.items():
        lines += task_section(task, entry)
    atomic_write_text(ROOT / "benchmarks" / "results" / "smartbert.md", "\n".join(lines))
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--glue_dir", default=DEFAULT_GLUE_DIR)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--resweep", action="store_true")
    parser.add_argument("--reduced", action="store_true", help="SmartBERT on 1024 training examples, 1 + 1 epochs (a "
                        "smaller budget than the baselines'), into runs/smartbert/<task>-smartbert-reduced/.")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if any(t not in TASKS for t in tasks):
        parser.error(f"--tasks must be a subset of {list(TASKS)}")
    command = "python benchmarks/smartbert.py " + " ".join(sys.argv[1:])
    results_path = ROOT / "benchmarks" / "results" / "smartbert.json"
    entries = json.loads(results_path.read_text())["tasks"] if results_path.exists() else {}
    torch.manual_seed(0)
    for task in tasks:
        out = ROOT / "runs" / "smartbert" / f"{task}-smartbert{'-reduced' if args.reduced else ''}"
        budget = [*task_args(task), *STAGE2, *(REDUCED if args.reduced else [])]
        train_report, train_command = train_run("smartbert", task, out, budget, args.glue_dir)
        sweep_path = out.parent / f"{out.name}-sweep.json"
        if args.resweep or not sweep_path.exists():
            print(f"sweeping smartbert on {task}", flush=True)
            atomic_write_json(sweep_path, sweep_smartbert(task, out, args.glue_dir, args.repeats))
        baselines = {m: baseline_report(task, m, args.glue_dir) for m in BASELINES}
        reference_report = baseline_report(task, REFERENCE, args.glue_dir)
        metric = reference_report["primary_metric"]
        entries[task] = {
            "metric": metric, "reference": reference_report["full_depth"]["metrics"][metric], "reduced_budget": args.reduced,
            "command": command, "train_command": train_command, "train_runtime": train_report["train_runtime"],
            "per_exit_train_report": train_report["per_exit"],
            "smartbert": json.loads(sweep_path.read_text()), "baselines": baselines,
        }
        write_results(entries, command)


if __name__ == "__main__":
    main()
