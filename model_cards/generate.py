#!/usr/bin/env python
"""Generates the model cards of the checkpoints this project publishes, from the trained models and their sweeps.

    flock /tmp/hf-multiexit-cpu.lock .venv/bin/python model_cards/generate.py --evaluate   # every trained method
    .venv/bin/python model_cards/generate.py --methods pabee            # from run_all's sweep, no model runs

For each model `<runs>/<task>-<method>` trained by `benchmarks/run_all.py` (through `hf-multiexit train`, so it has
`eval_results.json`), into `model_cards/<method>-minilm-l6-<task>/`:
1. `report.json` and `trade_off.png`: the sweep `benchmarks/run_all.py` wrote beside the model (reading JSON and
   drawing the plot: seconds, no model runs), or with `--evaluate` a new `hf-multiexit evaluate` sweep on the task's
   dev set of entropy thresholds (classification) and patience values that includes the model's saved exit rule, so
   that the card's `model-index` reports that rule too; every point a timed early-exit run (minutes per model: run it
   under the CPU lock).
2. `README.md`: the card `hf-multiexit push` publishes with that model (`push --card_only`).

Publishing a model is then
    hf-multiexit push --model <runs>/<task>-<method> --repo_id <org>/<method>-minilm-l6-<task> \\
        --report model_cards/<method>-minilm-l6-<task>/report.json --base_model sentence-transformers/all-MiniLM-L6-v2 \\
        --license apache-2.0
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from hf_multiexit.cli import main as cli
from hf_multiexit.data import get_glue_task
from hf_multiexit.evaluation import plot_report
from hf_multiexit.io import atomic_write_json
from hf_multiexit.models.multiexit_bert import ExitConfig

ROOT = Path(__file__).resolve().parents[1]
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LICENSE = "apache-2.0"  # all-MiniLM-L6-v2's
ENTROPY_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def sweep_arguments(model_dir: Path, task: str) -> list[str]:
    """`hf-multiexit evaluate` sweep flags: entropy (classification) and patience, and the saved rule's strategy and
    value, so that the report has a point for the exit rule the checkpoint ships with."""
    saved = ExitConfig.from_pretrained(model_dir)
    strategies = ["patience"] if get_glue_task(task).is_regression else ["entropy", "patience"]
    thresholds = set(ENTROPY_GRID)
    if saved.exit_strategy in ("entropy", "confidence", "skip"):
        thresholds.add(getattr(saved, "confidence_threshold" if saved.exit_strategy == "confidence" else "entropy_threshold"))
    if saved.exit_strategy not in strategies and saved.exit_strategy != "none":
        strategies.append(saved.exit_strategy)
    flags = ["--exit_strategy", ",".join(strategies)]
    if any(s in strategies for s in ("entropy", "confidence", "skip")):
        flags += ["--thresholds", ",".join(f"{t:g}" for t in sorted(thresholds))]
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/run_all", help="Folder of <task>-<method> models (from the repo root).")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--methods", help="Comma-separated methods (default: every trained one).")
    parser.add_argument("--org", default="hf-multiexit", help="Hub organisation the cards' repo ids name.")
    parser.add_argument("--data_dir", default=os.environ.get("GLUE_DIR") or str(ROOT.parent / "shared" / "data" / "glue"))
    parser.add_argument("--evaluate", action="store_true", help="Sweep with hf-multiexit evaluate (saved rule included) "
                        "instead of reusing run_all's report.json.")
    args = parser.parse_args()
    os.chdir(ROOT)  # the reports record the model and plot paths as given: keep them relative to the repository
    runs = Path(args.runs)
    wanted = args.methods.split(",") if args.methods else None
    models = sorted(p for p in runs.glob(f"{args.task}-*") if (p / "eval_results.json").is_file())
    if wanted:
        models = [p for p in models if p.name.split("-", 1)[1] in wanted]
    if not models:
        raise SystemExit(f"No trained {args.task} models{' for ' + args.methods if wanted else ''} under {runs}; "
                         "train them with benchmarks/run_all.py.")
    for model_dir in models:
        method = json.loads((model_dir / "eval_results.json").read_text())["method"]
        name = f"{method}-minilm-l6-{args.task}"
        out = Path("model_cards") / name
        report, plot = out / "report.json", out / "trade_off.png"
        if args.evaluate:
            print(f"{name}: evaluating {model_dir}", flush=True)
            code = cli(["evaluate", "--model", str(model_dir), "--task", args.task, "--data_dir", args.data_dir,
                        *sweep_arguments(model_dir, args.task), "--output", str(report), "--plot", str(plot)])
            if code:
                raise SystemExit(f"{name}: hf-multiexit evaluate failed ({code})")
            sweep = json.loads(report.read_text())
        elif (model_dir / "report.json").is_file():
            sweep = json.loads((model_dir / "report.json").read_text())
            plot_report(sweep, plot, title=f"{name}: {sweep['num_samples']} {args.task} dev samples, batch {sweep['batch_size']}")
        else:
            raise SystemExit(f"{name}: {model_dir} has no report.json from benchmarks/run_all.py; pass --evaluate.")
        # The plot sits beside the report, as the card's image link expects.
        atomic_write_json(report, {**sweep, "plot": "trade_off.png"})
        code = cli(["push", "--model", str(model_dir), "--repo_id", f"{args.org}/{name}", "--report", str(report),
                    "--base_model", BASE_MODEL, "--license", LICENSE, "--card_only", str(out / "README.md")])
        if code:
            raise SystemExit(f"{name}: writing the card failed ({code})")


if __name__ == "__main__":
    main()
