# Copyright 2026 The hf-multiexit authors. Licensed under the Apache License, Version 2.0.
"""Backbone adapters: how the exit loop runs each supported encoder one layer at a time.

The multi-exit model holds the stock transformers base model (`BertModel`, `RobertaModel`, `DebertaV2Model`,
`ModernBertModel`, ...) built by `adapter.build(config)` under the attribute `adapter.base_model_prefix`, so that
checkpoints load by their stock names. An adapter is a stateless object that drives that model's own submodules
step by step; it copies none of their code:

    adapter = get_backbone_adapter(config.model_type)
    backbone = adapter.build(config)
    hidden = adapter.embed(backbone, input_ids, token_type_ids, attention_mask)
    ctx = adapter.layer_context(backbone, hidden, attention_mask)
    for index in range(adapter.num_layers(config)):
        hidden = adapter.run_layer(backbone, index, hidden, ctx)
        # exit here; rows may leave and trailing padding columns be cut, then for what remains:
        # ctx = adapter.layer_context(backbone, hidden, attention_mask)
    hidden = adapter.final(backbone, hidden)  # what the stock model returns as `last_hidden_state`

`final` is the identity except for pre-norm ModernBERT (its `final_norm`), whose native head has only ever seen
normed states: intermediate exits there may want `final` applied to their input too (the stream itself stays
un-normed).

`layer_context` depends only on the current rows' `hidden` (its batch size, length, dtype and device) and their
`attention_mask`, so the exit loop can rebuild it after removing rows and trimming columns. Masks come from
transformers' own mask utilities (`create_bidirectional_mask`, ...) in the format of `config._attn_implementation`,
as the stock forward builds them (DeBERTa-v2, whose attention is its own: its encoder's `get_attention_mask`).
`attention_mask` is the 2D `(B, S)` 0/1 padding mask throughout; None means no padding. The mask utilities are
called with `allow_is_bidirectional_skip=False`: the exit loop already knows whether a batch has padding (it passes
None when not), and their own all-ones test would cost a host synchronisation per context.

Adapters are registered by `model_type` with `@register_backbone`; `get_backbone_adapter` looks them up. Each one
also knows its architecture's own sequence-classification head (`native_head`, with the key mapping from a stock
`<Arch>ForSequenceClassification` checkpoint), its LoRA target modules and its FLOPs per layer.

This file travels to the Hub with saved checkpoints: it may import only torch, transformers and sibling files.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask
from transformers.models.albert.modeling_albert import AlbertModel
from transformers.models.bert.modeling_bert import BertModel, BertPooler
from transformers.models.deberta_v2.modeling_deberta_v2 import ContextPooler, DebertaV2Model
from transformers.models.distilbert.modeling_distilbert import DistilBertModel
from transformers.models.electra.modeling_electra import ElectraClassificationHead, ElectraModel
from transformers.models.modernbert.modeling_modernbert import ModernBertModel, ModernBertPredictionHead
from transformers.models.roberta.modeling_roberta import RobertaClassificationHead, RobertaModel
from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaClassificationHead, XLMRobertaModel

__all__ = [
    "BACKBONE_ADAPTERS",
    "BackboneAdapter",
    "NativeHead",
    "get_backbone_adapter",
    "register_backbone",
]

BACKBONE_ADAPTERS: dict[str, BackboneAdapter] = {}
"""The registered adapters (instances), by `config.model_type`."""


def register_backbone(model_type: str):
    """Class decorator registering an adapter (a `BackboneAdapter` subclass, instantiated once) for `model_type`."""

    def decorator(cls: type[BackboneAdapter]) -> type[BackboneAdapter]:
        if model_type in BACKBONE_ADAPTERS:
            raise ValueError(f"A backbone adapter for model_type {model_type!r} is already registered.")
        cls.model_type = model_type
        BACKBONE_ADAPTERS[model_type] = cls()
        return cls

    return decorator


def get_backbone_adapter(model_type: str) -> BackboneAdapter:
    """The adapter for `model_type`; `ValueError` naming it and the supported types when there is none."""
    try:
        return BACKBONE_ADAPTERS[model_type]
    except KeyError:
        raise ValueError(
            f"Unsupported backbone model_type {model_type!r}; supported: {sorted(BACKBONE_ADAPTERS)}."
        ) from None


def _attention_block_flops(n, hidden: int, width: int, intermediate: int, ffn_factor: int = 4):
    """Matrix-product FLOPs (2 per multiply-add, as `torch.utils.flop_counter` counts) of one self-attention +
    feed-forward layer on `n` tokens: Q, K, V and output projections `8nHW`, scores and weighted values `4n²W`
    (width `W` = heads x head size), feed-forward `ffn_factor·n·H·I` (4 for two linear layers, 6 for a GLU)."""
    return 8 * n * hidden * width + 4 * n * n * width + ffn_factor * n * hidden * intermediate


def _projection_flops(n, embedding_size: int, hidden_size: int):
    """An embeddings-to-hidden projection that exists only when the sizes differ (ELECTRA, DeBERTa-v2); `0 * n`
    keeps the type of `n` (int or array)."""
    return 2 * n * embedding_size * hidden_size if embedding_size != hidden_size else 0 * n


def _attention_width(config) -> int:
    return config.num_attention_heads * (config.hidden_size // config.num_attention_heads)


class BackboneAdapter:
    """Runs one architecture's stock base model layer by layer (see the module docstring for the protocol).

    Class attributes:
        model_type: the `config.model_type` it is registered for (set by `register_backbone`).
        model_class: the stock base model class; its `_supports_sdpa` etc. say which attention implementations work.
        base_model_prefix: the attribute under which `<Arch>ForSequenceClassification` holds the base model (and
            under which the multi-exit model should hold it, so that checkpoints load by their stock names).
        head_key_map: stock `<Arch>ForSequenceClassification` state-dict key prefix -> `native_head` key prefix.
        lora_modules: names of the attention query/value projections (PEFT `target_modules`).
        has_pooler: whether the built base model keeps a pretrained pooler (`backbone.pooler`, first token ->
            dense -> tanh), which the multi-exit "pooler"/"linear" exit heads read.
        classifier_dropout_fields: the config fields that may hold the classification head's dropout, first
            choice first (a field left None passes to the next).
        attention_dropout_field: the config field of the attention-probability dropout.

    The defaults here serve encoders whose layers take `(hidden, mask)` with the mask from
    `create_bidirectional_mask`, return the new hidden states, and need no final step.
    """

    model_type: ClassVar[str]
    model_class: ClassVar[type[PreTrainedModel]]
    base_model_prefix: ClassVar[str]
    head_key_map: ClassVar[dict[str, str]] = {"classifier.": "classifier."}
    lora_modules: ClassVar[tuple[str, ...]] = ("query", "value")
    has_pooler: ClassVar[bool] = False
    classifier_dropout_fields: ClassVar[tuple[str, ...]] = ("classifier_dropout", "hidden_dropout_prob")
    attention_dropout_field: ClassVar[str] = "attention_probs_dropout_prob"

    def build(self, config: PreTrainedConfig) -> PreTrainedModel:
        """The stock base model for `config` (randomly initialised, as its own constructor does)."""
        return self.model_class(config)

    def num_layers(self, config: PreTrainedConfig) -> int:
        """Number of layer steps, i.e. of exits at most."""
        return config.num_hidden_layers

    def max_length(self, config: PreTrainedConfig) -> int:
        """Most tokens per input the embeddings accept (longer inputs fail inside them, whatever the tokenizer's
        own limit says)."""
        return config.max_position_embeddings

    def embed(
        self,
        backbone: PreTrainedModel,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The input of the first layer, `(B, S, hidden_size)`, exactly as the stock forward computes it."""
        raise NotImplementedError

    def layer_context(
        self, backbone: PreTrainedModel, hidden: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> Any:
        """Whatever the layers need besides the hidden states for these rows and this length (an opaque value
        for `run_layer`). Here: the attention mask in the format of the configured attention implementation."""
        return create_bidirectional_mask(
            config=backbone.config, inputs_embeds=hidden, attention_mask=attention_mask, allow_is_bidirectional_skip=False
        )

    def layer_module(self, backbone: PreTrainedModel, index: int) -> nn.Module:
        """The module that step `index` (0-based) applies; steps may share one (ALBERT)."""
        raise NotImplementedError

    def run_layer(self, backbone: PreTrainedModel, index: int, hidden: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Hidden states after step `index` (0-based)."""
        return self.layer_module(backbone, index)(hidden, ctx)

    def pooler(self, backbone: PreTrainedModel) -> nn.Module | None:
        """The base model's pretrained pooler when it keeps one (`has_pooler`), else None."""
        return backbone.pooler if self.has_pooler else None

    def final(self, backbone: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
        """What the stock model applies after its last layer (identity unless overridden)."""
        return hidden

    def encode(
        self,
        backbone: PreTrainedModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """All steps at full depth: the stock model's `last_hidden_state`."""
        hidden = self.embed(backbone, input_ids, token_type_ids, attention_mask, position_ids)
        ctx = self.layer_context(backbone, hidden, attention_mask)
        for index in range(self.num_layers(backbone.config)):
            hidden = self.run_layer(backbone, index, hidden, ctx)
        return self.final(backbone, hidden)

    def native_head(self, config: PreTrainedConfig) -> NativeHead:
        """A fresh copy of the architecture's own sequence-classification head (`config.num_labels` outputs)."""
        raise NotImplementedError

    def map_head_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The `native_head` state dict held in a stock `<Arch>ForSequenceClassification` state dict."""
        return {
            native + key[len(stock) :]: value
            for key, value in state_dict.items()
            for stock, native in self.head_key_map.items()
            if key.startswith(stock)
        }

    def classifier_dropout(self, config: PreTrainedConfig) -> float:
        """The dropout the architecture's classification head uses (what the multi-exit heads use too): the first of
        `classifier_dropout_fields` that the config sets (not None)."""
        values = (getattr(config, name, None) for name in self.classifier_dropout_fields)
        return next(value for value in values if value is not None)

    def attention_dropout(self, config: PreTrainedConfig) -> float:
        """The attention-probability dropout of the layers (what the attention exit heads use)."""
        return getattr(config, self.attention_dropout_field)

    def lora_target_modules(self, config: PreTrainedConfig) -> list[str]:
        """Module names of the attention query and value projections inside the layers."""
        return list(self.lora_modules)

    def layer_flops(self, config: PreTrainedConfig, n, index: int = 0):
        """Matrix-product FLOPs of step `index` on one sample of `n` tokens (an int or array), counted as
        `torch.utils.flop_counter` does; element-wise work and `layer_context` are not counted."""
        return _attention_block_flops(n, config.hidden_size, _attention_width(config), config.intermediate_size)

    def embed_flops(self, config: PreTrainedConfig, n):
        """Matrix-product FLOPs of `embed` on `n` tokens (a projection to `hidden_size`, if the model has one);
        zero of the type of `n` otherwise."""
        return 0 * n


class NativeHead(nn.Module):
    """An architecture's own sequence-classification head: `head(hidden_states, attention_mask=None) -> logits`.
    Submodules carry the names the stock `<Arch>ForSequenceClassification` gives them, so that its head weights
    map by key prefix (`BackboneAdapter.head_key_map`). `attention_mask` None means no padding."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class PoolerHead(NativeHead):
    """BERT's head: `classifier(dropout(pooler(h)))`, `pooler` being `BertPooler` (tanh of a dense layer on the
    first token), which `BertForSequenceClassification` keeps inside the base model as `bert.pooler`."""

    def __init__(self, config, pooler: nn.Module, dropout: float):
        super().__init__()
        self.pooler = pooler
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def pool(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.pooler(hidden_states)

    def forward(self, hidden_states, attention_mask=None):
        return self.classifier(self.dropout(self.pool(hidden_states)))


class AlbertPoolerHead(PoolerHead):
    """ALBERT's head: like BERT's, but `AlbertModel.pooler` is a bare `nn.Linear` on the first token followed by
    the model's `pooler_activation` (tanh), so the tanh is applied here."""

    def pool(self, hidden_states):
        return torch.tanh(self.pooler(hidden_states[:, 0]))


class ClassificationHead(NativeHead):
    """Wraps a stock `<Arch>ClassificationHead` (RoBERTa, XLM-R, ELECTRA: dense + activation + out_proj on the
    first token) under the name `classifier`, as `<Arch>ForSequenceClassification` holds it."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, hidden_states, attention_mask=None):
        return self.classifier(hidden_states)


class DistilBertHead(NativeHead):
    """`DistilBertForSequenceClassification`'s head: `classifier(dropout(relu(pre_classifier(h_0))))` (inline in
    its forward, so rebuilt here with the same module names)."""

    def __init__(self, config):
        super().__init__()
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.seq_classif_dropout)

    def forward(self, hidden_states, attention_mask=None):
        return self.classifier(self.dropout(torch.relu(self.pre_classifier(hidden_states[:, 0]))))


class DebertaV2Head(NativeHead):
    """`DebertaV2ForSequenceClassification`'s head: the stock `ContextPooler`, dropout (`cls_dropout`, else
    `hidden_dropout_prob`) and the classifier."""

    def __init__(self, config, dropout: float):
        super().__init__()
        self.pooler = ContextPooler(config)
        self.classifier = nn.Linear(self.pooler.output_dim, config.num_labels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states, attention_mask=None):
        return self.classifier(self.dropout(self.pooler(hidden_states)))


class ModernBertHead(NativeHead):
    """`ModernBertForSequenceClassification`'s head: `config.classifier_pooling` ("cls": first token, "mean":
    masked token mean), the stock `ModernBertPredictionHead`, dropout and the classifier."""

    def __init__(self, config):
        super().__init__()
        if config.classifier_pooling not in ("cls", "mean"):
            raise ValueError(f"classifier_pooling={config.classifier_pooling!r} must be one of ['cls', 'mean'].")
        self.pooling = config.classifier_pooling
        self.head = ModernBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden_states, attention_mask=None):
        if self.pooling == "cls":
            pooled = hidden_states[:, 0]
        elif attention_mask is None:
            pooled = hidden_states.mean(dim=1)
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * mask).sum(dim=1) / mask.sum(dim=1)
        return self.classifier(self.drop(self.head(pooled)))


@register_backbone("bert")
class BertAdapter(BackboneAdapter):
    """BERT: embeddings, then `encoder.layer[i](hidden, mask)`. The base model keeps its pooler, which the
    multi-exit "pooler"/"linear" exit heads start from; the native head has a pooler of its own, loaded from
    `bert.pooler`. RoBERTa, XLM-R and ELECTRA subclass this adapter."""

    model_class = BertModel
    base_model_prefix = "bert"
    head_key_map = {"bert.pooler.": "pooler.", "classifier.": "classifier."}
    has_pooler = True

    def build(self, config):
        return self.model_class(config, add_pooling_layer=self.has_pooler)

    def embed(self, backbone, input_ids, token_type_ids=None, attention_mask=None, position_ids=None):
        return backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)

    def layer_module(self, backbone, index):
        return backbone.encoder.layer[index]

    def native_head(self, config):
        return PoolerHead(config, BertPooler(config), self.classifier_dropout(config))


@register_backbone("roberta")
class RobertaAdapter(BertAdapter):
    """RoBERTa: BERT's layers. Its embeddings number positions from `padding_idx + 1` and give padding tokens
    `padding_idx`, computed from `input_ids` when `position_ids` is None, so the input ids (not the mask) must
    mark padding with `pad_token_id`, as the stock model requires. No pooler: `RobertaForSequenceClassification`
    has none, its head (`RobertaClassificationHead`) pools the first token itself."""

    model_class = RobertaModel
    base_model_prefix = "roberta"
    head_key_map = {"classifier.": "classifier."}
    has_pooler = False
    head_class: ClassVar[type[nn.Module]] = RobertaClassificationHead

    def max_length(self, config):
        # Positions start after `padding_idx` (514 positions hold 512 tokens).
        return config.max_position_embeddings - config.pad_token_id - 1

    def native_head(self, config):
        return ClassificationHead(self.head_class(config))


@register_backbone("xlm-roberta")
class XLMRobertaAdapter(RobertaAdapter):
    """XLM-R: RoBERTa's architecture under its own classes and prefix."""

    model_class = XLMRobertaModel
    base_model_prefix = "roberta"
    head_class = XLMRobertaClassificationHead


@register_backbone("electra")
class ElectraAdapter(RobertaAdapter):
    """ELECTRA: BERT's layers; embeddings of `embedding_size`, projected to `hidden_size` by `embeddings_project`
    when the two differ (the stock forward does it before the mask and the layers). No pooler; its head
    (`ElectraClassificationHead`, GELU instead of tanh) pools the first token."""

    model_class = ElectraModel
    base_model_prefix = "electra"
    head_class = ElectraClassificationHead

    def build(self, config):
        return self.model_class(config)

    def max_length(self, config):
        return BackboneAdapter.max_length(self, config)  # BERT's positions: no padding offset

    def embed(self, backbone, input_ids, token_type_ids=None, attention_mask=None, position_ids=None):
        hidden = super().embed(backbone, input_ids, token_type_ids, attention_mask, position_ids)
        if hasattr(backbone, "embeddings_project"):
            hidden = backbone.embeddings_project(hidden)
        return hidden

    def embed_flops(self, config, n):
        return _projection_flops(n, config.embedding_size, config.hidden_size)


@register_backbone("albert")
class AlbertAdapter(BackboneAdapter):
    """ALBERT: embeddings of `embedding_size`, then `encoder.embedding_hidden_mapping_in` (in the stock model the
    first thing its encoder does, hence part of `embed` here). Step `i` of `num_hidden_layers` applies layer group
    `i // (num_hidden_layers / num_hidden_groups)` (each group is `inner_group_num` layers), so groups are shared
    between steps and every step still gets its exit. The base model is built without its pooler: the native
    head owns it (`albert.pooler` -> `pooler`)."""

    model_class = AlbertModel
    base_model_prefix = "albert"
    head_key_map = {"albert.pooler.": "pooler.", "classifier.": "classifier."}
    classifier_dropout_fields = ("classifier_dropout_prob",)

    def build(self, config):
        return self.model_class(config, add_pooling_layer=False)

    def embed(self, backbone, input_ids, token_type_ids=None, attention_mask=None, position_ids=None):
        hidden = backbone.embeddings(input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        return backbone.encoder.embedding_hidden_mapping_in(hidden)

    def layer_module(self, backbone, index):
        config = backbone.config
        # AlbertTransformer.forward's group index, float division included.
        return backbone.encoder.albert_layer_groups[int(index / (config.num_hidden_layers / config.num_hidden_groups))]

    def native_head(self, config):
        pooler = nn.Linear(config.hidden_size, config.hidden_size)
        return AlbertPoolerHead(config, pooler, self.classifier_dropout(config))

    def layer_flops(self, config, n, index=0):
        return config.inner_group_num * super().layer_flops(config, n, index)

    def embed_flops(self, config, n):
        # `embedding_hidden_mapping_in` exists even when the sizes agree.
        return 2 * n * config.embedding_size * config.hidden_size


@register_backbone("distilbert")
class DistilBertAdapter(BackboneAdapter):
    """DistilBERT: word + position embeddings only (no segments: `token_type_ids` are ignored, as its tokenizer
    produces none), then `transformer.layer[i](hidden, mask)` with the standard bidirectional mask. Sinusoidal
    position embeddings (`sinusoidal_pos_embds`) are ordinary weights filled by the stock initialisation, so they
    need nothing here. Its config names sizes `dim`/`hidden_dim`/`n_heads`/`n_layers` (`hidden_size` etc. are
    aliases)."""

    model_class = DistilBertModel
    base_model_prefix = "distilbert"
    head_key_map = {"pre_classifier.": "pre_classifier.", "classifier.": "classifier."}
    lora_modules = ("q_lin", "v_lin")
    classifier_dropout_fields = ("seq_classif_dropout",)
    attention_dropout_field = "attention_dropout"

    def embed(self, backbone, input_ids, token_type_ids=None, attention_mask=None, position_ids=None):
        return backbone.embeddings(input_ids=input_ids, position_ids=position_ids)

    def layer_module(self, backbone, index):
        return backbone.transformer.layer[index]

    def native_head(self, config):
        return DistilBertHead(config)

    def layer_flops(self, config, n, index=0):
        return _attention_block_flops(n, config.dim, _attention_width(config), config.hidden_dim)


class DebertaV2Context(NamedTuple):
    """What DeBERTa-v2's layers need: `attention_mask` `(B, 1, S, S)` (pairs of real tokens, the encoder's own
    format), `input_mask` `(B, S)` for the convolution, `relative_pos` `(1, S, S)` and `rel_embeddings`."""

    attention_mask: torch.Tensor
    input_mask: torch.Tensor
    relative_pos: torch.Tensor | None
    rel_embeddings: torch.Tensor | None


@register_backbone("deberta-v2")
class DebertaV2Adapter(BackboneAdapter):
    """DeBERTa-v2 and v3. Its attention is its own (eager only: `DebertaV2Model` refuses sdpa) and takes a 0/1
    mask over token pairs from `encoder.get_attention_mask`, not the mask utilities. Disentangled relative
    attention needs `relative_pos` (log-bucketed by `position_buckets`, from the length only) and the
    (optionally layer-normed) `rel_embeddings`, both from the encoder's own methods. The embeddings multiply
    padding positions by zero (they take the mask) and add absolute positions only if `position_biased_input`
    (False in v3). When `conv_kernel_size > 0` the encoder's `ConvLayer` runs after the first layer, on that
    layer's input (the embeddings) with its output as residual and the 2D padding mask: part of step 0 here."""

    model_class = DebertaV2Model
    base_model_prefix = "deberta"
    head_key_map = {"pooler.": "pooler.", "classifier.": "classifier."}
    lora_modules = ("query_proj", "value_proj")
    classifier_dropout_fields = ("cls_dropout", "hidden_dropout_prob")

    def embed(self, backbone, input_ids, token_type_ids=None, attention_mask=None, position_ids=None):
        return backbone.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, mask=attention_mask
        )

    def layer_context(self, backbone, hidden, attention_mask):
        encoder = backbone.encoder
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        # ConvLayer computes `1 - input_mask`, which a bool mask does not support.
        input_mask = attention_mask.long()
        return DebertaV2Context(
            attention_mask=encoder.get_attention_mask(input_mask),
            input_mask=input_mask,
            relative_pos=encoder.get_rel_pos(hidden),
            rel_embeddings=encoder.get_rel_embedding(),
        )

    def layer_module(self, backbone, index):
        return backbone.encoder.layer[index]

    def run_layer(self, backbone, index, hidden, ctx):
        output, _ = self.layer_module(backbone, index)(
            hidden, ctx.attention_mask, relative_pos=ctx.relative_pos, rel_embeddings=ctx.rel_embeddings
        )
        if index == 0 and backbone.encoder.conv is not None:
            output = backbone.encoder.conv(hidden, output, ctx.input_mask)
        return output

    def native_head(self, config):
        return DebertaV2Head(config, self.classifier_dropout(config))

    def layer_flops(self, config, n, index=0):
        hidden = config.hidden_size
        heads = config.num_attention_heads
        width = heads * getattr(config, "attention_head_size", hidden // heads)
        flops = _attention_block_flops(n, hidden, width, config.intermediate_size)
        if config.relative_attention:
            pos_att_type = config.pos_att_type or []
            max_relative = getattr(config, "max_relative_positions", -1)
            max_relative = config.max_position_embeddings if max_relative < 1 else max_relative
            buckets = getattr(config, "position_buckets", -1)
            rows = 2 * (buckets if buckets > 0 else max_relative)
            kinds = sum(kind in pos_att_type for kind in ("c2p", "p2c"))
            # Projections of the relative embeddings (once per batch, independent of n: counted per sample as at
            # batch size 1; with a shared key both are computed whatever `pos_att_type`), then one
            # (n x W) @ (W x rows) product per attention kind.
            projections = 2 if getattr(config, "share_att_key", False) else kinds
            flops = flops + projections * 2 * rows * hidden * width + kinds * 2 * n * rows * width
        if index == 0 and getattr(config, "conv_kernel_size", 0) > 0:
            flops = flops + 2 * n * hidden * (hidden // getattr(config, "conv_groups", 1)) * config.conv_kernel_size
        return flops

    def embed_flops(self, config, n):
        return _projection_flops(n, getattr(config, "embedding_size", config.hidden_size), config.hidden_size)


@register_backbone("modernbert")
class ModernBertAdapter(BackboneAdapter):
    """ModernBERT: token embeddings only (no absolute positions, no segments: `token_type_ids` are ignored),
    pre-norm layers of two kinds by `config.layer_types` (from `global_attn_every_n_layers`): "full_attention"
    and "sliding_attention" (a bidirectional window of `local_attention // 2` tokens each side). Each kind has
    its own mask (`create_bidirectional_mask` / `create_bidirectional_sliding_window_mask`) and its own rotary
    cos/sin (`rotary_emb`, different rope theta), built in `layer_context` from positions `0..S-1` as the stock
    forward does; hence custom `position_ids` are refused: the context is rebuilt from the length alone after
    compaction. `final_norm` follows the last layer. In this transformers version the attention runs on padded
    batches with the configured implementation; there is no unpadding path to avoid."""

    model_class = ModernBertModel
    base_model_prefix = "model"
    head_key_map = {"head.": "head.", "classifier.": "classifier."}
    lora_modules = ("Wqkv",)
    classifier_dropout_fields = ("classifier_dropout",)
    attention_dropout_field = "attention_dropout"

    def embed(self, backbone, input_ids, token_type_ids=None, attention_mask=None, position_ids=None):
        if position_ids is not None:
            raise ValueError(
                "ModernBERT takes positions through its rotary embeddings, which the exit loop rebuilds from the "
                "sequence length; custom position_ids are not supported."
            )
        return backbone.embeddings(input_ids=input_ids)

    def layer_context(self, backbone, hidden, attention_mask):
        config = backbone.config
        mask_makers = {
            "full_attention": create_bidirectional_mask,
            "sliding_attention": create_bidirectional_sliding_window_mask,
        }
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        return {
            kind: (
                mask_makers[kind](
                    config=config, inputs_embeds=hidden, attention_mask=attention_mask, allow_is_bidirectional_skip=False
                ),
                backbone.rotary_emb(hidden, position_ids, kind),
            )
            for kind in set(config.layer_types)
        }

    def layer_module(self, backbone, index):
        return backbone.layers[index]

    def run_layer(self, backbone, index, hidden, ctx):
        layer = self.layer_module(backbone, index)
        mask, position_embeddings = ctx[layer.attention_type]
        return layer(hidden, attention_mask=mask, position_embeddings=position_embeddings)

    def final(self, backbone, hidden):
        return backbone.final_norm(hidden)

    def native_head(self, config):
        return ModernBertHead(config)

    def layer_flops(self, config, n, index=0):
        # The sliding window is a mask: eager and sdpa still compute all n² scores. The MLP is a GLU (Wi: H -> 2I).
        return _attention_block_flops(
            n, config.hidden_size, _attention_width(config), config.intermediate_size, ffn_factor=6
        )
