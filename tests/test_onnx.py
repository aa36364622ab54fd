"""ONNX export and the ONNX Runtime model (`hf_multiexit.onnx`) against the PyTorch model, on tiny random configs.

Exporting costs seconds per graph (torch's dynamo exporter), so the tests that export are `slow` and share one
export per model; the checks of bad folders and arguments need none."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from test_evaluation import collate, replay_cases, toy_set
from test_modeling import one_by_one, padded_batch, tiny_model
from transformers import BertTokenizerFast

from hf_multiexit import ExitConfig
from hf_multiexit.cli import main
from hf_multiexit.evaluation import TradeoffEvaluator
from hf_multiexit.onnx import MANIFEST_NAME, ExportArguments, ORTMultiExitModelForSequenceClassification
from hf_multiexit.onnx.export import config_fingerprint

TOL = 1e-4
WORDS = ["a", "fine", "film", "dull", "good", "bad", "movie", "not", "very", "plot"]


def save_with_tokenizer(model, folder) -> str:
    """Saves `model` with a word-level WordPiece tokenizer over `WORDS` (ids below the tiny vocabulary)."""
    model.save_pretrained(folder)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    return str(folder)


def export(folder, output, *extra) -> str:
    assert main(["export", "--model", str(folder), "--output", str(output), *extra]) == 0
    return str(output)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny 4-layer BERT multi-exit model whose saved rule is entropy, and its export through the CLI."""
    root = tmp_path_factory.mktemp("onnx")
    model = tiny_model()
    model.exit_config = ExitConfig(exit_strategy="entropy", entropy_threshold=0.9)
    folder = save_with_tokenizer(model, root / "model")
    return model, folder, export(folder, root / "export")


@pytest.mark.slow
def test_export_folder_and_exactness_against_pytorch(exported):
    model, _, output = exported
    names = {p.name for p in Path(output).iterdir()}
    graphs = ["embeddings.onnx", *(f"exit_{i}.onnx" for i in range(1, 5)), *(f"layer_{i}.onnx" for i in range(1, 5))]
    assert set(graphs + ["config.json", "exit_config.json", MANIFEST_NAME, "tokenizer.json"]) <= names
    for graph in graphs:
        onnx.checker.check_model(f"{output}/{graph}")
        # Both axes dynamic: the loop drops rows and cuts columns between calls.
        dims = onnx.load(f"{output}/{graph}").graph.input[0].type.tensor_type.shape.dim
        assert not dims[0].HasField("dim_value") and not dims[1].HasField("dim_value"), graph
    ort_model = ORTMultiExitModelForSequenceClassification.from_pretrained(output)
    data = toy_set(count=24)
    batch = {k: v for k, v in collate(data).items() if k != "labels"}
    lengths = batch["attention_mask"].sum(1)
    for case in replay_cases(model, data):
        with torch.no_grad():
            expected = model(**batch, **case)
        for inputs in (batch, {k: v.numpy() for k, v in batch.items()}):
            actual = ort_model(**inputs, **case)
            assert torch.equal(actual.exit_layers, expected.exit_layers), case
            torch.testing.assert_close(actual.logits, expected.logits, atol=TOL, rtol=0)
            assert torch.equal(actual.exit_checks, expected.exit_checks)
        # Batch 1 (each sample alone, unpadded) gives the batched answers, as in PyTorch.
        layers, logits = one_by_one(ort_model, batch["input_ids"], lengths, **case)
        assert torch.equal(layers, expected.exit_layers), case
        torch.testing.assert_close(logits, expected.logits, atol=TOL, rtol=0)
    # No exit arguments: the folder's exit_config.json (entropy < 0.9), as the PyTorch model's saved rule.
    with torch.no_grad():
        expected = model(**batch)
    assert ort_model.exit_config.exit_strategy == "entropy"
    assert torch.equal(ort_model(**batch).exit_layers, expected.exit_layers)
    assert len(set(expected.exit_layers.tolist())) > 1
    with torch.no_grad():
        every = model(**batch, output_all_exits=True)
    for actual, reference in zip(ort_model(**batch, output_all_exits=True).all_logits, every.all_logits):
        torch.testing.assert_close(actual, reference, atol=TOL, rtol=0)


@pytest.mark.slow
def test_onnx_runtime_in_the_evaluator_pipeline_and_cli(exported, tmp_path, capsys):
    model, folder, output = exported
    ort_model = ORTMultiExitModelForSequenceClassification.from_pretrained(output)
    data = toy_set(count=24)
    sweep = {"entropy": [0.5, 0.9], "patience": [1]}
    points = {}
    for name, runner in (("torch", model), ("onnx", ort_model)):
        evaluator = TradeoffEvaluator(runner, data, collate, task="sst2", batch_size=8, progress=False)
        points[name] = evaluator.sweep(sweep, wall_clock=False)
    for torch_point, onnx_point in zip(points["torch"], points["onnx"]):
        assert torch_point["avg_exit_layer"] == onnx_point["avg_exit_layer"]
        assert torch_point["metrics"] == pytest.approx(onnx_point["metrics"])
    # The pipeline takes exit arguments per call and reports each input's exit layer, as with PyTorch.
    from transformers import AutoTokenizer

    from hf_multiexit.models.multiexit_bert.modeling_multiexit_bert import MultiExitTextClassificationPipeline

    tokenizer = AutoTokenizer.from_pretrained(output)
    texts = ["a fine film", "not a very good plot", "dull"]
    results = {}
    for name, runner in (("torch", model), ("onnx", ort_model)):
        pipe = MultiExitTextClassificationPipeline(model=runner, tokenizer=tokenizer)
        results[name] = pipe(texts, exit_strategy="patience", patience=1)
    for torch_result, onnx_result in zip(results["torch"], results["onnx"]):
        assert torch_result["label"] == onnx_result["label"] and torch_result["exit_layer"] == onnx_result["exit_layer"]
        assert torch_result["score"] == pytest.approx(onnx_result["score"], abs=TOL)
    # `hf-multiexit evaluate --runtime onnx` on a labelled file.
    csv = tmp_path / "dev.csv"
    csv.write_text("sentence,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(texts * 4)))
    reports = {}
    for runtime, target in (("torch", folder), ("onnx", output)):
        report = tmp_path / f"{runtime}.json"
        assert main(["evaluate", "--model", target, "--runtime", runtime, "--validation_file", str(csv),
                     "--exit_strategy", "patience", "--patience", "1", "--output", str(report), "--repeats", "1"]) == 0
        reports[runtime] = json.loads(report.read_text())
    assert reports["onnx"]["runtime"] == "onnx"
    assert reports["onnx"]["full_depth"]["metrics"] == pytest.approx(reports["torch"]["full_depth"]["metrics"])
    assert [p["avg_exit_layer"] for p in reports["onnx"]["points"]] == [p["avg_exit_layer"] for p in reports["torch"]["points"]]


@pytest.mark.slow
def test_onnx_model_bad_input_is_a_clear_error(exported):
    _, _, output = exported
    ort_model = ORTMultiExitModelForSequenceClassification.from_pretrained(output)
    ids, mask, _ = padded_batch(2)
    with pytest.raises(ValueError, match=r"'bogus'.*entropy"):
        ort_model(ids, mask, exit_strategy="bogus")
    with pytest.raises(ValueError, match="skip gates"):
        ort_model(ids, mask, exit_strategy="skip")
    with pytest.raises(ValueError, match="labels is not available"):
        ort_model(ids, mask, labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must be a 2D array of integers"):
        ort_model(ids.float(), mask)
    with pytest.raises(ValueError, match="exit_config must be an ExitConfig"):
        ort_model.exit_config = {"exit_strategy": "entropy"}


def fake_export(tmp_path, **manifest_changes) -> str:
    """A folder with a tiny model's config.json and a manifest for it (no graphs): what `from_pretrained` checks
    before it opens any graph."""
    folder = tmp_path / "fake"
    model = tiny_model()
    model.config.save_pretrained(folder)
    layers = model.config.num_hidden_layers
    manifest = {
        "format_version": 1, "config_sha256": config_fingerprint(json.loads((folder / "config.json").read_text())),
        "opset": 18, "quantization": None, "embeddings": "embeddings.onnx",
        "layers": [f"layer_{i}.onnx" for i in range(1, layers + 1)],
        "exits": {str(i): f"exit_{i}.onnx" for i in range(1, layers + 1)}, "gates": None,
    }
    manifest.update(manifest_changes)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return str(folder)


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({}, FileNotFoundError, r"embeddings\.onnx is missing"),
        ({"config_sha256": "0" * 64}, ValueError, "config.json is not the one the graphs were exported from"),
        ({"layers": ["layer_1.onnx"]}, ValueError, "1 layer graphs for num_hidden_layers=4"),
        ({"exits": {"4": "exit_4.onnx"}}, ValueError, r"exit graphs at layers \[4\] for exit_layers=\[1, 2, 3, 4\]"),
        ({"gates": ["gate_1.onnx"]}, ValueError, "gate graphs present but use_skip_gates=False"),
        ({"format_version": 7}, ValueError, "format_version 7"),
    ],
)
def test_a_folder_whose_graphs_do_not_fit_its_config_is_refused(tmp_path, change, error, message):
    with pytest.raises(error, match=message):
        ORTMultiExitModelForSequenceClassification.from_pretrained(fake_export(tmp_path, **change))


def test_export_arguments_and_folders_are_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"has no {MANIFEST_NAME}"):
        ORTMultiExitModelForSequenceClassification.from_pretrained(tmp_path)
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"--opset=12 is not supported: .* opsets 18\.\."):
        ExportArguments(model=str(folder), output=str(tmp_path / "out"), opset=12)
    with pytest.raises(ValueError, match=r"--quantize='int4' is not supported; choose one of \['int8'\]"):
        ExportArguments(model=str(folder), output=str(tmp_path / "out"), quantize="int4")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ExportArguments(model=str(tmp_path / "missing"), output=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="--output must differ from --model"):
        ExportArguments(model=str(folder), output=str(folder))


@pytest.mark.slow
def test_export_refuses_to_replace_a_folder_that_is_not_an_export(exported, tmp_path, capsys):
    _, folder, _ = exported
    occupied = tmp_path / "mine"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    assert main(["export", "--model", folder, "--output", str(occupied), "--opset", "18"]) == 2
    assert "is a folder that is not an ONNX export" in capsys.readouterr().err
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no half-written export left beside it


def test_onnx_extra_is_declared():
    from conftest import REPO_ROOT

    from hf_multiexit import onnx as onnx_module

    extra = next(line for line in (REPO_ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("onnx = ["))
    assert all(f'"{package}>=' in extra for package in ("onnx", "onnxscript", "onnxruntime"))
    assert "pip install hf-multiexit[onnx]" in onnx_module.__doc__
