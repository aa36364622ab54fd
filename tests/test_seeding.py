"""Reproducible runs: `hf-multiexit train --seed` seeds before the model (and its new exit heads) is built, and
every trainer supports transformers' `model_init`, which Trainer seeds before calling."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer, set_seed

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.cli import main
from hf_multiexit.trainers import LeeBertTrainer, PabeeConfig, PabeeTrainer, SmartBertTrainer, get_method
from test_modeling import tiny_config
from test_trainers import ToyRegression, ToyTask, toy_args
from toy_training import MODEL_OPTIONS

WORDS = [f"w{i}" for i in range(94)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`run(output_dir, *extra_arguments)`: `hf-multiexit train --method romebert` on a tiny plain BERT (so the exit
    heads start random), a tiny tokenizer and 32 + 16 random sentences; returns `eval_results.json` without its
    timings and the saved weights."""
    folder = tmp_path_factory.mktemp("tiny")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(folder / "bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37)
    BertForSequenceClassification(config).save_pretrained(folder / "bert")
    rng = random.Random(0)
    for split, size in (("train", 32), ("dev", 16)):
        lines = ["sentence,label"] + [f"{' '.join(rng.choices(WORDS, k=6))},{rng.randint(0, 1)}" for _ in range(size)]
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")

    def run(output_dir, *extra):
        argv = [
            "train", "--method", "romebert", "--model_name_or_path", str(folder / "bert"),
            "--train_file", str(folder / "train.csv"), "--validation_file", str(folder / "dev.csv"),
            "--output_dir", str(output_dir), "--max_length", "16", "--num_train_epochs", "1",
            "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--report_to", "none",
            "--save_strategy", "no", "--disable_tqdm", "true", "--use_cpu", "true", *extra,
        ]
        assert main(argv) == 0
        return results(output_dir), load_file(output_dir / "model.safetensors")

    return run


def results(output_dir) -> dict:
    """`eval_results.json` without its timings."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "runtime" not in k and "per_second" not in k}
        return value

    return strip(json.loads((output_dir / "eval_results.json").read_text()))


def stir_generators() -> None:
    """Moves Python's and torch's random number generators on, as whatever ran before a run would."""
    random.random()
    torch.rand(1)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert [name for name in a if not torch.equal(a[name], b[name])] == []


@pytest.fixture
def restore_determinism(monkeypatch):
    """`full_determinism` switches torch to deterministic algorithms and sets environment variables, for good."""
    for name in ("CUDA_LAUNCH_BLOCKING", "CUBLAS_WORKSPACE_CONFIG", "ASCEND_LAUNCH_BLOCKING", "HCCL_DETERMINISTIC",
                 "FLASH_ATTENTION_DETERMINISTIC"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


@pytest.mark.slow
@pytest.mark.parametrize("determinism", [[], ["--full_determinism", "true"]], ids=["set_seed", "full_determinism"])
def test_same_seed_gives_identical_runs(tiny_run, tmp_path, restore_determinism, determinism):
    """Two runs in one process, the random number generators elsewhere before each."""
    first_results, first_weights = tiny_run(tmp_path / "a", "--seed", "3", *determinism)
    stir_generators()
    second_results, second_weights = tiny_run(tmp_path / "b", "--seed", "3", *determinism)
    assert first_results == second_results
    assert_same_weights(first_weights, second_weights)
    assert any(name.startswith("bert.exits.0.") for name in first_weights)  # the exit heads are compared too


def test_other_seed_gives_other_exit_heads(tiny_run, tmp_path):
    _, first = tiny_run(tmp_path / "a", "--seed", "3")
    _, second = tiny_run(tmp_path / "b", "--seed", "4")
    assert not torch.equal(first["bert.exits.0.classifier.weight"], second["bert.exits.0.classifier.weight"])


# case -> (method, method options), one per trainer.
MODEL_INIT_CASES: dict[str, tuple[str, dict]] = {
    "deebert": ("deebert", {}),
    "pabee": ("pabee", {}),
    "romebert": ("romebert", {"gradient_regularization": "gp"}),
    "leebert": ("leebert", {"bilevel_split": 0.5}),
    "smartbert": ("smartbert", {}),
    "curriculum": ("curriculum", {}),
}


def model_init_trainer(case, tmp_path, **overrides):
    """The case's trainer with `model_init`: a tiny model whose every weight is random (nothing in it seeds)."""
    method, options = MODEL_INIT_CASES[case]
    config_class, trainer_class = get_method(method)
    args = toy_args(config_class, tmp_path, max_steps=2, seed=5, **{**options, **overrides})
    config = tiny_config(num_labels=2, **MODEL_OPTIONS.get(method, {}))
    return trainer_class(
        model_init=lambda: MultiExitBertForSequenceClassification(config), args=args, train_dataset=ToyTask(16)
    )


def trained_state(trainer) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.detach().clone() for k, v in trainer.model.named_parameters()}
    if isinstance(trainer, LeeBertTrainer):
        state["trainer.loss_weight_logits"] = trainer.loss_weight_logits.detach().clone()
    if isinstance(trainer, SmartBertTrainer):
        projections = trainer.projections.state_dict()
        state.update({f"trainer.projections.{k}": v.detach().clone() for k, v in projections.items()})
    return state


@pytest.mark.slow
@pytest.mark.parametrize("case", MODEL_INIT_CASES)
def test_model_init_trains_every_method_reproducibly(case, tmp_path):
    """Two runs with `model_init` and one seed are bit-identical, the trainer-owned parameters (LeeBERT's loss
    weights, SmartBERT's projections) included. The model is built once per `train()`: the final classifier, which
    every method trains in its first stage and DeeBERT and SmartBERT freeze in the second, has moved from the
    seeded initial model (a model rebuilt for the second stage would end with it untouched)."""
    runs = []
    for run in ("a", "b"):
        stir_generators()
        trainer = model_init_trainer(case, tmp_path / run)
        trainer.train()
        runs.append(trained_state(trainer))
        assert trainer.model.exit_config == trainer.saved_exit_config()  # the method's exit rule
    assert_same_weights(*runs)
    set_seed(5)
    final = f"bert.exits.{len(trainer.exit_layers) - 1}.classifier.weight"
    initial = dict(trainer.call_model_init().named_parameters())[final]
    assert not torch.equal(runs[0][f"model.{final}"], initial)
    assert all(p.requires_grad for p in trainer.model.parameters())  # the stages' freezing is undone


def test_model_init_keeps_the_regression_bias_start(tmp_path):
    """The exits' output biases start at the mean training label on the model that trains, not on one built
    before it."""
    data = ToyRegression(16)
    args = toy_args(PabeeConfig, tmp_path, task="stsb", learning_rate=0.0, max_steps=1)
    config = tiny_config(num_labels=1)
    trainer = PabeeTrainer(model_init=lambda: MultiExitBertForSequenceClassification(config), args=args, train_dataset=data)
    trainer.train()
    expected = float(data.labels.float().mean()) + 2.5
    assert [head.classifier.bias.item() for head in trainer.model.bert.exits] == pytest.approx([expected] * 4)
