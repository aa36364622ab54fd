#!/usr/bin/env python
"""Issue 19's accuracy gaps as paired differences on the same dev sentences, with their uncertainty.

    .venv/bin/python benchmarks/method_gaps.py --runs_dir runs/run_all          # SST-2, the run_all models

For every method's model in `--runs_dir/<task>-<method>/`: its full-depth dev predictions against the reference's
(DeeBERT's final exit: plain fine-tuning), and LeeBERT's against PABEE's at each patience (exits run for real,
batch 64). A gap between two models scored on the same sentences is read paired: the 95% interval of the accuracy
difference by the paired bootstrap (`scipy.stats.bootstrap`, BCa, 10,000 resamples) and McNemar's exact test on the
sentences where exactly one model is right (`scipy.stats.binomtest`). One training seed per model: the interval is
the test set's sampling noise for these two trained models, not the spread over training seeds, which adds to it.

Results: `benchmarks/results/method_gaps-<task>.{json,md}`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from harness import ROOT, write_results
from scipy.stats import binomtest, bootstrap
from training_runs import DEFAULT_GLUE_DIR
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_multiexit  # noqa: F401  (registers the multi-exit Auto classes)
from hf_multiexit.data import get_glue_task, load_glue, make_collator
from hf_multiexit.evaluation import run_inference
from hf_multiexit.trainers import METHODS

REFERENCE = "deebert"
PAIRS = {"leebert": "pabee"}
"""Method -> the method it is compared with at equal patience (issue 19: LeeBERT at least PABEE's accuracy)."""


def paired_gap(correct_a: np.ndarray, correct_b: np.ndarray, seed: int = 0) -> dict:
    """Accuracy of a minus accuracy of b on the same samples: the difference, its paired-bootstrap 95% interval and
    McNemar's exact two-sided p-value."""
    a, b = correct_a.astype(float), correct_b.astype(float)
    interval = bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True, vectorized=True,
                         n_resamples=10_000, confidence_level=0.95, method="BCa", random_state=seed).confidence_interval
    only_a, only_b = int(np.sum(correct_a & ~correct_b)), int(np.sum(~correct_a & correct_b))
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"a_accuracy": float(a.mean()), "b_accuracy": float(b.mean()), "difference": float(a.mean() - b.mean()),
            "ci95": [float(interval.low), float(interval.high)], "only_a_right": only_a, "only_b_right": only_b,
            "mcnemar_p": float(p_value)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / "run_all"))
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--max_length", type=int, default=64, help="As the models were trained (run_all: 64 for SST-2).")
    parser.add_argument("--glue_dir", default=DEFAULT_GLUE_DIR)
    args = parser.parse_args()
    folders = {method: Path(args.runs_dir) / f"{args.task}-{method}" for method in METHODS}
    folders = {method: folder for method, folder in folders.items() if (folder / "config.json").exists()}
    if REFERENCE not in folders:
        parser.error(f"no {REFERENCE} model in {args.runs_dir} for {args.task}: it is the reference")
    tokenizer = AutoTokenizer.from_pretrained(folders[REFERENCE])
    split = get_glue_task(args.task).validation_splits[0]
    dev = load_glue(args.task, data_dir=args.glue_dir, tokenizer=tokenizer, max_length=args.max_length, splits=split)[split]
    collator = make_collator(tokenizer)

    correct: dict[tuple[str, str], np.ndarray] = {}
    for method, folder in folders.items():
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        settings = {"full depth": {"exit_strategy": "none"}}
        if method in PAIRS or method in PAIRS.values():
            layers = model.config.num_hidden_layers
            settings.update({f"patience {t}": {"exit_strategy": "patience", "patience": t} for t in range(layers)})
        for name, exit_kwargs in settings.items():
            result = run_inference(model, dev, collator, batch_size=64, **exit_kwargs)
            correct[method, name] = result.logits.argmax(-1) == result.labels
            print(f"{method} {name}: {correct[method, name].mean():.4f}", flush=True)

    gaps = [{"a": method, "b": REFERENCE, "setting": "full depth",
             **paired_gap(correct[method, "full depth"], correct[REFERENCE, "full depth"])}
            for method in folders if method != REFERENCE]
    gaps += [{"a": method, "b": other, "setting": setting, **paired_gap(correct[method, setting], correct[other, setting])}
             for method, other in PAIRS.items() if method in folders and other in folders
             for (name, setting) in correct if name == method and setting.startswith("patience")]
    lines = [f"# Accuracy gaps between methods, paired on {args.task} dev ({len(dev)} sentences)",
             "Difference = accuracy of a minus accuracy of b on the same sentences; 95% interval by paired bootstrap "
             "(BCa, 10,000 resamples); McNemar's exact test on the sentences only one of the two gets right. One "
             "training seed per model: the interval is test-set noise only.", "",
             "| a | b | setting | a | b | difference | 95% interval | only a right / only b right | McNemar p |",
             "|---|---|---|---:|---:|---:|---|---|---:|"]
    lines += [f"| {g['a']} | {g['b']} | {g['setting']} | {g['a_accuracy']:.4f} | {g['b_accuracy']:.4f} | "
              f"{g['difference']:+.4f} | [{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}] | {g['only_a_right']} / "
              f"{g['only_b_right']} | {g['mcnemar_p']:.3f} |" for g in gaps]
    write_results(ROOT / "benchmarks" / "results" / f"method_gaps-{args.task}",
                  {"runs_dir": args.runs_dir, "task": args.task, "gaps": gaps}, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
