#!/usr/bin/env python
"""Is the batch-1 exit check (`ExitStrategy.decide_one`: the decision on the logits as Python floats) worth its lines?

    .venv/bin/python benchmarks/batch1_decide_one.py [--model runs/demo-romebert-sst2] [--rounds 5] [--max_samples N]

At batch size 1 the early-exit loop asks `decide_one` instead of the tensor `should_exit` + `nonzero` (one read of
the logits instead of several small tensor ops). This times `run_inference` over the SST-2 dev set at batch 1 with
the entropy and confidence rules, with `decide_one` on and off (the strategy classes' attribute set to None, which
is how a strategy without one runs), interleaved in rounds in one process, and checks that both give the same exit
layers. Run it alone on the machine. Results: `benchmarks/results/batch1_decide_one.{json,md}`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.benchmark import timer
from transformers import AutoTokenizer

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.data import load_glue, make_collator
from hf_multiexit.evaluation import run_inference
from hf_multiexit.io import atomic_write_json, atomic_write_text
from hf_multiexit.models.multiexit_bert.exit_strategies import ConfidenceExit, EntropyExit

ROOT = Path(__file__).resolve().parents[1]
STRATEGY_CLASSES = {"entropy": EntropyExit, "confidence": ConfidenceExit}


def timed(model, data, collator, use_decide_one: bool, strategy_class, kwargs):
    saved = strategy_class.__dict__["decide_one"]
    if not use_decide_one:
        strategy_class.decide_one = None
    try:
        start = timer()
        result = run_inference(model, data, collator, batch_size=1, **kwargs)
        return timer() - start, result.exit_layers
    finally:
        strategy_class.decide_one = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo-romebert-sst2")
    parser.add_argument("--glue_dir", default=str(ROOT.parent / "shared" / "data" / "glue"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max_samples", type=int, default=None, help="The first N dev sentences (default: all 872).")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "batch1_decide_one"))
    args = parser.parse_args()
    model = MultiExitBertForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = load_glue("sst2", data_dir=args.glue_dir, tokenizer=tokenizer, max_length=64, splits="validation")["validation"]
    if args.max_samples is not None:
        data = data.select(range(min(args.max_samples, len(data))))
    collator = make_collator(tokenizer)
    saved_rule = model.exit_config
    rules = {
        "entropy": {"exit_strategy": "entropy", "entropy_threshold": saved_rule.entropy_threshold},
        "confidence": {"exit_strategy": "confidence", "confidence_threshold": saved_rule.confidence_threshold},
    }
    times = {rule: {"decide_one": [], "tensor": []} for rule in rules}
    for round_index in range(args.rounds):
        for rule, kwargs in rules.items():
            strategy_class = STRATEGY_CLASSES[rule]
            # Alternate which variant goes first, so neither always runs on a warmer cache.
            order = ("decide_one", "tensor") if round_index % 2 == 0 else ("tensor", "decide_one")
            layers = {}
            for variant in order:
                seconds, layers[variant] = timed(model, data, collator, variant == "decide_one", strategy_class, kwargs)
                times[rule][variant].append(seconds)
            if not (layers["decide_one"] == layers["tensor"]).all():
                raise SystemExit(f"{rule}: decide_one and the tensor check gave different exit layers")
        print(f"round {round_index + 1}: " + ", ".join(
            f"{rule} {times[rule]['tensor'][-1] / times[rule]['decide_one'][-1]:.3f}" for rule in rules), flush=True)
    summary = {}
    for rule, variants in times.items():
        ratios = [t / d for t, d in zip(variants["tensor"], variants["decide_one"])]
        summary[rule] = {
            "params": rules[rule],
            "seconds": variants,
            "tensor_over_decide_one": ratios,
            "median_ratio": statistics.median(ratios),
            "ms_per_sentence": {v: 1000 * statistics.median(s) / len(data) for v, s in variants.items()},
        }
    command = "python " + " ".join(sys.argv)
    atomic_write_json(f"{args.output}.json", {"command": command, "model": args.model, "num_samples": len(data),
                                              "batch_size": 1, "threads": torch.get_num_threads(), "rules": summary})
    lines = ["# Batch-1 exit check: `decide_one` against the tensor check\n", f"Command: `{command}`\n",
             f"{len(data)} SST-2 dev sentences at batch 1, {args.rounds} interleaved rounds, "
             f"{torch.get_num_threads()} threads. Ratio > 1: the tensor check is slower.\n",
             "| rule | ms/sentence, decide_one | ms/sentence, tensor | tensor / decide_one per round | median |",
             "|---|---:|---:|---|---:|"]
    for rule, s in summary.items():
        lines.append(f"| {rule} {s['params']} | {s['ms_per_sentence']['decide_one']:.3f} | "
                     f"{s['ms_per_sentence']['tensor']:.3f} | {', '.join(f'{r:.3f}' for r in s['tensor_over_decide_one'])} "
                     f"| {s['median_ratio']:.3f} |")
    atomic_write_text(f"{args.output}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
