#!/usr/bin/env python
"""Does a calibrated exit rule hold on data calibration never saw, and how close is it to the best rule in hindsight?

    python benchmarks/calibrated_rule.py --model runs/demo-romebert-sst2 [--max_drop 0.01] [--delta 0.1]
        [--calibration_rows 8000] [--skip_rows 2048]

The model (`make demo`: RomeBERT on the first 2048 SST-2 training sentences) is copied to `runs/<name>-calibrated`,
calibrated there by `hf-multiexit calibrate` on SST-2 training rows it did not train on (rows `skip_rows` to
`skip_rows + calibration_rows` of train.tsv, written as a calibration file), then evaluated on SST-2 dev, which
calibration never sees, by an exhaustive `hf-multiexit evaluate` sweep (entropy, confidence, patience, static;
layer speed-ups from the replayed exits, no wall-clock runs). Reported: the saved rule's dev accuracy against full
depth, its layer speed-up, and the fastest sweep point within 1 point of full depth on dev (the oracle in
hindsight: chosen on the very data it is scored on), with the ratio of the two speed-ups. Writes
`benchmarks/results/calibrated_rule-sst2.{json,md}`.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

from hf_multiexit.cli import main as cli
from hf_multiexit.evaluation import tradeoff_summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE = os.environ.get("GLUE_DIR") or os.path.join(ROOT, "..", "shared", "data", "glue")
STRATEGIES = ("entropy", "confidence", "patience", "static")


def run(argv: list[str]) -> None:
    print("$ hf-multiexit " + " ".join(argv), flush=True)
    if cli(argv) != 0:
        sys.exit(f"hf-multiexit {argv[0]} failed")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo-romebert-sst2")
    parser.add_argument("--max_drop", default="0.01")
    parser.add_argument("--delta", default="0.1")
    parser.add_argument("--skip_rows", type=int, default=2048, help="Training rows the model trained on.")
    parser.add_argument("--calibration_rows", type=int, default=8000)
    parser.add_argument("--grid_step", default="0.02", help="Speed-up step of the exhaustive dev sweep.")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "calibrated_rule-sst2"))
    args = parser.parse_args()
    started = time.perf_counter()

    model = args.model.rstrip("/") + "-calibrated"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(args.model, model)
    lines = open(os.path.join(GLUE, "SST-2", "train.tsv"), encoding="utf-8").read().splitlines()
    calibration_file = os.path.join(model, "..", os.path.basename(model) + "-calibration.tsv")
    with open(calibration_file, "w", encoding="utf-8") as f:
        f.write("\n".join([lines[0]] + lines[1 + args.skip_rows : 1 + args.skip_rows + args.calibration_rows]) + "\n")

    calibrate = ["calibrate", "--model", model, "--calibration_file", calibration_file, "--max_length", "64",
                 "--max_drop", args.max_drop, "--delta", args.delta, "--batch_size", "64"]
    run(calibrate)
    rule = json.load(open(os.path.join(model, "exit_config.json")))
    report_path = os.path.join(model, "dev-report.json")
    evaluate = ["evaluate", "--model", model, "--task", "sst2", "--data_dir", GLUE, "--max_length", "64",
                "--exit_strategy", ",".join(STRATEGIES), "--grid_step", args.grid_step, "--wall_clock", "false",
                "--batch_size", "64", "--output", report_path]
    run(evaluate)
    report = json.load(open(report_path))

    full = report["full_depth"]["metrics"]["accuracy"]
    # The report measures the saved rule among its points (full depth when calibration fell back).
    saved = next((p for p in report["points"] if p["strategy"] == rule["exit_strategy"]
                  and all(math.isclose(rule[name], value) for name, value in p["params"].items())),
                 {"params": {}, "metrics": {"accuracy": full}, "layer_speedup": 1.0})
    within = {s: tradeoff_summary(report, s)["fastest_within"]["1"] for s in STRATEGIES}
    oracle_strategy = max(within, key=lambda s: within[s]["layer_speedup"])
    oracle = within[oracle_strategy]
    result = {
        "commands": ["python benchmarks/calibrated_rule.py " + " ".join(sys.argv[1:]),
                     "hf-multiexit " + " ".join(calibrate), "hf-multiexit " + " ".join(evaluate)],
        "calibration": rule["calibration"],
        "saved_rule": {k: v for k, v in rule.items() if k not in ("calibration", "format_version")},
        "dev": {
            "samples": report["num_samples"], "full_depth_accuracy": full,
            "saved_rule_accuracy": saved["metrics"]["accuracy"], "saved_rule_layer_speedup": saved["layer_speedup"],
            "accuracy_drop": full - saved["metrics"]["accuracy"],
            "oracle_in_hindsight": {"strategy": oracle_strategy, **oracle},
            "ratio_to_oracle": saved["layer_speedup"] / oracle["layer_speedup"],
            "sweep_points": len(report["points"]),
        },
        "seconds": time.perf_counter() - started,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output + ".json", "w") as f:
        json.dump(result, f, indent=2)
    dev, cal = result["dev"], result["calibration"]
    text = f"""# Calibrated exit rule on SST-2 (`benchmarks/calibrated_rule.py`)

Model: `{args.model}` (RomeBERT, MiniLM-L6, first {args.skip_rows} SST-2 training sentences, `make demo`).
Calibration: SST-2 training rows {args.skip_rows + 1}-{args.skip_rows + args.calibration_rows} (never trained on),
`max_drop {cal['max_drop']}`, `delta {cal['delta']}`, criterion `{cal['criterion']}`, n = {cal['n']} tested
(+ {cal['grid']['n']} placing the grid).

| | value |
|---|---|
| saved rule | `{result['saved_rule']['exit_strategy']}` {", ".join(f"`{k}={v}`" for k, v in saved['params'].items())} |
| calibration split: disagreement / p-value / layer speed-up | {cal['empirical_risk']:.4f} / {cal['p_value']:.3g} / {cal['layer_speedup']:.2f}x |
| SST-2 dev accuracy: full depth / saved rule | {full:.4f} / {dev['saved_rule_accuracy']:.4f} (drop {dev['accuracy_drop'] * 100:.2f} points) |
| saved rule's layer speed-up on dev | {dev['saved_rule_layer_speedup']:.2f}x |
| oracle in hindsight (fastest of {dev['sweep_points']} dev points within 1 point) | {oracle_strategy} {oracle['params']}: {oracle['layer_speedup']:.2f}x, accuracy {oracle['metric']:.4f} |
| ratio saved / oracle | {dev['ratio_to_oracle']:.2f} |

Commands:
```
{chr(10).join(result['commands'])}
```
"""
    with open(args.output + ".md", "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
