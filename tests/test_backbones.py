"""Backbone adapters (`hf_multiexit/models/multiexit_bert/backbones.py`) against the stock transformers models.

Every case is a tiny random config built from the stock config class; the stock model is the reference. The
step-by-step run must equal the stock `last_hidden_state`, compaction (rows leaving, padding columns cut, context
rebuilt) must not change any remaining row, and the native head must reproduce the stock classifier's logits.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AlbertConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

from hf_multiexit.models.multiexit_bert import backbones
from hf_multiexit.models.multiexit_bert.backbones import (
    BACKBONE_ADAPTERS,
    BackboneAdapter,
    get_backbone_adapter,
    register_backbone,
)

TOL = 1e-5
VOCAB = 97
LENGTHS = (12, 5, 9, 1)  # padded to 12; the sliding windows below are narrower than that
BERT_SIZES = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37)
LABELS = dict(num_labels=3)
ROBERTA_IDS = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)
DISTILBERT_SIZES = dict(vocab_size=VOCAB, dim=32, n_layers=3, n_heads=4, hidden_dim=37, max_position_embeddings=32)

MODERNBERT_SIZES = dict(vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                        max_position_embeddings=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                        sep_token_id=2)
BOTH = ("eager", "sdpa")

# name -> (model_type, config factory, attention implementations to test)
CASES = {
    "bert": ("bert", partial(BertConfig, **BERT_SIZES, max_position_embeddings=32, **LABELS), BOTH),
    # pad_token_id 1: positions count from padding_idx + 1 = 2, so position ids differ from BERT's.
    "roberta": ("roberta", partial(RobertaConfig, **BERT_SIZES, **ROBERTA_IDS, max_position_embeddings=34, **LABELS),
                BOTH),
    "xlm-roberta": ("xlm-roberta", partial(XLMRobertaConfig, **BERT_SIZES, **ROBERTA_IDS, max_position_embeddings=34,
                                           **LABELS), BOTH),
    "electra": ("electra", partial(ElectraConfig, **BERT_SIZES, embedding_size=16, max_position_embeddings=32,
                                   **LABELS), BOTH),
    # 4 steps over 2 groups of 2 inner layers: steps 0,1 share group 0, steps 2,3 share group 1.
    "albert": ("albert", partial(AlbertConfig, vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=4,
                                 num_hidden_groups=2, inner_group_num=2, num_attention_heads=4, intermediate_size=37,
                                 max_position_embeddings=32, classifier_dropout_prob=0.1, **LABELS), BOTH),
    "distilbert": ("distilbert", partial(DistilBertConfig, **DISTILBERT_SIZES, **LABELS), BOTH),
    "distilbert-sinusoidal": ("distilbert", partial(DistilBertConfig, **DISTILBERT_SIZES, sinusoidal_pos_embds=True,
                                                    **LABELS), BOTH),
    # v3-like: relative attention with log buckets narrower than the batch, both attention kinds with a shared key,
    # layer-normed relative embeddings, no absolute positions, the convolution after layer 0, segments.
    # DebertaV2Model has no sdpa path.
    "deberta-v3": ("deberta-v2", partial(DebertaV2Config, **BERT_SIZES, max_position_embeddings=32,
                                         relative_attention=True, position_buckets=4, max_relative_positions=16,
                                         pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm",
                                         position_biased_input=False, conv_kernel_size=3, conv_act="gelu",
                                         type_vocab_size=2, **LABELS), ("eager",)),
    # v2-like: absolute positions, unbucketed relative attention with separate position projections, c2p only,
    # embeddings narrower than hidden (embed_proj), no convolution, a classifier dropout of its own.
    "deberta-v2": ("deberta-v2", partial(DebertaV2Config, **BERT_SIZES, embedding_size=16, max_position_embeddings=32,
                                         relative_attention=True, max_relative_positions=8, pos_att_type="c2p",
                                         position_biased_input=True, cls_dropout=0.2, **LABELS), ("eager",)),
    # Layers 0 and 2 global, 1 and 3 sliding (2 tokens each side).
    "modernbert": ("modernbert", partial(ModernBertConfig, **MODERNBERT_SIZES, num_hidden_layers=4,
                                         global_attn_every_n_layers=2, local_attention=4, **LABELS), BOTH),
    "modernbert-mean": ("modernbert", partial(ModernBertConfig, **MODERNBERT_SIZES, num_hidden_layers=3,
                                              global_attn_every_n_layers=3, local_attention=6,
                                              classifier_pooling="mean", **LABELS), BOTH),
}
CASE_IMPLS = [(name, impl) for name, (_, _, impls) in CASES.items() for impl in impls]
SEGMENTS = ("bert", "roberta", "xlm-roberta", "electra", "albert", "deberta-v2")  # model types with token types


def make_config(name: str, impl: str):
    model_type, factory, _ = CASES[name]
    config = factory()
    config._attn_implementation = impl
    assert config.model_type == model_type
    return config


def make_batch(config, lengths=LENGTHS, seed=0):
    """Padded batch: real tokens avoid the special ids, padding uses `pad_token_id`; segment ids where the model
    has segments (second half of each row is segment 1)."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(3, VOCAB, (len(lengths), width), generator=generator)
    attention_mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids[attention_mask == 0] = config.pad_token_id
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if config.model_type in SEGMENTS:
        second_half = torch.arange(width)[None, :] * 2 >= torch.tensor(lengths)[:, None]
        batch["token_type_ids"] = (second_half & (attention_mask == 1)).long()
    return batch


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Redraws every weight so that attention is far from uniform: with the stock initialisation (std 0.02) the
    scores are nearly zero, and a wrong position encoding or rotary frequency changes the output by less than
    the tolerance. Matrices get std 0.15 (scores of order 1), vectors (biases, norms) a perturbation."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        parameter.copy_(noise * 0.15 if parameter.dim() > 1 else parameter + noise * 0.1)
    return model


def built_and_stock(name: str, impl: str):
    """The adapter, the backbone it builds, and a stock `AutoModel` holding the same weights."""
    config = make_config(name, impl)
    adapter = get_backbone_adapter(config.model_type)
    backbone = randomize(adapter.build(config).eval())
    stock = AutoModel.from_config(make_config(name, impl)).eval()
    # Weights load by the stock names: only an optional pooler the adapter leaves out may be missing.
    missing, unexpected = stock.load_state_dict(backbone.state_dict(), strict=False)
    assert unexpected == []
    assert all(key.startswith("pooler.") for key in missing), missing
    assert backbone.config._attn_implementation == impl == stock.config._attn_implementation
    return adapter, backbone, stock


def assert_close_at(actual: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor, what: str) -> None:
    """Max difference over the real (mask == 1) positions below `TOL`; fails on NaN."""
    real = mask.bool()
    difference = (actual[real] - expected[real]).abs().max().item()
    assert difference <= TOL, f"{what}: max difference {difference:.3g} at real positions"


@pytest.mark.parametrize("name,impl", CASE_IMPLS)
@torch.no_grad()
def test_step_by_step_equals_stock_model(name, impl):
    adapter, backbone, stock = built_and_stock(name, impl)
    batch = make_batch(backbone.config)
    expected = stock(**batch).last_hidden_state
    actual = adapter.encode(backbone, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    assert actual.shape == expected.shape
    assert_close_at(actual, expected, batch["attention_mask"], f"{name}/{impl}")


@pytest.mark.parametrize("name,impl", CASE_IMPLS)
@torch.no_grad()
def test_no_mask_equals_stock_model(name, impl):
    """`attention_mask=None` (no padding; masks may then be skipped, ModernBERT's sliding window may not)."""
    adapter, backbone, stock = built_and_stock(name, impl)
    batch = make_batch(backbone.config, lengths=(10, 10))
    del batch["attention_mask"]
    expected = stock(**batch).last_hidden_state
    actual = adapter.encode(backbone, batch["input_ids"], None, batch.get("token_type_ids"))
    assert_close_at(actual, expected, torch.ones(expected.shape[:2]), f"{name}/{impl}")


@pytest.mark.parametrize("name,impl", CASE_IMPLS)
@torch.no_grad()
def test_compaction_keeps_every_row(name, impl):
    """The exit loop: after each step but the last one row leaves (longest first, so padding columns get cut), the
    others are trimmed to their longest length and the context is rebuilt; each remaining row's states equal those
    of the full batch run without compaction."""
    config = make_config(name, impl)
    adapter = get_backbone_adapter(config.model_type)
    backbone = randomize(adapter.build(config).eval())
    batch = make_batch(config)
    mask = batch["attention_mask"]
    embedded = adapter.embed(backbone, batch["input_ids"], batch.get("token_type_ids"), mask)
    steps = adapter.num_layers(config)

    hidden, ctx, reference = embedded, adapter.layer_context(backbone, embedded, mask), []
    for index in range(steps):
        hidden = adapter.run_layer(backbone, index, hidden, ctx)
        reference.append(hidden)
    reference.append(adapter.final(backbone, hidden))

    rows, hidden, sub_mask = torch.arange(len(LENGTHS)), embedded, mask
    ctx = adapter.layer_context(backbone, hidden, sub_mask)
    leaving = sorted(range(len(LENGTHS)), key=lambda row: -LENGTHS[row])
    widths = []
    for index in range(steps):
        hidden = adapter.run_layer(backbone, index, hidden, ctx)
        assert_close_at(hidden, reference[index][rows, : hidden.shape[1]], sub_mask, f"{name}/{impl} step {index}")
        if index < steps - 1:
            staying = rows != leaving[index]
            rows, hidden, sub_mask = rows[staying], hidden[staying], sub_mask[staying]
            length = int(sub_mask.sum(dim=1).max())
            hidden, sub_mask = hidden[:, :length], sub_mask[:, :length]
            widths.append(length)
            ctx = adapter.layer_context(backbone, hidden, sub_mask)
    final = adapter.final(backbone, hidden)
    assert_close_at(final, reference[-1][rows, : final.shape[1]], sub_mask, f"{name}/{impl} final")
    assert widths[:2] == [9, 5]  # rows left and columns were cut, with padding still inside the batch at 9


@pytest.mark.parametrize("name", list(CASES))
@torch.no_grad()
def test_native_head_reproduces_stock_classifier(name):
    config = make_config(name, "eager")
    adapter = get_backbone_adapter(config.model_type)
    stock = randomize(AutoModelForSequenceClassification.from_config(config).eval())
    state = stock.state_dict()
    prefix = adapter.base_model_prefix + "."
    assert isinstance(getattr(stock, adapter.base_model_prefix), adapter.model_class)

    # Every stock key is either a head key the map moves, or a backbone key the adapter's model loads by name.
    backbone_keys = set(adapter.build(make_config(name, "eager")).state_dict())
    head_state = adapter.map_head_state_dict(state)
    mapped = {key for key in state if any(key.startswith(stock_prefix) for stock_prefix in adapter.head_key_map)}
    for key in set(state) - mapped:
        assert key.startswith(prefix) and key[len(prefix) :] in backbone_keys, key
    assert {prefix + key for key in backbone_keys} <= set(state)

    head = adapter.native_head(config).eval()
    head.load_state_dict(head_state, strict=True)
    batch = make_batch(config)
    base_model = getattr(stock, adapter.base_model_prefix)
    hidden = adapter.encode(base_model, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    expected = stock(**batch).logits
    actual = head(hidden, batch["attention_mask"])
    assert actual.shape == expected.shape == (len(LENGTHS), 3)
    difference = (actual - expected).abs().max().item()
    assert difference <= TOL, f"{name}: native head max difference {difference:.3g}"


@pytest.mark.parametrize("name", list(CASES))
def test_layer_and_embed_flops_match_the_flop_counter(name):
    # With grad enabled: under no_grad the counter's module hooks fail on DeBERTa's `rel_embeddings` (a weight
    # passed to every layer as an argument). Only the forward runs, so only forward FLOPs are counted.
    config = make_config(name, "eager")
    adapter = get_backbone_adapter(config.model_type)
    backbone = adapter.build(config).eval()
    n = 7
    batch = make_batch(config, lengths=(n,))
    with FlopCounterMode(display=False) as counter:
        hidden = adapter.embed(backbone, batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"])
    assert counter.get_total_flops() == adapter.embed_flops(config, n)
    ctx = adapter.layer_context(backbone, hidden, batch["attention_mask"])
    for index in range(adapter.num_layers(config)):
        with FlopCounterMode(display=False) as counter:
            hidden = adapter.run_layer(backbone, index, hidden, ctx)
        assert counter.get_total_flops() == adapter.layer_flops(config, n, index), f"step {index}"


@pytest.mark.parametrize("name", list(CASES))
def test_lora_targets_are_the_query_and_value_projections(name):
    """Each target names one `nn.Linear` in every distinct layer module (ALBERT: in each shared inner layer) and
    nothing outside the layers."""
    config = make_config(name, "eager")
    adapter = get_backbone_adapter(config.model_type)
    backbone = adapter.build(config)
    steps = range(adapter.num_layers(config))
    layers = {id(module): module for module in (adapter.layer_module(backbone, index) for index in steps)}
    # ALBERT's steps share groups of `inner_group_num` layers; elsewhere one attention layer per step.
    attention_layers = config.num_hidden_groups * config.inner_group_num if name == "albert" else len(steps)
    targets = adapter.lora_target_modules(config)
    assert targets
    for target in targets:
        found = [module for module_name, module in backbone.named_modules() if module_name.split(".")[-1] == target]
        assert all(isinstance(module, nn.Linear) for module in found), target
        in_layers = [
            module
            for layer in layers.values()
            for module_name, module in layer.named_modules()
            if module_name.split(".")[-1] == target
        ]
        assert len(found) == len(in_layers) == attention_layers, (target, len(found), len(in_layers))


def test_registry_covers_the_supported_types():
    assert set(BACKBONE_ADAPTERS) == {
        "bert", "roberta", "xlm-roberta", "electra", "albert", "distilbert", "deberta-v2", "modernbert",
    }
    for model_type, adapter in BACKBONE_ADAPTERS.items():
        assert adapter.model_type == model_type
        assert adapter.model_class.base_model_prefix == adapter.base_model_prefix


def test_albert_steps_apply_its_shared_groups():
    """One step (and exit) per application: 4 steps over 2 groups run group 0, 0, 1, 1 (`AlbertTransformer`)."""
    config = make_config("albert", "eager")
    adapter = get_backbone_adapter("albert")
    backbone = adapter.build(config)
    groups = backbone.encoder.albert_layer_groups
    assert adapter.num_layers(config) == 4
    assert [adapter.layer_module(backbone, index) for index in range(4)] == [groups[0], groups[0], groups[1], groups[1]]


def test_unknown_model_type_is_a_value_error_naming_it_and_the_supported_list():
    with pytest.raises(ValueError, match="'gpt2'") as error:
        get_backbone_adapter("gpt2")
    for model_type in BACKBONE_ADAPTERS:
        assert repr(model_type) in str(error.value)


def test_register_backbone_adds_a_type_and_refuses_duplicates():
    try:

        @register_backbone("tiny-test-encoder")
        class TinyAdapter(backbones.BertAdapter):
            pass

        assert isinstance(get_backbone_adapter("tiny-test-encoder"), TinyAdapter)
        assert TinyAdapter.model_type == "tiny-test-encoder"
    finally:
        BACKBONE_ADAPTERS.pop("tiny-test-encoder", None)
    with pytest.raises(ValueError, match="'bert'"):
        register_backbone("bert")(type("Duplicate", (BackboneAdapter,), {}))


def test_modernbert_refuses_custom_position_ids():
    config = make_config("modernbert", "eager")
    adapter = get_backbone_adapter("modernbert")
    backbone = adapter.build(config)
    batch = make_batch(config)
    with pytest.raises(ValueError, match="position_ids"):
        adapter.embed(backbone, batch["input_ids"], None, batch["attention_mask"], torch.zeros_like(batch["input_ids"]))
