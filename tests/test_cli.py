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


def train_report(minilm_path, glue_dir, output_dir, method, *extra) -> dict:
    """`hf-multiexit train` with `train_args`; returns its report after the checks every method's run passes: exit
    code 0, one entry per exit of MiniLM-L6, the method named."""
    assert main(train_args(minilm_path, glue_dir, output_dir, method, *extra)) == 0
    report = json.loads((output_dir / "eval_results.json").read_text())
    assert [entry["layer"] for entry in report["per_exit"]] == [1, 2, 3, 4, 5, 6] and report["method"] == method
    return report


@pytest.mark.parametrize("method, strategy", [("pabee", "patience"), ("deebert", "entropy"), ("romebert", "entropy")])
def test_train_command_saves_model_exit_rule_and_report(minilm_path, glue_dir, tmp_path, method, strategy):
    out = tmp_path / method
    report = train_report(minilm_path, glue_dir, out, method, "--learning_rate", "1e-4")
    assert set(report["final"]) == {"accuracy"} and 0.0 <= report["final"]["accuracy"] <= 1.0
    assert report["per_exit"][-1]["metrics"] == report["final"]
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
        (["predict"], f"unknown command 'predict'; valid commands are {list(COMMANDS)}"),
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


def test_train_command_adds_exits_to_a_fine_tuned_roberta_then_trains_the_saved_model_again(
    minilm_tokenizer, glue_dir, tmp_path, capsys
):
    """The fine-tuned-classifier path from the command line: `--method deebert --skip_first_stage` on a stock
    `RobertaForSequenceClassification` folder trains only the intermediate exits (the final exit keeps the stock
    classifier), and the saved multi-exit RoBERTa folder trains again as a starting checkpoint."""
    from test_backbones import make_config, randomize

    config = make_config("roberta", "eager")
    # MiniLM's tokenizer pads with 0: RoBERTa numbers positions after `pad_token_id`, so the config must agree.
    config.vocab_size, config.pad_token_id, config.num_labels = minilm_tokenizer.vocab_size, 0, 2
    config.max_position_embeddings = 66  # 65 tokens after the padding offset
    stock = randomize(AutoModelForSequenceClassification.from_config(config)).eval()
    stock.save_pretrained(tmp_path / "fine-tuned")
    minilm_tokenizer.save_pretrained(tmp_path / "fine-tuned")
    out = tmp_path / "exits"
    assert main(train_args(str(tmp_path / "fine-tuned"), glue_dir, out, "deebert", "--skip_first_stage", "true")) == 0
    assert not (out / "stage-1").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.model_type == "multiexit" and model.config.backbone_config.model_type == "roberta"
    batch = minilm_tokenizer(["a gripping film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**batch, exit_strategy="none").logits, stock(**batch).logits, atol=1e-5)
    # The backbone stayed the stock one (RoBERTa's pooler is unused by its classifier and not built).
    backbone = model.multiexit.roberta.state_dict()
    assert all(torch.equal(backbone[key], value) for key, value in stock.roberta.state_dict().items() if key in backbone)
    assert len(backbone) == len(stock.roberta.state_dict())
    again = tmp_path / "again"
    assert main(train_args(str(out), glue_dir, again, "pabee")) == 0
    assert json.loads((again / "eval_results.json").read_text())["method"] == "pabee"
    # A length the RoBERTa positions (max_position_embeddings minus the padding offset) cannot hold is refused.
    assert main(train_args(str(out), glue_dir, tmp_path / "long", "pabee", "--max_length", "66")) == 2
    assert "max_length=66 is above the 65 positions" in capsys.readouterr().err
