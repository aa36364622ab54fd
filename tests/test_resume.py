"""Crash and resume: a training run killed with SIGKILL in the middle of a stage and resumed from its last complete
checkpoint ends where an uninterrupted run with the same seed ends; crashes while saving never leave a model folder
that loads."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.io import atomic_save_pretrained, atomic_write_json
from toy_training import SAVE_KILL_POINTS, SAVE_STEPS, build_trainer, final_weights, toy_model

WORKER = Path(__file__).with_name("toy_training.py")

# (case, stage, step, where): killed in `stage` (1-based) at global step `step` of that stage, at the end of the
# step or while writing the step's checkpoint. 8 steps per stage, a checkpoint every 3 steps.
KILLS = [
    ("deebert", 2, 5, "after-step"),
    ("deebert", 2, 6, "during-save"),
    ("pabee", 1, 6, "during-save"),
    ("romebert", 1, 7, "after-step"),
]


def run_until_killed(*args):
    result = subprocess.run([sys.executable, str(WORKER), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-4000:]


def without_speed(metrics):
    return {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))}


@pytest.mark.parametrize("case, stage, step, where", KILLS)
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, case, stage, step, where):
    killed = tmp_path / "killed"
    run_until_killed("kill", case, killed, stage, step, *(["during-save"] if where == "during-save" else []))
    stage_dir = killed / f"stage-{stage}" if case == "deebert" else killed
    last_saved = step // SAVE_STEPS * SAVE_STEPS
    assert (stage_dir / f"checkpoint-{last_saved}").is_dir()
    if where == "during-save":
        # The checkpoint being written when the process died has weights but no trainer state: it is skipped.
        assert not (stage_dir / f"checkpoint-{last_saved}" / "trainer_state.json").exists()
    resumed = build_trainer(case, killed, save_strategy="steps", save_steps=SAVE_STEPS)
    resumed.train(resume_from_checkpoint=True)
    reference = build_trainer(case, tmp_path / "reference")
    reference.train()
    expected = final_weights(reference.model)
    for name, value in final_weights(resumed.model).items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=1e-5, msg=name)
    assert without_speed(resumed.evaluate()) == pytest.approx(without_speed(reference.evaluate()), abs=1e-6)


@pytest.mark.parametrize("when", list(SAVE_KILL_POINTS))
def test_model_folder_killed_while_saving_loads_old_model_or_nothing(tmp_path, when):
    """Killed while saving over an older model: while the new files are written aside, the old model still loads
    intact; once they are renamed in, the folder has no weights until the last rename, so it loads neither half of
    the old nor half of the new model. Saving again gives the new model."""
    folder = tmp_path / "model"
    run_until_killed("kill-saving", folder, when)
    if when == "writing":
        assert_same_weights(MultiExitBertForSequenceClassification.from_pretrained(folder), toy_model(seed=1))
    else:
        assert not (folder / "model.safetensors").exists()
        with pytest.raises(OSError, match="model.safetensors"):
            MultiExitBertForSequenceClassification.from_pretrained(folder)
    new = toy_model(seed=2)
    atomic_save_pretrained(folder, new)
    assert_same_weights(MultiExitBertForSequenceClassification.from_pretrained(folder), new)


def assert_same_weights(a, b):
    expected = final_weights(b)
    for name, value in final_weights(a).items():
        assert torch.equal(value, expected[name]), name


def test_failed_save_leaves_the_previous_files(tmp_path, monkeypatch):
    """An error while writing (disk full, a bug) leaves the previous model and report as they were, and no temporary
    files."""
    folder = tmp_path / "model"
    old = toy_model(seed=1)
    atomic_save_pretrained(folder, old)
    atomic_write_json(folder / "eval_results.json", {"accuracy": 0.5})
    before = sorted(p.name for p in folder.iterdir())

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.Tensor, "numpy", fail)  # safetensors serialises every tensor through numpy
    monkeypatch.setattr(json, "dumps", fail)
    with pytest.raises(OSError, match="No space left"):
        atomic_save_pretrained(folder, toy_model(seed=2))
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(folder / "eval_results.json", {"accuracy": 0.9})
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == before
    assert json.loads((folder / "eval_results.json").read_text()) == {"accuracy": 0.5}
    assert_same_weights(MultiExitBertForSequenceClassification.from_pretrained(folder), old)
