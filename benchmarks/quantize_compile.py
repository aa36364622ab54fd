"""Dynamic int8 quantization and compiled segments against fp32 eager: accuracy and wall-clock on SST-2 dev.

What it measures
----------------
A trained multi-exit model (``--model``, e.g. ``runs/demo-romebert-sst2`` from ``make demo``) in three variants:

* ``fp32 eager``    the model as loaded: the reference;
* ``int8 dynamic``  ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``: int8 weights,
                    activations quantized at each call with one scale per tensor (so a sample's logits depend a little
                    on the batch it is in; the table gives the exit agreement between batch 1 and batch 32);
* ``compiled``      ``model.compile_segments(backend=--backend)``: every encoder layer, exit head and skip gate compiled
                    with dynamic shapes (``torch.compile``), the exit loop between them eager;

each under the model's saved exit rule (``exit_config.json``) and at full depth (``exit_strategy="none"``), at batch
sizes 1 and 32, over the SST-2 dev sentences in file order, padded per batch.

Timing, in one interleaved run: every (batch size, rule, variant) first gets one untimed pass (the compiled variant
compiles there; its time is reported as warm-up), then ``--rounds`` rounds each time every combination once, the
variants in an order rotated from round to round, so that load changes on the machine hit them alike. A pass's time
is ``hf_multiexit.evaluation.run_inference``'s model time (each call between two readings of
``torch.utils.benchmark.timer``, which synchronises an accelerator; data loading excluded). The speed-up of a
variant is computed per round, as fp32 eager's time over the variant's time in the same round; the table gives its
median over the rounds and its range (min-max). Accuracy, average exit layer and the exit agreement with fp32 eager
come from the first timed round.

Results: ``<output_dir>/quantize_compile.{md,json}`` (written atomically), the exact command at the top.

How to run
----------
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quantize_compile.py --model runs/demo-romebert-sst2
    # --glue_dir DIR (default $GLUE_DIR, else ../shared/data/glue)  --rounds 5  --batch_sizes 1,32  --threads 2
    # --backend inductor (torch.compile backend of the compiled variant)  --max_samples N (a prefix of dev, to try it)

Timings are only meaningful on an otherwise idle machine (the JSON records the load average before and after).
Inductor compiles each segment's few graphs (see ``compile_segments``) in the warm-up pass: on 2 CPU cores expect
several minutes there.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from hf_multiexit import MultiExitBertForSequenceClassification  # noqa: E402
from hf_multiexit.data import load_glue, make_collator  # noqa: E402
from hf_multiexit.evaluation import run_inference  # noqa: E402
from hf_multiexit.io import atomic_write_json, atomic_write_text  # noqa: E402
from inference_speed import cpu_model, git_state  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GLUE_DIR = REPO_ROOT.parent / "shared" / "data" / "glue"
REFERENCE = "fp32 eager"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A trained multi-exit model folder (e.g. runs/demo-romebert-sst2).")
    parser.add_argument("--glue_dir", type=Path, default=Path(os.environ.get("GLUE_DIR", DEFAULT_GLUE_DIR)))
    parser.add_argument("--rounds", type=int, default=5, help="Timed rounds (each: every combination once).")
    parser.add_argument("--batch_sizes", default="1,32", help="Comma-separated batch sizes.")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads.")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend of the compiled variant.")
    parser.add_argument("--max_samples", type=int, default=None, help="Only the first N dev sentences (to try it).")
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if args.rounds < 1 or not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error(f"--rounds={args.rounds} and --batch_sizes={args.batch_sizes} must be positive.")
    return args


def build_variants(model, backend: str) -> dict:
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    compiled = copy.deepcopy(model)
    compiled.compile_segments(backend=backend)
    return {REFERENCE: model, "int8 dynamic": quantized, "compiled": compiled}


def summarize(runs: dict, labels: np.ndarray, variants: list[str]) -> list[dict]:
    """One row per (batch size, rule, variant) from the timed passes `runs[(bs, rule, variant)]` (a list of
    `InferenceResult`, one per round)."""
    rows, smallest = [], min(key[0] for key in runs)
    for (batch_size, rule, variant), results in runs.items():
        reference = runs[(batch_size, rule, REFERENCE)]
        first, ref_first = results[0], reference[0]
        ratios = [ref.seconds / res.seconds for ref, res in zip(reference, results)]
        row = {
            "batch_size": batch_size,
            "rule": rule,
            "variant": variant,
            "accuracy": float((first.logits.argmax(-1) == labels).mean()),
            "avg_exit_layer": first.avg_exit_layer,
            "exit_agreement_with_fp32": float((first.exit_layers == ref_first.exit_layers).mean()),
            "prediction_agreement_with_fp32": float((first.logits.argmax(-1) == ref_first.logits.argmax(-1)).mean()),
            "seconds_median": statistics.median(res.seconds for res in results),
            "seconds_per_round": [res.seconds for res in results],
            "speedup_vs_fp32_median": statistics.median(ratios),
            "speedup_vs_fp32_min": min(ratios),
            "speedup_vs_fp32_max": max(ratios),
        }
        if batch_size != smallest:  # a batch's samples share int8 activation scales; compaction must not matter else
            alone = runs[(smallest, rule, variant)][0]
            row["exit_agreement_with_smallest_batch"] = float((first.exit_layers == alone.exit_layers).mean())
        rows.append(row)
    order = {name: i for i, name in enumerate(variants)}
    return sorted(rows, key=lambda r: (r["batch_size"], r["rule"] != "exit rule", order[r["variant"]]))


def render_markdown(report: dict) -> str:
    env, setup = report["environment"], report["setup"]
    lines = [
        f"Command: `{env['command']}`",
        "",
        "# Dynamic int8 quantization and compiled segments vs fp32 eager (SST-2 dev)",
        "",
        f"{env['date']}, torch {env['torch']}, transformers {env['transformers']}, {env['torch_threads']} threads on "
        f"{env['cpu_model']} ({env['device']}); load average before/after {env['loadavg_before']} / {env['loadavg_after']}.",
        f"Model `{setup['model']}` ({setup['num_layers']} layers, exit head `{setup['exit_head']}`), exit rule "
        f"`{setup['exit_rule']}`; {setup['num_samples']} sentences; {setup['rounds']} interleaved rounds; compiled "
        f"with backend `{setup['backend']}` (graphs after warm-up {report['compile']['graphs_after_warmup']}, after the "
        f"timed rounds {report['compile']['graphs_after_rounds']}; warm-up passes "
        + ", ".join(f"batch {bs}: {s:.1f} s" for bs, s in report["compile"]["warmup_seconds"].items()) + ").",
        "",
        "Speed-up = fp32 eager's pass time / the variant's, per round; median [min-max] over the rounds. Accuracy and "
        "agreements from the first timed round.",
        "",
        "| batch | rule | variant | accuracy | avg exit layer | exits = fp32 | predictions = fp32 | exits = smallest batch "
        "| seconds (median) | speed-up vs fp32 eager |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        agreement = row.get("exit_agreement_with_smallest_batch")
        lines.append(
            f"| {row['batch_size']} | {row['rule']} | {row['variant']} | {row['accuracy']:.4f} | {row['avg_exit_layer']:.3f} "
            f"| {row['exit_agreement_with_fp32']:.4f} | {row['prediction_agreement_with_fp32']:.4f} "
            f"| {'' if agreement is None else f'{agreement:.4f}'} | {row['seconds_median']:.3f} "
            f"| {row['speedup_vs_fp32_median']:.3f} [{row['speedup_vs_fp32_min']:.3f}-{row['speedup_vs_fp32_max']:.3f}] |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    git_info = git_state()

    model = MultiExitBertForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = load_glue("sst2", data_dir=args.glue_dir, tokenizer=tokenizer, splits="validation")["validation"]
    if args.max_samples is not None:
        data = data.select(range(min(args.max_samples, len(data))))
    collator = make_collator(tokenizer)
    labels = np.asarray(data["label"])
    exit_rule = model.exit_config.to_dict()
    rules = {"exit rule": {}, "full depth": {"exit_strategy": "none"}}

    torch._dynamo.reset()
    counters.clear()
    variants = build_variants(model, args.backend)
    names = list(variants)
    combos = [(bs, rule) for bs in args.batch_sizes for rule in rules]
    warmup = {bs: 0.0 for bs in args.batch_sizes}
    for bs, rule in combos:
        for name, variant in variants.items():
            start = time.perf_counter()
            run_inference(variant, data, collator, bs, **rules[rule])
            if name == "compiled":
                warmup[bs] += time.perf_counter() - start
    graphs_after_warmup = counters["stats"]["unique_graphs"]
    print(f"warm-up done; compiled graphs: {graphs_after_warmup}", flush=True)

    runs = {(bs, rule, name): [] for bs, rule in combos for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for bs, rule in combos:
            for name in order:
                runs[(bs, rule, name)].append(run_inference(variants[name], data, collator, bs, **rules[rule]))
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    report = {
        "benchmark": "quantize_compile",
        "environment": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_model": cpu_model(),
            "device": str(model.device),
            "git": git_info,
            "loadavg_before": loadavg_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "setup": {
            "model": args.model,
            "num_layers": model.config.num_hidden_layers,
            "exit_head": model.config.exit_head,
            "exit_rule": {k: v for k, v in exit_rule.items() if v is not None},
            "num_samples": len(data),
            "batch_sizes": args.batch_sizes,
            "rounds": args.rounds,
            "backend": args.backend,
            "quantization": "torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)",
        },
        "compile": {
            "graphs_after_warmup": graphs_after_warmup,
            "graphs_after_rounds": counters["stats"]["unique_graphs"],
            "graph_breaks": sum(counters["graph_break"].values()),
            "warmup_seconds": {str(bs): round(s, 2) for bs, s in warmup.items()},
        },
        "rows": summarize(runs, labels, names),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.output_dir / "quantize_compile.json", report)
    markdown = render_markdown(report)
    atomic_write_text(args.output_dir / "quantize_compile.md", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
