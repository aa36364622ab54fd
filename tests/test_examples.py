"""Every example runs end to end on a tiny subset of SST-2 with the real MiniLM-L6."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script, *args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.parametrize("method", ["pabee", "romebert", "deebert"])
def test_python_api_example(method, glue_dir, tmp_path):
    out = run("python_api_sst2.py", "--method", method, "--glue_dir", str(glue_dir), "--output_dir", str(tmp_path / "out"), "--max_train_samples", "16",
              "--max_eval_samples", "16", cwd=tmp_path)
    assert "saved exit rule" in out and out.count("average exit layer") == 2
    assert (tmp_path / "out" / "exit_config.json").exists()


def test_run_glue_example(glue_dir, minilm_path, tmp_path):
    run(
        "run_glue_multiexit.py", "--method", "pabee", "--model_name_or_path", minilm_path, "--task", "rte",
        "--data_dir", str(glue_dir), "--output_dir", str(tmp_path / "out"), "--do_train", "--do_eval",
        "--max_train_samples", "16", "--max_eval_samples", "16", "--num_train_epochs", "1", "--report_to", "none",
        "--save_strategy", "no", "--use_cpu", "true", cwd=tmp_path,
    )
    report = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert len(report["per_exit"]) == 6 and "accuracy" in report["final"]
    assert (tmp_path / "out" / "model.safetensors").exists()
