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
    ("curriculum", 2, 5, "after-step"),
    ("leebert", 1, 5, "after-step"),
    ("smartbert", 1, 5, "after-step"),
    ("smartbert", 2, 5, "after-step"),
]


def run_until_killed(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], stderr=subprocess.PIPE, text=True)


def assert_killed(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL, stderr[-4000:]


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory) -> dict[tuple, Path]:
    """Every run of `KILLS`, started at once (the interpreter start-ups overlap), each in its own folder."""
    folders = {kill: tmp_path_factory.mktemp("killed") for kill in KILLS}
    for process in [
        run_until_killed("kill", case, folders[case, stage, step, where], stage, step, *(["during-save"] if where == "during-save" else []))
        for case, stage, step, where in KILLS
    ]:
        assert_killed(process)
    return folders


def without_speed(metrics):
    return {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))}


@pytest.mark.slow
@pytest.mark.parametrize("case, stage, step, where", KILLS)
def test_killed_run_resumes_to_the_uninterrupted_result(killed_runs, tmp_path, case, stage, step, where):
    killed = killed_runs[case, stage, step, where]
    resumed = build_trainer(case, killed, save_strategy="steps", save_steps=SAVE_STEPS)
    stage_dir = killed / f"stage-{stage}" if len(resumed.stages) > 1 else killed
    last_saved = step // SAVE_STEPS * SAVE_STEPS
    assert (stage_dir / f"checkpoint-{last_saved}").is_dir()
    if where == "during-save":
        # The checkpoint being written when the process died has weights but no trainer state: it is skipped.
        assert not (stage_dir / f"checkpoint-{last_saved}" / "trainer_state.json").exists()
    resumed.train(resume_from_checkpoint=True)
    reference = build_trainer(case, tmp_path / "reference")
    reference.train()
    expected = final_weights(reference.model)
    for name, value in final_weights(resumed.model).items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=1e-5, msg=name)
    assert without_speed(resumed.evaluate()) == pytest.approx(without_speed(reference.evaluate()), abs=1e-6)


@pytest.fixture(scope="module")
def saves_killed(tmp_path_factory) -> dict[str, Path]:
    """A model folder for each of `SAVE_KILL_POINTS`, killed there while saving over an older model."""
    folders = {when: tmp_path_factory.mktemp("model") for when in SAVE_KILL_POINTS}
    for process in [run_until_killed("kill-saving", folder, when) for when, folder in folders.items()]:
        assert_killed(process)
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("when", list(SAVE_KILL_POINTS))
def test_model_folder_killed_while_saving_loads_old_model_or_nothing(saves_killed, when):
    """Killed while saving over an older model: while the new files are written aside, the old model still loads
    intact; once they are renamed in, the folder has no weights until the last rename, so it loads neither half of
    the old nor half of the new model. Saving again gives the new model."""
    folder = saves_killed[when]
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
