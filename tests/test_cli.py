"""`hf-multiexit train` end to end on the real MiniLM-L6 and SST-2 (a few examples), and its errors."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_multiexit.cli import COMMANDS, main
from hf_multiexit.trainers import METHODS


def train_args(minilm_path, glue_dir, output_dir, method, *extra):
    return [
        "train", "--method", method, "--model_name_or_path", minilm_path, "--task", "sst2", "--data_dir", str(glue_dir),
        "--output_dir", str(output_dir), "--max_train_samples", "32", "--max_eval_samples", "32", "--max_length", "32",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "16", "--report_to", "none", "--save_strategy", "no",
        "--disable_tqdm", "true", "--use_cpu", "true", *extra,
    ]


@pytest.mark.parametrize("method, strategy", [("pabee", "patience"), ("deebert", "entropy"), ("romebert", "entropy")])
def test_train_command_saves_model_exit_rule_and_report(minilm_path, glue_dir, tmp_path, method, strategy):
    out = tmp_path / method
    assert main(train_args(minilm_path, glue_dir, out, method, "--learning_rate", "1e-4")) == 0
    report = json.loads((out / "eval_results.json").read_text())
    assert set(report["final"]) == {"accuracy"} and 0.0 <= report["final"]["accuracy"] <= 1.0
    assert [entry["layer"] for entry in report["per_exit"]] == [1, 2, 3, 4, 5, 6]
    assert report["per_exit"][-1]["metrics"] == report["final"] and report["method"] == method
    assert json.loads((out / "exit_config.json").read_text())["exit_strategy"] == strategy
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    with torch.no_grad():
        assert model(torch.tensor([[101, 2307, 102]])).exit_layers.shape == (1,)


def test_train_command_passes_method_options(minilm_path, glue_dir, tmp_path):
    out = tmp_path / "rome"
    assert main(train_args(minilm_path, glue_dir, out, "romebert", "--gradient_regularization", "ge", "--gamma", "0.5")) == 0
    config = json.loads((out / "eval_results.json").read_text())["config"]
    assert config["gradient_regularization"] == "ge" and config["gamma"] == 0.5 and config["task"] == "sst2"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--method", "fastbert"], f"Unknown training method 'fastbert'; valid methods are {sorted(METHODS)}"),
        (["serve"], f"unknown command 'serve'; valid commands are {list(COMMANDS)}"),
    ],
)
def test_bad_commands(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_option_values(minilm_path, glue_dir, tmp_path, capsys):
    assert main(train_args(minilm_path, glue_dir, tmp_path, "romebert", "--gamma", "2")) == 2
    assert "gamma=2.0 is out of range" in capsys.readouterr().err
    assert main(train_args(minilm_path, glue_dir, tmp_path, "pabee", "--exit_head", "mlp")) == 2
    assert "exit_head='mlp' is not one of ['pooler', 'linear', 'attention', 'native']" in capsys.readouterr().err
    args = train_args(minilm_path, glue_dir, tmp_path, "pabee")
    args[args.index("sst2")] = "sst3"
    assert main(args) == 2
    assert "sst3" in capsys.readouterr().err
    assert not (tmp_path / "eval_results.json").exists()
