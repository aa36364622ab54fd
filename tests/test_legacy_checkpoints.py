"""Checkpoints saved by earlier versions (model_type `multiexit_bert`, written by
`tests/fixtures/make_legacy_checkpoints.py` with the code before the backbone-neutral model) load with the same
outputs: through `MultiExitBertForSequenceClassification`, through the Auto classes, and from their own copied
code with `trust_remote_code=True` in a Python where `hf_multiexit` cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_multiexit import MultiExitBertForSequenceClassification, MultiExitConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy_multiexit_bert"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CALLS = {
    "pooler": {"entropy": dict(exit_strategy="entropy", entropy_threshold=0.5)},
    "attention_gates": {
        "entropy": dict(exit_strategy="entropy", entropy_threshold=0.6),
        "patience": dict(exit_strategy="patience", patience=1),
        "skip": dict(exit_strategy="skip", entropy_threshold=0.6, gate_threshold=0.5),
    },
    "linear_mean": {"static": dict(exit_strategy="static", exit_layer=1)},
}


def _inputs():
    return torch.tensor(EXPECTED["input_ids"]), torch.tensor(EXPECTED["attention_mask"])


def _check(model, name):
    expected = EXPECTED["checkpoints"][name]
    input_ids, attention_mask = _inputs()
    model.eval()
    with torch.no_grad():
        all_logits = model(input_ids, attention_mask, output_all_exits=True).all_logits
        for got, want in zip(all_logits, expected["all_logits"], strict=True):
            torch.testing.assert_close(got, torch.tensor(want), atol=1e-5, rtol=0)
        for call, kwargs in {"none": dict(exit_strategy="none"), **CALLS[name]}.items():
            out = model(input_ids, attention_mask, **kwargs)
            assert out.exit_layers.tolist() == expected[call]["exit_layers"], (name, call)
            torch.testing.assert_close(out.logits, torch.tensor(expected[call]["logits"]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_legacy_checkpoint_loads_with_same_outputs(name):
    assert sorted(CALLS) == sorted(EXPECTED["checkpoints"])
    model, info = MultiExitBertForSequenceClassification.from_pretrained(FIXTURES / name, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert isinstance(model.config, MultiExitConfig) and model.config.model_type == "multiexit_bert"
    _check(model, name)
    _check(AutoModelForSequenceClassification.from_pretrained(FIXTURES / name), name)


@pytest.mark.slow
def test_legacy_checkpoint_resaved_by_this_version_loads_remotely(tmp_path):
    """A legacy checkpoint saved again by this version loads with `trust_remote_code=True` where `hf_multiexit`
    cannot be imported, with the same outputs as the fixture's."""
    name = "attention_gates"
    MultiExitBertForSequenceClassification.from_pretrained(FIXTURES / name).save_pretrained(tmp_path / "model")
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        sys.modules["hf_multiexit"] = None  # importing it now fails
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        expected = json.load(open({str(FIXTURES / "expected.json")!r}))
        model.eval()
        with torch.no_grad():
            out = model(torch.tensor(expected["input_ids"]), torch.tensor(expected["attention_mask"]),
                        exit_strategy="skip", entropy_threshold=0.6, gate_threshold=0.5)
        want = expected["checkpoints"][{name!r}]["skip"]
        assert out.exit_layers.tolist() == want["exit_layers"], out.exit_layers
        torch.testing.assert_close(out.logits, torch.tensor(want["logits"]), atol=1e-5, rtol=0)
        print("remote ok")
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "remote ok" in result.stdout, result.stderr[-3000:]
