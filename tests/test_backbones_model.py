"""The backbone-neutral multi-exit model (`MultiExitModel` / `MultiExitModelForSequenceClassification`) on every
supported architecture, from tiny random checkpoints saved with the stock transformers classes (the cases of
`tests/test_backbones.py`): full-depth states and fine-tuned classifier logits equal to the stock models', early exit
at batch 32 equal to batch 1, and the loading errors."""

from __future__ import annotations

import pytest
import torch
from test_backbones import CASES, make_batch, make_config, randomize
from test_checkpoints import run_without_hf_multiexit
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, BertConfig, GPT2Config

from hf_multiexit import ExitConfig, MultiExitModel, MultiExitModelConfig, MultiExitModelForSequenceClassification

TOL = 1e-5
TYPES = sorted({model_type for model_type, _, _ in CASES.values()})


def stock_folder(tmp_path, name: str, classifier: bool = False):
    """A stock checkpoint of case `name` (eager attention, weights redrawn far from uniform), saved with
    `save_pretrained`: the base `AutoModel`, or with `classifier=True` a fine-tuned-like
    `<Arch>ForSequenceClassification` with 3 labels. Returns (folder, stock model)."""
    auto = AutoModelForSequenceClassification if classifier else AutoModel
    stock = randomize(auto.from_config(make_config(name, "eager"))).eval()
    folder = tmp_path / f"{name}-{'cls' if classifier else 'base'}"
    stock.save_pretrained(folder)
    return folder, stock


@torch.no_grad()
def middle_entropy(model, batch) -> float:
    """Halfway between the two middle entropies at the first exit: half the batch leaves there, none on the edge."""
    probs = model(**batch, output_all_exits=True).all_logits[0].softmax(-1)
    entropies = (-(probs * probs.log()).sum(-1)).sort().values
    half = len(entropies) // 2
    return float(entropies[half - 1] + entropies[half]) / 2


@pytest.mark.parametrize("name", list(CASES))
@torch.no_grad()
def test_full_depth_hidden_state_equals_stock_model(tmp_path, name):
    folder, stock = stock_folder(tmp_path, name)
    model = MultiExitModel.from_pretrained(folder, num_labels=2, attn_implementation="eager").eval()
    assert isinstance(model.config, MultiExitModelConfig) and model.config.backbone_config.model_type == CASES[name][0]
    batch = make_batch(stock.config)
    expected = stock(**batch).last_hidden_state
    out = model(**batch, output_all_exits=True, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    real = batch["attention_mask"].bool()
    assert (out.hidden_states[-1][real] - expected[real]).abs().max() <= TOL


@pytest.mark.parametrize("name", list(CASES))
@torch.no_grad()
def test_fine_tuned_classifier_gives_its_logits_at_full_depth(tmp_path, name):
    folder, stock = stock_folder(tmp_path, name, classifier=True)
    model, info = MultiExitModelForSequenceClassification.from_pretrained(
        folder, attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    assert model.config.num_labels == 3 and model.config.exit_head in ("native", "pooler")
    assert not info["unexpected_keys"], info["unexpected_keys"]
    final = f"multiexit.exits.{model.config.num_exits - 1}."
    assert not [key for key in info["missing_keys"] if key.startswith(final)], info["missing_keys"]
    batch = make_batch(stock.config)
    expected = stock(**batch).logits
    actual = model(**batch, exit_strategy="none")
    assert (actual.logits - expected).abs().max() <= TOL
    assert actual.exit_layers.tolist() == [model.config.num_hidden_layers] * len(expected)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("strategy_name", ["entropy", "patience"])
@torch.no_grad()
def test_batch_of_32_exits_as_batch_of_1(tmp_path, name, strategy_name):
    folder, stock = stock_folder(tmp_path, name)
    torch.manual_seed(0)
    model = MultiExitModelForSequenceClassification.from_pretrained(folder, num_labels=3, attn_implementation="eager")
    randomize(model.base_model.exits, seed=1)
    model.eval()
    lengths = [1 + (7 * i) % 12 for i in range(32)]
    batch = make_batch(stock.config, lengths=lengths, seed=2)
    if strategy_name == "entropy":
        strategy = dict(exit_strategy="entropy", entropy_threshold=middle_entropy(model, batch))
    else:
        strategy = dict(exit_strategy="patience", patience=1)
    together = model(**batch, **strategy)
    layers = together.exit_layers.tolist()
    assert 1 < len(set(layers)), layers  # the thresholds let some samples leave early and keep others
    for row, length in enumerate(lengths):
        single = {key: value[row : row + 1, :length] for key, value in batch.items()}
        alone = model(**single, **strategy)
        assert alone.exit_layers.item() == layers[row], row
        assert alone.logits.argmax(-1).item() == together.logits[row].argmax(-1).item(), row
        assert (alone.logits[0] - together.logits[row]).abs().max() <= 1e-4, row


@pytest.mark.parametrize("name", [name for name in CASES if name == CASES[name][0] or name == "deberta-v3"])
def test_remote_code_round_trip_without_hf_multiexit(tmp_path, name):
    """One case per architecture: the saved folder loads with `trust_remote_code=True` (AutoModel and
    AutoModelForSequenceClassification) in a process where `hf_multiexit` cannot be imported, with identical logits
    and exit layers under the saved exit configuration and under patience. The reference is the same folder loaded
    with hf_multiexit: the in-memory model can differ in the last bit (1e-7), since the weights' memory alignment
    after loading changes the reduction order of vectorised kernels."""
    folder, stock = stock_folder(tmp_path, name)
    model = MultiExitModelForSequenceClassification.from_pretrained(folder, num_labels=3)
    randomize(model.base_model.exits, seed=1)
    batch = make_batch(stock.config)
    model.eval().exit_config = ExitConfig(exit_strategy="entropy", entropy_threshold=middle_entropy(model, batch))
    model.save_pretrained(tmp_path / "multiexit")
    result = run_without_hf_multiexit(tmp_path, tmp_path / "multiexit", batch["input_ids"], batch["attention_mask"])
    assert result["blocked"]
    model = MultiExitModelForSequenceClassification.from_pretrained(tmp_path / "multiexit").eval()
    with torch.no_grad():
        expected = model(batch["input_ids"], batch["attention_mask"])
        expected_patience = model(batch["input_ids"], batch["attention_mask"], exit_strategy="patience", patience=1)
    assert 1 < len(set(expected.exit_layers.tolist()))  # some samples leave early
    for auto in ("cls", "base"):
        logits, layers, patience_logits, patience_layers = result[auto]
        assert torch.equal(logits, expected.logits) and torch.equal(layers, expected.exit_layers), auto
        assert torch.equal(patience_logits, expected_patience.logits), auto
        assert torch.equal(patience_layers, expected_patience.exit_layers), auto


def test_unknown_model_type_is_a_value_error_naming_it_and_the_supported_ones(tmp_path):
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'gpt2'.*" + ".*".join(f"'{t}'" for t in TYPES)):
        MultiExitModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    with pytest.raises(ValueError, match=r"'gpt2'"):
        MultiExitModelConfig(backbone_config=GPT2Config())


def test_checkpoint_missing_backbone_weights_is_an_error(tmp_path):
    """A checkpoint of another architecture under a supported config (here ModernBERT weights under a RoBERTa
    config) would leave the backbone random: an error naming the missing weights."""
    folder, _ = stock_folder(tmp_path, "modernbert")
    make_config("roberta", "eager").save_pretrained(folder)  # the ModernBERT weights stay
    assert AutoConfig.from_pretrained(folder).model_type == "roberta"
    with pytest.raises(ValueError, match=r"does not hold all backbone weights of a 'roberta' model: \d+ missing"):
        MultiExitModelForSequenceClassification.from_pretrained(folder, num_labels=3)


def test_plain_bert_loads_without_model_type_warning(tmp_path, caplog):
    from hf_multiexit import MultiExitBertForSequenceClassification

    folder, _ = stock_folder(tmp_path, "bert")
    with caplog.at_level("WARNING"):
        MultiExitBertForSequenceClassification.from_pretrained(folder, num_labels=2)
        MultiExitModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    assert "to instantiate a model of type" not in caplog.text
    assert isinstance(AutoConfig.from_pretrained(folder), BertConfig)
