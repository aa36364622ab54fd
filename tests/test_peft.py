"""LoRA (hf_multiexit.lora) with every trainer: the backbone stays frozen, adapters and exit heads train, the adapter
saves and loads, and early exit gives the same results merged and unmerged; and `hf-multiexit train --lora_r` on the
real MiniLM."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.cli import main
from hf_multiexit.lora import add_lora, load_lora, merged_copy, save_lora
from hf_multiexit.trainers import METHODS
from test_cli import train_args
from toy_training import CASES, EVAL_SIZE, MODEL_OPTIONS, ToyTask, build_trainer, final_weights, toy_model


def eval_batch():
    data = ToyTask(EVAL_SIZE, seed=1)
    return {k: torch.stack([data[i][k] for i in range(len(data))]) for k in ("input_ids", "attention_mask")}


def mixed_entropy_threshold(model, batch) -> float:
    """A threshold that lets about half the samples leave at the first exit, halfway between two entropies so that
    float rounding cannot move a sample across it."""
    with torch.no_grad():
        log_p = torch.log_softmax(model(**batch, output_all_exits=True).all_logits[0], dim=-1)
    entropy = (-(log_p.exp() * log_p).sum(-1)).sort().values
    middle = len(entropy) // 2
    return float(entropy[middle - 1] + entropy[middle]) / 2


def assert_same_exits(a, b):
    assert torch.equal(a.exit_layers, b.exit_layers)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(METHODS))
def test_lora_trains_adapters_and_exit_heads_and_merges_exactly(tmp_path, case):
    trainer = build_trainer(case, tmp_path / "out", lora={"r": 4})
    model = trainer.model
    before = final_weights(model)
    trainer.train()
    after = final_weights(model)
    trained = {name for name in after if not torch.equal(after[name], before[name])}
    assert trained and all("lora_" in name or ".modules_to_save." in name for name in trained)
    assert any("lora_" in name for name in trained) and any(".exits.0.modules_to_save." in name for name in trained)

    model.eval()
    batch = eval_batch()
    threshold = mixed_entropy_threshold(model, batch)
    rules = [{}, {"exit_strategy": "entropy", "entropy_threshold": threshold}]  # the method's saved rule, and a mixed one
    with torch.no_grad():
        unmerged = [model(**batch, **rule) for rule in rules]
    assert 1 < len(set(unmerged[1].exit_layers.tolist()))

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    toy_model(**MODEL_OPTIONS.get(CASES[case][0], {})).save_pretrained(base_dir)  # the weights LoRA started from
    save_lora(model, adapter_dir)
    loaded = load_lora(adapter_dir, base_model_name_or_path=str(base_dir)).eval()
    merged = merged_copy(loaded).eval()
    assert type(merged) is MultiExitBertForSequenceClassification
    assert merged.exit_config == model.get_base_model().exit_config
    with torch.no_grad():
        for rule, expected in zip(rules, unmerged):
            assert_same_exits(loaded(**batch, **rule), expected)
            assert_same_exits(merged(**batch, **rule), expected)


def test_lora_options_are_checked():
    with pytest.raises(ValueError, match=r"rank r=0 must be a positive integer"):
        add_lora(toy_model(), r=0)
    with pytest.raises(ValueError, match=r"target_modules=\['qkv'\] must be a non-empty subset of \['query'"):
        add_lora(toy_model(), target_modules=["qkv"])


def test_train_command_with_lora_on_minilm(minilm_path, glue_dir, tmp_path, minilm_tokenizer):
    out = tmp_path / "lora"
    args = train_args(minilm_path, glue_dir, out, "romebert", "--lora_r", "4", "--learning_rate", "1e-3")
    assert main(args) == 0
    assert json.loads((out / "eval_results.json").read_text())["final"]["accuracy"] >= 0.0
    merged = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    adapter = load_lora(out / "adapter").eval()
    batch = minilm_tokenizer(["a charming and often affecting journey .", "a dull , lifeless film ."], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert_same_exits(merged(**batch, exit_strategy="entropy", entropy_threshold=0.68), adapter(**batch, exit_strategy="entropy", entropy_threshold=0.68))
        assert_same_exits(merged(**batch), adapter(**batch))
