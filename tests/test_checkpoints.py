"""Checkpoints: loading plain BERT, save/load round trips, Hub-ready folders that load without hf-multiexit."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from hf_multiexit import ExitConfig, MultiExitBertForSequenceClassification, MultiExitBertModel, MultiExitConfig
from hf_multiexit.models.multiexit_bert.exit_strategies import entropy
from test_modeling import between_values, padded_batch, tiny_model

SHIPPED = {
    "backbones.py",
    "configuration_multiexit_bert.py",
    "modeling_multiexit_bert.py",
    "exit_configuration.py",
    "exit_strategies.py",
}


def test_auto_classes_are_registered(tmp_path):
    config = AutoConfig.for_model("multiexit_bert", num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=8, vocab_size=50)
    assert isinstance(config, MultiExitConfig)
    assert isinstance(AutoModel.from_config(config), MultiExitBertModel)
    assert isinstance(AutoModelForSequenceClassification.from_config(config), MultiExitBertForSequenceClassification)


def test_save_and_load_round_trip_is_exact(tmp_path):
    model = tiny_model(exit_head="attention", use_skip_gates=True)
    model.exit_config = ExitConfig(exit_strategy="patience", patience=1)
    model.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "exit_config.json"} | SHIPPED <= names
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_multiexit_bert.MultiExitConfig",
        "AutoModel": "modeling_multiexit_bert.MultiExitBertModel",
        "AutoModelForSequenceClassification": "modeling_multiexit_bert.MultiExitBertForSequenceClassification",
    }
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.exit_config == model.exit_config
    ids, mask, _ = padded_batch(8)
    with torch.no_grad():
        for kw in ({}, dict(exit_strategy="none"), dict(exit_strategy="skip", entropy_threshold=0.5)):
            a, b = model(ids, mask, **kw), loaded(ids, mask, **kw)
            assert torch.equal(a.logits, b.logits) and torch.equal(a.exit_layers, b.exit_layers)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(base, MultiExitBertModel) and base.exit_config.exit_strategy == "patience"
    with torch.no_grad():
        assert torch.equal(base(ids, mask).logits, model(ids, mask).logits)


def test_shipped_files_import_only_siblings_torch_and_transformers(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    for path in tmp_path.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert node.level == 1 and (node.module + ".py") in SHIPPED, (path.name, node.module)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for name in names:
                    top = name.split(".")[0]
                    assert top in {"torch", "transformers"} or top in sys.stdlib_module_names, (path.name, name)
                    assert "hf_multiexit" not in name


BLOCK_HF_MULTIEXIT = textwrap.dedent(
    """
    import sys

    class BlockHfMultiexit:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hf_multiexit":
                raise ImportError("hf_multiexit is blocked in this process")

    sys.meta_path.insert(0, BlockHfMultiexit())
    """
)
"""The start of a script for a process where `import hf_multiexit` fails, as where the package is not installed."""

REMOTE_SCRIPT = BLOCK_HF_MULTIEXIT + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    args = sys.argv[1:]
    for folder, inputs, output in zip(args[0::3], args[1::3], args[2::3]):
        batch = torch.load(inputs)
        result = {}
        for name, auto in (("cls", AutoModelForSequenceClassification), ("base", AutoModel)):
            model = auto.from_pretrained(folder, trust_remote_code=True).eval()
            assert "transformers_modules" in type(model).__module__, type(model).__module__
            with torch.no_grad():
                out = model(batch["ids"], batch["mask"])
                patience = model(batch["ids"], batch["mask"], exit_strategy="patience", patience=1)
            result[name] = (out.logits, out.exit_layers, patience.logits, patience.exit_layers)
        try:
            import hf_multiexit  # noqa: F401
            result["blocked"] = False
        except ImportError:
            result["blocked"] = True
        torch.save(result, output)
    """
)


def run_without_hf_multiexit(tmp_path, folder, ids, mask):
    """`run_many_without_hf_multiexit` for one folder."""
    return run_many_without_hf_multiexit(tmp_path, [(folder, ids, mask)])[0]


def run_many_without_hf_multiexit(tmp_path, jobs):
    """Loads each `(folder, ids, mask)` of `jobs` with `trust_remote_code=True` in one subprocess where `hf_multiexit`
    cannot be imported (one process start and transformers import for all of them), and returns per job the logits
    and exit layers of AutoModelForSequenceClassification (`cls`) and AutoModel (`base`) under the saved rule and under
    patience 1, and whether the import was blocked."""
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    argv = []
    for index, (folder, ids, mask) in enumerate(jobs):
        torch.save({"ids": ids, "mask": mask}, tmp_path / f"inputs-{index}.pt")
        argv += [str(folder), str(tmp_path / f"inputs-{index}.pt"), str(tmp_path / f"out-{index}.pt")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    proc = subprocess.run([sys.executable, str(script), *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300 * len(jobs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(tmp_path / f"out-{index}.pt") for index in range(len(jobs))]


@pytest.mark.slow
def test_folder_loads_with_trust_remote_code_without_hf_multiexit(tmp_path):
    model = tiny_model()
    model.exit_config = ExitConfig(exit_strategy="entropy", entropy_threshold=1.09)
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    ids, mask, _ = padded_batch(8)
    result = run_without_hf_multiexit(tmp_path, folder, ids, mask)
    assert result["blocked"]
    with torch.no_grad():
        expected = model(ids, mask)
        expected_patience = model(ids, mask, exit_strategy="patience", patience=1)
    for name in ("cls", "base"):
        logits, layers, p_logits, p_layers = result[name]
        assert torch.equal(logits, expected.logits) and torch.equal(layers, expected.exit_layers)
        assert torch.equal(p_logits, expected_patience.logits) and torch.equal(p_layers, expected_patience.exit_layers)


# ---------------------------------------------------------------- real MiniLM-L6 weights and SST-2 sentences


@pytest.mark.parametrize("exit_head", ["pooler", "linear", "attention"])
def test_plain_bert_checkpoint_loads_backbone_and_initialises_exits(minilm_path, exit_head):
    from transformers import BertModel

    model, info = MultiExitBertForSequenceClassification.from_pretrained(
        minilm_path, num_labels=2, exit_head=exit_head, output_loading_info=True
    )
    assert isinstance(model.config, MultiExitConfig) and model.config.num_exits == 6
    assert all(key.startswith("bert.exits.") for key in info["missing_keys"]), info["missing_keys"]
    assert info["mismatched_keys"] == [] or not info["mismatched_keys"]
    bert = BertModel.from_pretrained(minilm_path)
    ours = model.bert.state_dict()
    for key, value in bert.state_dict().items():
        if key.startswith("pooler.") and exit_head == "attention":
            continue
        assert torch.equal(ours[key], value), key
    if exit_head == "pooler":
        for head in model.bert.exits[:-1]:
            assert torch.equal(head.pooler.dense.weight, bert.pooler.dense.weight)
        assert model.bert.exits[-1].pooler is None  # the final exit uses the pretrained pooler itself
    assert model.exit_config == ExitConfig()


def test_real_model_batch_32_equals_batch_1(minilm_path, minilm_tokenizer, sst2_dev_sentences, tmp_path):
    torch.manual_seed(0)
    model = MultiExitBertForSequenceClassification.from_pretrained(minilm_path, num_labels=2).eval()
    sentences = sst2_dev_sentences[:32]
    batch = minilm_tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        full = model(**batch, output_all_exits=True)
        threshold = between_values(torch.stack([entropy(z) for z in full.all_logits[:-1]]))
        for kw in (
            dict(exit_strategy="entropy", entropy_threshold=threshold),
            dict(exit_strategy="patience", patience=1),
            dict(exit_strategy="static", exit_layer=3),
        ):
            out = model(**batch, **kw)
            singles = [model(**minilm_tokenizer([s], return_tensors="pt"), **kw) for s in sentences]
            assert torch.equal(out.exit_layers, torch.cat([o.exit_layers for o in singles])), kw
            torch.testing.assert_close(out.logits, torch.cat([o.logits for o in singles]), atol=1e-4, rtol=0)
        assert 1 < model(**batch, exit_strategy="entropy", entropy_threshold=threshold).exit_layers.float().mean() < 6
    # The saved real model loads without hf_multiexit, with identical outputs.
    model.save_pretrained(tmp_path / "ckpt")
    result = run_without_hf_multiexit(tmp_path, tmp_path / "ckpt", batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        expected = model(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(result["cls"][0], expected.logits)
