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
from pathlib import Path

from harness import interleaved_times, ratio_summary, write_results
from transformers import AutoTokenizer

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.data import load_glue, make_collator
from hf_multiexit.evaluation import run_inference
from hf_multiexit.models.multiexit_bert.exit_strategies import ConfidenceExit, EntropyExit

ROOT = Path(__file__).resolve().parents[1]
STRATEGY_CLASSES = {"entropy": EntropyExit, "confidence": ConfidenceExit}
VARIANTS = ("decide_one", "tensor")


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
    exit_layers = {}

    def variant(rule: str, name: str):
        strategy_class = STRATEGY_CLASSES[rule]

        def run() -> None:
            saved = strategy_class.__dict__["decide_one"]
            if name == "tensor":  # how a strategy without decide_one runs
                strategy_class.decide_one = None
            try:
                exit_layers[rule, name] = run_inference(model, data, collator, batch_size=1, **rules[rule]).exit_layers
            finally:
                strategy_class.decide_one = saved

        return run

    times = interleaved_times({(rule, name): variant(rule, name) for rule in rules for name in VARIANTS}, args.rounds)
    summary = {}
    for rule in rules:
        if not (exit_layers[rule, "decide_one"] == exit_layers[rule, "tensor"]).all():
            raise SystemExit(f"{rule}: decide_one and the tensor check gave different exit layers")
        seconds = {name: times[rule, name] for name in VARIANTS}
        summary[rule] = {
            "params": rules[rule],
            "seconds": seconds,
            "tensor_over_decide_one": ratio_summary(seconds["tensor"], seconds["decide_one"]),
            "ms_per_sentence": {name: 1000 * statistics.median(s) / len(data) for name, s in seconds.items()},
        }
    lines = ["# Batch-1 exit check: `decide_one` against the tensor check",
             f"{len(data)} SST-2 dev sentences at batch 1, {args.rounds} interleaved rounds. Ratio > 1: the tensor "
             "check is slower.", "",
             "| rule | ms/sentence, decide_one | ms/sentence, tensor | tensor / decide_one per round | median |",
             "|---|---:|---:|---|---:|"]
    for rule, s in summary.items():
        ratio = s["tensor_over_decide_one"]
        lines.append(f"| {rule} {s['params']} | {s['ms_per_sentence']['decide_one']:.3f} | "
                     f"{s['ms_per_sentence']['tensor']:.3f} | {', '.join(f'{r:.3f}' for r in ratio['per_round'])} "
                     f"| {ratio['median']:.3f} |")
    write_results(args.output, {"model": args.model, "num_samples": len(data), "batch_size": 1, "rules": summary}, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
