"""The backbone-neutral multi-exit model (`MultiExitModel` / `MultiExitModelForSequenceClassification`) on every
supported architecture, from tiny random checkpoints saved with the stock transformers classes (the cases of
`tests/test_backbones.py`): full-depth states and fine-tuned classifier logits equal to the stock models', early exit
at batch 32 equal to batch 1, and the loading errors."""

from __future__ import annotations

import pytest
import torch
from test_backbones import CASES, make_batch, make_config, randomize
from test_checkpoints import run_many_without_hf_multiexit
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, BertConfig, GPT2Config

from hf_multiexit import (
    ExitConfig,
    MultiExitConfig,
    MultiExitModel,
    MultiExitModelConfig,
    MultiExitModelForSequenceClassification,
)

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


REMOTE_CASES = [name for name in CASES if name == CASES[name][0] or name == "deberta-v3"]
"""One case per architecture (and DeBERTa-v3 beside v2)."""


@pytest.fixture(scope="module")
def remote_round_trips(tmp_path_factory):
    """Per case of `REMOTE_CASES`: its saved multi-exit folder (exits redrawn, entropy rule at the middle entropy), its
    batch, and what the folder gave with `trust_remote_code=True` in a process without hf_multiexit (all cases in one
    subprocess: one transformers import instead of one per architecture)."""
    root = tmp_path_factory.mktemp("remote")
    cases = {}
    for name in REMOTE_CASES:
        folder, stock = stock_folder(root, name)
        model = MultiExitModelForSequenceClassification.from_pretrained(folder, num_labels=3)
        randomize(model.base_model.exits, seed=1)
        batch = make_batch(stock.config)
        model.eval().exit_config = ExitConfig(exit_strategy="entropy", entropy_threshold=middle_entropy(model, batch))
        model.save_pretrained(root / f"multiexit-{name}")
        cases[name] = (root / f"multiexit-{name}", batch)
    jobs = [(folder, batch["input_ids"], batch["attention_mask"]) for folder, batch in cases.values()]
    results = run_many_without_hf_multiexit(root, jobs)
    return {name: (*cases[name], result) for name, result in zip(cases, results)}


@pytest.mark.slow
@pytest.mark.parametrize("name", REMOTE_CASES)
def test_remote_code_round_trip_without_hf_multiexit(remote_round_trips, name):
    """One case per architecture: the saved folder loads with `trust_remote_code=True` (AutoModel and
    AutoModelForSequenceClassification) in a process where `hf_multiexit` cannot be imported, with identical logits
    and exit layers under the saved exit configuration and under patience. The reference is the same folder loaded
    with hf_multiexit: the in-memory model can differ in the last bit (1e-7), since the weights' memory alignment
    after loading changes the reduction order of vectorised kernels."""
    folder, batch, result = remote_round_trips[name]
    assert result["blocked"]
    model = MultiExitModelForSequenceClassification.from_pretrained(folder).eval()
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


def test_flat_bert_checkpoint_under_the_any_backbone_class_names_the_class_to_use(tmp_path):
    MultiExitConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'multiexit_bert' checkpoint.*MultiExitBertForSequenceClassification or "
                                         r"AutoModelForSequenceClassification"):
        MultiExitModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MultiExitConfig)


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


# ---------------------------------------------------------------- training, LoRA and FLOPs on every architecture

ARCHITECTURES = [name for name in CASES if name == CASES[name][0]]  # one case per model_type, deberta-v2 as v2
TRAIN_VOCAB = 100  # the toy task's token ids are below 99


def toy_backbone_model(tmp_path, name: str, **options) -> MultiExitModelForSequenceClassification:
    """A 2-label multi-exit model on a tiny stock checkpoint of case `name` (stock initialisation), no dropout."""
    config = make_config(name, "eager")
    config.vocab_size = TRAIN_VOCAB
    folder = tmp_path / f"{name}-stock"
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    return MultiExitModelForSequenceClassification.from_pretrained(folder, num_labels=2, **options)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("method", ["curriculum", "deebert", "leebert", "pabee", "romebert", "smartbert"])
def test_every_method_trains_every_architecture(tmp_path, name, method):
    from test_trainers import ToyTask, toy_args
    from toy_training import MODEL_OPTIONS

    from hf_multiexit.trainers import METHODS, get_method

    assert sorted(METHODS) == ["curriculum", "deebert", "leebert", "pabee", "romebert", "smartbert"]
    config_class, trainer_class = get_method(method)
    model = toy_backbone_model(tmp_path, name, **MODEL_OPTIONS.get(method, {}))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    args = toy_args(config_class, tmp_path, max_steps=4, per_device_train_batch_size=8, learning_rate=1e-2)
    trainer = trainer_class(model=model, args=args, train_dataset=ToyTask(32), eval_dataset=ToyTask(16, seed=1))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    changed = {key for key, value in model.state_dict().items() if not torch.equal(value, before[key])}
    assert any(key.startswith("multiexit.exits.0.") for key in changed), method
    metrics = trainer.evaluate()
    assert f"eval_exit_{model.config.num_hidden_layers}_accuracy" in metrics


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_lora_wraps_every_architecture(tmp_path, name):
    from hf_multiexit.lora import add_lora, layer_projections

    model = toy_backbone_model(tmp_path, name)
    adapter = model.config.backbone_adapter
    targets = adapter.lora_target_modules(model.config.backbone_config)
    expected = {full for target in targets for full in layer_projections(model)[target]}
    peft_model = add_lora(model, r=2)
    wrapped = {name.removeprefix("base_model.model.") for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == expected and expected
    assert all(".exits." not in name for name in wrapped)
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lora_A" in name for name in trainable) and any(".exits.0.modules_to_save." in name for name in trainable)
    assert not any(".exits." not in name and "lora_" not in name and "modules_to_save" not in name for name in trainable)
    batch = make_batch(model.config.backbone_config, lengths=(8, 5))
    batch["input_ids"] = batch["input_ids"] % TRAIN_VOCAB
    loss = peft_model(**batch, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", list(CASES))
def test_flops_count_the_work_the_flop_counter_sees(tmp_path, name):
    """Full-depth FLOPs from `hf_multiexit.flops` equal `torch.utils.flop_counter`'s count of the model's forward
    at batch 1 (embeddings, every layer, the final native head), within 1% (the counter also sees the rotary
    frequencies' products that the formula leaves out). With gradients on: the counter's module hooks fail on
    DeBERTa's layers under `no_grad`."""
    from torch.utils.flop_counter import FlopCounterMode

    from hf_multiexit.flops import full_depth_flops

    folder, stock = stock_folder(tmp_path, name)
    model = MultiExitModelForSequenceClassification.from_pretrained(
        folder, num_labels=3, exit_head="native", attn_implementation="eager"
    ).eval()
    batch = {key: value[:1, :9] for key, value in make_batch(stock.config, lengths=(9,)).items()}
    with FlopCounterMode(display=False) as counter:
        model(**batch, exit_strategy="none")
    assert abs(float(full_depth_flops(model.config, [9])[0]) - counter.get_total_flops()) <= 0.01 * counter.get_total_flops()


@pytest.mark.parametrize("name", ["roberta", "modernbert"])
def test_deebert_second_stage_adds_exits_to_a_fine_tuned_classifier(tmp_path, name):
    """`skip_first_stage`: only the intermediate exits train; the model keeps the fine-tuned checkpoint's logits at
    full depth."""
    from test_trainers import ToyTask, toy_args

    from hf_multiexit import DeeBertConfig, DeeBertTrainer

    config = make_config(name, "eager")
    config.vocab_size, config.num_labels = TRAIN_VOCAB, 2
    stock = randomize(AutoModelForSequenceClassification.from_config(config)).eval()
    stock.save_pretrained(tmp_path / "fine-tuned")
    model = MultiExitModelForSequenceClassification.from_pretrained(tmp_path / "fine-tuned")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    args = toy_args(DeeBertConfig, tmp_path, skip_first_stage=True, num_train_epochs=1, learning_rate=1e-2)
    DeeBertTrainer(model=model, args=args, train_dataset=ToyTask(32)).train()
    changed = {key for key, value in model.state_dict().items() if not torch.equal(value, before[key])}
    final = f"multiexit.exits.{model.config.num_exits - 1}."
    assert changed and all(key.startswith("multiexit.exits.") and not key.startswith(final) for key in changed)
    assert not (tmp_path / "out" / "stage-1").exists()
    batch = {key: value % TRAIN_VOCAB if key == "input_ids" else value for key, value in make_batch(stock.config).items()}
    with torch.no_grad():
        assert (model.eval()(**batch, exit_strategy="none").logits - stock(**batch).logits).abs().max() <= TOL


def test_mean_pooling_default_follows_the_sentence_transformers_folder(minilm_path, tmp_path):
    from hf_multiexit import MultiExitBertForSequenceClassification

    for model_class in (MultiExitModelForSequenceClassification, MultiExitBertForSequenceClassification):
        assert model_class.from_pretrained(minilm_path, num_labels=2).config.exit_pooling == "mean"
        assert model_class.from_pretrained(minilm_path, num_labels=2, exit_pooling="cls").config.exit_pooling == "cls"
    folder, _ = stock_folder(tmp_path, "bert")  # no modules.json
    assert MultiExitModelForSequenceClassification.from_pretrained(folder, num_labels=2).config.exit_pooling == "cls"
    # Saved and loaded back, the choice stays.
    model = MultiExitModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    model.save_pretrained(tmp_path / "saved")
    assert MultiExitModelForSequenceClassification.from_pretrained(tmp_path / "saved").config.exit_pooling == "mean"
