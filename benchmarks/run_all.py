#!/usr/bin/env python
"""The results table: every training method on real MiniLM-L6 for SST-2, RTE, CoLA and STS-B, one budget and seed.

    .venv/bin/python benchmarks/run_all.py                                  # everything: hours on 2 CPU cores
    .venv/bin/python benchmarks/run_all.py --tasks sst2 --methods pabee,deebert   # a part of it

For each (task, method): `hf-multiexit train` with the budget below into `runs/run_all/<task>-<method>/`, then a
trade-off sweep of the trained model on the dev set (`hf_multiexit.evaluation.TradeoffEvaluator`): a dense grid
replayed from one all-exits pass for entropy (classification) and patience (every task), the `skip` strategy for
SmartBERT, and real early-exit runs at batch 32, timed against full depth, at the points the table quotes.
Results: `runs/run_all/<task>-<method>/report.json` per model, `benchmarks/results/<task>.json` and `<task>.png`
per task, and the table between the `results` markers in README.md.

Resumable per (task, method): a model whose `eval_results.json` exists is not trained again, a sweep whose
`report.json` exists is not run again (`--resweep` re-runs the sweeps, e.g. to re-time on a quiet machine).
A task without any model in `--runs_dir` keeps the table of its committed `benchmarks/results/<task>.json`, so a
run of one task rewrites only that task's part of the README.

The full-depth reference ("fine-tuned") is DeeBERT's final exit: DeeBERT's first stage is plain fine-tuning of
the backbone and the final classifier, and its second stage freezes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from training_runs import DEFAULT_GLUE_DIR, ROOT, train_run
from transformers import AutoTokenizer

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.data import get_glue_task, load_glue, make_collator
from hf_multiexit.evaluation import TradeoffEvaluator, plot_report, tradeoff_summary
from hf_multiexit.io import atomic_write_json, atomic_write_text
from hf_multiexit.models.multiexit_bert import ExitConfig
from hf_multiexit.trainers import METHODS

TASKS = {"sst2": (4096, 64), "rte": (None, 128), "cola": (4096, 64), "stsb": (4096, 128)}
"""Per task: training examples (None: the whole training set) and maximum tokens (training and dev)."""
BUDGET = ["--num_train_epochs", "2", "--learning_rate", "1e-4", "--exit_learning_rate", "1e-3", "--warmup_steps", "0.1",
          "--exit_pooling", "mean"]
"""The same for every method: 2 epochs, batch 32, lr 1e-4 (exits 1e-3), 10% warm-up, mean-pooled exits (MiniLM is a
mean-pooling model, see README), seed 42; each method keeps its paper's objective, head style and other defaults."""
METHOD_ARGS = {"smartbert": ["--stage2_num_train_epochs", "2"]}
"""Second stages get the same 2 epochs as the first (DeeBERT's does by default)."""
REFERENCE_METHOD = "deebert"
SPEEDUPS = (1.5, 2.0)
TOLERANCE = 0.01  # one point of the metric


CALIBRATION_SPLIT = 0.5
"""With `--calibrate_max_drop`: the share of twice the task's training budget held out for calibrating the saved exit
rule (`hf-multiexit train --calibration_split`), so the model still trains on the budget's number of examples and
calibration gets as many (Learn-then-Test certifies a 1% risk only with a few hundred tested samples or more). A task
trained on its whole training set has nothing to double; it is not calibrated here."""


def task_args(task: str, calibrate_max_drop: float | None = None) -> list[str]:
    samples, max_length = TASKS[task]
    if calibrate_max_drop is None or samples is None:
        calibration = []
    else:
        samples = round(samples / (1 - CALIBRATION_SPLIT))
        calibration = ["--calibration_split", str(CALIBRATION_SPLIT), "--calibrate_max_drop", str(calibrate_max_drop)]
    return ["--max_length", str(max_length), *([] if samples is None else ["--max_train_samples", str(samples)]),
            *calibration, *BUDGET]


def sweep_grid(model) -> dict:
    """Strategies and values to sweep: entropy over [0, ln C] (dense, for classification), patience 0..E-1, and
    SmartBERT's skip strategy at the entropy thresholds when the model has gates; and the saved rule's strategy
    (a calibrated one may be `confidence`) with the evaluation set's default grid."""
    grid = {"patience": list(range(len(model.config.exit_layers)))}
    if model.config.num_labels > 1:
        grid["entropy"] = [round(float(v), 4) for v in np.linspace(0.0, np.log(model.config.num_labels), 31)]
        if model.config.use_skip_gates:
            grid["skip"] = grid["entropy"][::3]
    saved = model.exit_config.exit_strategy
    if saved != "none":
        grid.setdefault(saved, None)
    return grid


def saved_rule_point(report: dict, exit_config: ExitConfig) -> dict | None:
    """The sweep point of the model's saved exit rule (`TradeoffEvaluator.sweep` adds it); None for `none`."""
    return next((p for p in report["points"] if p["strategy"] == exit_config.exit_strategy
                 and all(np.isclose(getattr(exit_config, k), v) for k, v in p["params"].items())), None)


def nearest(points: list[dict], speedup: float) -> dict:
    return min(points, key=lambda p: abs(p["layer_speedup"] - speedup))


def sweep_model(task: str, out: Path, glue_dir: str, reference: float | None) -> dict:
    """The trade-off report of the model in `out`, with wall-clock runs at each strategy's 1.5x / 2x points and its
    best points within one point of its own full depth and of `reference` (None: only its own)."""
    model = MultiExitBertForSequenceClassification.from_pretrained(out).eval()
    saved = model.exit_config
    tokenizer = AutoTokenizer.from_pretrained(out)
    split = get_glue_task(task).validation_splits[0]
    data = load_glue(task, data_dir=glue_dir, tokenizer=tokenizer, max_length=TASKS[task][1], splits=split)[split]
    evaluator = TradeoffEvaluator(model, data, make_collator(tokenizer), task=task, batch_size=32, repeats=2)
    dense = evaluator.sweep(sweep_grid(model), wall_clock=False)
    draft = evaluator.report(dense)
    rule = saved_rule_point(draft, saved)
    chosen = set() if rule is None else {id(rule)}
    for strategy in dict.fromkeys(p["strategy"] for p in dense):
        points = [p for p in dense if p["strategy"] == strategy]
        best = [tradeoff_summary(draft, strategy, tolerance=TOLERANCE, reference=r)["operating_point"] for r in (None, reference)]
        for point in [*best, *(nearest(points, s) for s in SPEEDUPS)]:
            if point is not None:
                chosen.add(id(point))
    points = [evaluator.point(p["strategy"], *p["params"].values(), wall_clock=True) if id(p) in chosen else p for p in dense]
    report = evaluator.report(points)
    report["saved_rule"] = {"exit_config": saved.to_dict(), "point": saved_rule_point(report, saved)}
    return report


def calibrated_summary(report: dict) -> dict | None:
    """For a model whose saved rule was calibrated: the rule, its dev metric and layer speed-up (full depth when
    calibration fell back), and the fastest dev point of any strategy within one point of its own full depth (the
    oracle in hindsight, chosen on the data it is scored on) with the ratio of the two speed-ups."""
    rule = report.get("saved_rule")
    if rule is None or rule["exit_config"].get("calibration") is None:
        return None
    name, full = report["primary_metric"], report["full_depth"]["metrics"][report["primary_metric"]]
    point = rule["point"] or {"params": {}, "metrics": report["full_depth"]["metrics"], "layer_speedup": 1.0}
    strategies = sorted({p["strategy"] for p in report["points"]})
    within = {s: tradeoff_summary(report, s, tolerance=TOLERANCE)["fastest_within"]["1"] for s in strategies}
    oracle = max((s for s in strategies if within[s] is not None), key=lambda s: within[s]["layer_speedup"])
    return {
        "strategy": rule["exit_config"]["exit_strategy"], "params": point["params"], "metric": point["metrics"][name],
        "metric_drop": full - point["metrics"][name], "accuracy": point["metrics"].get("accuracy"),
        "full_accuracy": report["full_depth"]["metrics"].get("accuracy"), "layer_speedup": point["layer_speedup"],
        "wall_speedup": point.get("wall_speedup"), "calibration": rule["exit_config"]["calibration"],
        "oracle": {"strategy": oracle, **within[oracle]},
        "ratio_to_oracle": point["layer_speedup"] / within[oracle]["layer_speedup"],
    }


def reference_metric(reports: dict[str, dict]) -> float | None:
    """The fine-tuned full-depth metric (the reference method's final exit), None before that method has run."""
    report = reports.get(REFERENCE_METHOD)
    return None if report is None else report["full_depth"]["metrics"][report["primary_metric"]]


def best_strategy(report: dict, reference: float) -> tuple[str, dict]:
    """The strategy with the largest layer speed-up within `TOLERANCE` of the reference metric (where none gets
    there: the best metric at the largest quoted speed-up)."""
    summaries = {s: tradeoff_summary(report, s, SPEEDUPS, TOLERANCE, reference=reference) for s in {p["strategy"] for p in report["points"]}}

    def rank(s: str) -> tuple:
        summary = summaries[s]
        return summary["speedup_within_tolerance"] or 0.0, summary["at_speedup"][str(SPEEDUPS[-1])] or 0.0, s == "entropy"

    name = max(sorted(summaries), key=rank)
    return name, summaries[name]


def fmt(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def task_table(task: str, rows: list[dict]) -> list[str]:
    metric = rows[0]["metric"]
    lines = [
        f"**{task.upper()}** ({metric}; reference = fine-tuned full depth, {fmt(rows[0]['reference'])})", "",
        f"| method | strategy | full depth | @{SPEEDUPS[0]}x layers | @{SPEEDUPS[1]}x layers | speed-up within 1 pt "
        "of reference | wall-clock speed-up there (batch 32) | FLOPs speed-up there | oracle | train time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    calibrated = [row for row in rows if row.get("calibrated")]
    for row in rows:
        s, point = row["summary"], row["summary"]["operating_point"] or {}
        within = "none" if s["speedup_within_tolerance"] is None else f"{s['speedup_within_tolerance']:.2f}x"
        oracle = "–" if row["oracle"] is None else f"{row['oracle']['agree_final']['layer_speedup']:.2f}x"
        lines.append(
            f"| {row['method']} | {row['strategy']} | {fmt(s['full_depth'])} | {fmt(s['at_speedup'][str(SPEEDUPS[0])])} | "
            f"{fmt(s['at_speedup'][str(SPEEDUPS[1])])} | {within} | "
            f"{fmt(point.get('wall_speedup'), 2)}{'x' if point.get('wall_speedup') else ''} | "
            f"{fmt(point.get('flops_speedup'), 2)}{'x' if point.get('flops_speedup') else ''} | {oracle} | "
            f"{row['train_runtime']:.0f} s |"
        )
    if calibrated:
        lines += [
            "", f"Saved exit rules, calibrated on the held-out training share (max_drop "
            f"{calibrated[0]['calibrated']['calibration']['max_drop']}, delta "
            f"{calibrated[0]['calibrated']['calibration']['delta']}, criterion "
            f"{calibrated[0]['calibrated']['calibration']['criterion']}), measured on dev, which calibration never saw:", "",
            f"| method | saved rule | {metric}: full depth / saved rule | "
            + ("" if metric == "accuracy" else "accuracy: full depth / saved rule | ")
            + "layer speed-up | wall-clock (batch 32) | oracle in hindsight (fastest dev point within 1 pt) | ratio |",
            "|---|---|---:|" + ("" if metric == "accuracy" else "---:|") + "---:|---:|---|---:|",
        ]
        for row in calibrated:
            c, oracle = row["calibrated"], row["calibrated"]["oracle"]
            rule = c["strategy"] + "".join(f" {k}={v:.4g}" for k, v in c["params"].items())
            accuracy = "" if metric == "accuracy" else f"{fmt(c['full_accuracy'])} / {fmt(c['accuracy'])} | "
            lines.append(
                f"| {row['method']} | {rule} | {fmt(row['summary']['full_depth'])} / {fmt(c['metric'])} | "
                f"{accuracy}{c['layer_speedup']:.2f}x | "
                f"{fmt(c['wall_speedup'], 2)}{'x' if c['wall_speedup'] else ''} | {oracle['strategy']} "
                f"{oracle['layer_speedup']:.2f}x | {c['ratio_to_oracle']:.2f} |"
            )
        lines.append("")
    return lines + [""]


def write_readme_table(tables: list[str]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start not in text or end not in text:
        raise ValueError(f"README.md has no {start} ... {end} markers for the results table.")
    body = "\n".join([start, "", *tables, end])
    atomic_write_text(readme, re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: body, text, flags=re.S))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"Comma-separated subset of {list(TASKS)}.")
    parser.add_argument("--methods", default=",".join(sorted(METHODS)), help=f"Comma-separated subset of {sorted(METHODS)}.")
    parser.add_argument("--glue_dir", default=DEFAULT_GLUE_DIR)
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / "run_all"))
    parser.add_argument("--resweep", action="store_true", help="Run the sweeps again even where report.json exists.")
    parser.add_argument("--calibrate_max_drop", type=float, default=None,
                        help="Train with a held-out calibration share (CALIBRATION_SPLIT of twice the budget) and save "
                             "the exit rule calibrated at this budget (`hf-multiexit train --calibrate_max_drop`).")
    parser.add_argument("--train_only", action="store_true",
                        help="Train the selected models and stop: sweep later, alone on the machine, since sweeps time.")
    args = parser.parse_args()
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    for name, valid in (("task", TASKS), ("method", METHODS)):
        bad = [x for x in (tasks if name == "task" else methods) if x not in valid]
        if bad:
            parser.error(f"unknown {name}(s) {bad}; valid: {sorted(valid)}")
    torch.manual_seed(0)
    tables = []
    for task in TASKS:
        rows, reports = [], {}
        for method in sorted(METHODS, key=lambda m: m != REFERENCE_METHOD):
            out = Path(args.runs_dir) / f"{task}-{method}"
            selected = task in tasks and method in methods
            if not selected and not (out / "report.json").exists():
                continue
            budget = [*task_args(task, args.calibrate_max_drop), *METHOD_ARGS.get(method, [])]
            train_report, command = train_run(method, task, out, budget, args.glue_dir) if selected else (
                json.loads((out / "eval_results.json").read_text()), None)
            if args.train_only:
                continue
            report_path = out / "report.json"
            if selected and (args.resweep or not report_path.exists()):
                print(f"sweeping {method} on {task}", flush=True)
                report = sweep_model(task, out, args.glue_dir, reference_metric(reports))
                report.update(method=method, command=command, train_runtime=train_report["train_runtime"])
                atomic_write_json(report_path, report)
            reports[method] = json.loads(report_path.read_text())
        reference = reference_metric(reports)
        committed = ROOT / "benchmarks" / "results" / f"{task}.json"
        if not reports and not args.train_only and committed.exists():
            # No model of this task here: its table comes from the results the run that made them committed.
            tables += task_table(task, json.loads(committed.read_text())["rows"])
            continue
        if args.train_only or reference is None:
            continue
        metric = reports[REFERENCE_METHOD]["primary_metric"]
        for method, report in reports.items():
            strategy, summary = best_strategy(report, reference)
            rows.append({"method": method, "metric": metric, "reference": reference, "strategy": strategy,
                         "summary": summary, "train_runtime": report["train_runtime"], "command": report["command"],
                         "per_exit": [e["metrics"][metric] for e in report["per_exit"]], "oracle": report["oracle"],
                         "calibrated": calibrated_summary(report)})
        tables += task_table(task, rows)
        if task not in tasks:  # its results files stay as the run that made them wrote them
            continue
        combined = {**reports[REFERENCE_METHOD], "points": [
            {**p, "strategy": f"{row['method']} ({p['strategy']})"}
            for row in rows for p in reports[row["method"]]["points"] if p["strategy"] == row["strategy"]
        ]}
        plot_report(combined, ROOT / "benchmarks" / "results" / f"{task}.png", title=f"{task}: each method's best strategy")
        atomic_write_json(ROOT / "benchmarks" / "results" / f"{task}.json", {
            "task": task, "metric": metric, "reference": reference, "budget": task_args(task, args.calibrate_max_drop),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(), "rows": rows,
        })
    write_readme_table(tables)
    print("\n".join(tables))


if __name__ == "__main__":
    main()
