# Copyright 2026 The hf-multiexit authors. Licensed under the Apache License, Version 2.0.
"""Multi-exit encoders: a stock transformers encoder (BERT, RoBERTa, XLM-R, ELECTRA, ALBERT, DistilBERT, DeBERTa-v2/v3,
ModernBERT; run layer by layer through the adapters of `backbones.py`) with a classifier ("exit") after some layers
and a batched early-exit loop. `MultiExitModel` serves every backbone; `MultiExitBertModel` is the same network with
BERT's modules held flat, as checkpoints saved by earlier versions (`model_type` `multiexit_bert`) name them.

Papers: DeeBERT (Xin et al., ACL 2020), PABEE (Zhou et al., NeurIPS 2020), RomeBERT (Gao et al., 2021),
FastBERT (Liu et al., ACL 2020), SmartBERT (Hu et al., IJCAI 2023).

This file travels to the Hub with saved checkpoints (`trust_remote_code=True`): it may import only torch,
transformers and sibling files of this folder, never `hf_multiexit`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig, PreTrainedModel, TextClassificationPipeline
from transformers import initialization as init
from transformers.models.bert.modeling_bert import BertEmbeddings, BertEncoder, BertPooler
from transformers.utils import ModelOutput

from .backbones import BackboneAdapter
from .configuration_multiexit_bert import POOLER_STYLES, ExitFields, MultiExitConfig, MultiExitModelConfig
from .exit_configuration import ExitConfig
from .exit_strategies import MULTI_LABEL, REGRESSION, SINGLE_LABEL, ExitStrategy, build_exit_strategy, resolve_problem_type


@dataclass
class MultiExitModelOutput(ModelOutput):
    """Output of [`MultiExitModel`].

    Args:
        logits (`(B, C)`): each sample's prediction at the exit where it left.
        exit_layers (`LongTensor (B,)`): the 1-based layer where each sample left.
        layers_run (`LongTensor (B,)`): how many encoder layers each sample actually ran (differs from
            `exit_layers` only when skip gates skip layers).
        exit_checks (`LongTensor (B,)`): how many exit heads ran for each sample (early-exit mode; what FLOPs
            counts add to the layers: a strategy checks only some exits, and a skipped layer costs no check).
        all_logits (tuple of `(B, C)`): one tensor per exit, when all exits were computed (train mode or
            `output_all_exits=True`).
        gate_probs (tuple of `(B,)`): the skip gates' probabilities `g_i`, one per layer, in all-exits mode.
        hidden_states (tuple of `(B, S, H)`): embeddings and every layer's output, with `output_hidden_states=True`
            in all-exits mode; the last is the backbone's final state (after ModernBERT's final norm), the stock
            model's `last_hidden_state`.
        layer_outputs (tuple of `(B, S, H)`): with skip gates, each layer's own output `Layer_i(h_{i-1})` before
            the gate mixes it with the layer's input (what the intermediate exits read), with
            `output_hidden_states=True` in all-exits mode.
    """

    logits: torch.FloatTensor | None = None
    exit_layers: torch.LongTensor | None = None
    layers_run: torch.LongTensor | None = None
    exit_checks: torch.LongTensor | None = None
    all_logits: tuple[torch.FloatTensor, ...] | None = None
    gate_probs: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    layer_outputs: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MultiExitSequenceClassifierOutput(ModelOutput):
    """Output of [`MultiExitModelForSequenceClassification`]: [`MultiExitModelOutput`]'s fields plus `loss`
    (the joint training loss in train mode, the final exit's loss in eval mode)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    exit_layers: torch.LongTensor | None = None
    layers_run: torch.LongTensor | None = None
    exit_checks: torch.LongTensor | None = None
    all_logits: tuple[torch.FloatTensor, ...] | None = None
    gate_probs: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    layer_outputs: tuple[torch.FloatTensor, ...] | None = None


class PooledExitHead(nn.Module):
    """`z = W dropout(tanh(P h_[CLS])) + b` (or the masked token mean instead of `h_[CLS]` with
    `exit_pooling="mean"`) with the exit's own pooler `P` ("pooler" style, DeeBERT/RomeBERT)
    or, when `own_pooler=False`, the backbone's shared pretrained pooler ("linear" style, PABEE; and the final
    exit of the "pooler" style, which is exactly `BertForSequenceClassification`'s head)."""

    def __init__(self, config: ExitFields, own_pooler: bool):
        super().__init__()
        self.mean_pooling = config.exit_pooling == "mean"
        self.pooler = BertPooler(config.backbone_config) if own_pooler else None
        self.dropout = nn.Dropout(config.exit_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, shared_pooler: nn.Module | None = None):
        if not self.mean_pooling:
            features = hidden_states[:, :1]
        elif attention_mask is None:
            features = hidden_states.mean(dim=1, keepdim=True)
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            features = (hidden_states * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        # `BertPooler` reads the first position: handing it the pooled features as a one-token sequence runs the
        # pooler module itself, so whatever replaced or wraps its layers (dynamic quantization, LoRA, device hooks)
        # takes part.
        pooled = (self.pooler if self.pooler is not None else shared_pooler)(features)
        return self.classifier(self.dropout(pooled))


class ClsAttention(nn.Module):
    """Linear H->d + tanh, then `num_heads`-head self-attention read at [CLS]: the feature extractor shared by the
    FastBERT/SmartBERT attention exit head and the SmartBERT skip gate. Only the [CLS] query is computed, since
    the other positions' outputs are never used.

    `proj` and `attention.out_proj` are called as modules, so `quantize_dynamic(model, {nn.Linear})` converts
    `proj` (PyTorch leaves `out_proj`, a `NonDynamicallyQuantizableLinear`, in float unless asked) and the head runs
    either way; the query, key and value projections read `attention.in_proj_weight`, a plain parameter that
    quantization leaves alone.
    """

    def __init__(self, hidden_size: int, inner_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(hidden_size, inner_size)
        self.attention = nn.MultiheadAttention(inner_size, num_heads, dropout=dropout, batch_first=True)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        # `nn.MultiheadAttention`'s own forward (mask conversion, checks, separate key and value projections) costs
        # more than the attention at these sizes, and SmartBERT runs a gate before every layer, so the attention is
        # computed here from the module's parameters: the same result, with keys and values in one product.
        x = torch.tanh(self.proj(hidden_states))
        attention, (batch, length, size) = self.attention, x.shape
        heads = attention.num_heads
        query = F.linear(x[:, 0], attention.in_proj_weight[:size], attention.in_proj_bias[:size])
        key, value = F.linear(x, attention.in_proj_weight[size:], attention.in_proj_bias[size:]).view(
            batch, length, 2, heads, size // heads).permute(2, 0, 3, 1, 4)
        keep = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        dropout = attention.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(query.view(batch, heads, 1, -1), key, value, attn_mask=keep, dropout_p=dropout)
        return attention.out_proj(out.view(batch, size))


class AttentionExitHead(nn.Module):
    """FastBERT/SmartBERT exit: `z = W_2 tanh(W_1 Attn(tanh(W_0 h))_[CLS])` with `d = exit_head_hidden_size`."""

    def __init__(self, config: ExitFields, is_final: bool):
        super().__init__()
        size = config.exit_head_hidden_size
        self.features = ClsAttention(config.hidden_size, size, config.exit_head_num_heads, config.exit_attention_dropout)
        self.dense = nn.Linear(size, size)
        self.classifier = nn.Linear(size, config.num_labels)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, shared_pooler: nn.Module | None = None):
        return self.classifier(torch.tanh(self.dense(self.features(hidden_states, attention_mask))))


class NativeExitHead(nn.Module):
    """The backbone architecture's own sequence-classification head (`BackboneAdapter.native_head`, built from the
    backbone config with the exits' `num_labels`) under the name `head`, called like the other exit heads."""

    def __init__(self, config: ExitFields, is_final: bool):
        super().__init__()
        # The backbone config's own labels are not the exits' (a plain checkpoint has the default two).
        backbone_config = copy.copy(config.backbone_config)
        backbone_config.id2label, backbone_config.label2id = config.id2label, config.label2id
        self.head = config.backbone_adapter.native_head(backbone_config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, shared_pooler: nn.Module | None = None):
        return self.head(hidden_states, attention_mask)


EXIT_HEADS: dict[str, Callable[[ExitFields, bool], nn.Module]] = {
    "pooler": lambda config, is_final: PooledExitHead(config, own_pooler=not is_final),
    "linear": lambda config, is_final: PooledExitHead(config, own_pooler=False),
    "attention": AttentionExitHead,
    "native": NativeExitHead,
}
"""Exit head factories by `config.exit_head`: `(config, is_final) -> module(hidden, mask, shared_pooler=) -> logits`;
`mask` None means no padding (the early-exit loop passes None then, which saves a check per exit). The backbone's
pooler comes as the keyword `shared_pooler`, which device placement skips (`_skip_keys_device_placement`): hooks that
move a head's inputs to its device would otherwise move the pooler module itself."""


class SkipGate(nn.Module):
    """SmartBERT skip gate (Hu et al., IJCAI 2023): `g = sigmoid(w^T Attn(tanh(W h))_[CLS] + b)` on a layer's input;
    `g >= r` means the layer is skipped."""

    def __init__(self, config: ExitFields):
        super().__init__()
        self.features = ClsAttention(config.hidden_size, config.gate_hidden_size, config.gate_num_heads, 0.0)
        self.score = nn.Linear(config.gate_hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        # float32 whatever the model's dtype, so that `g >= r` is decided alike in half precision.
        return torch.sigmoid(self.score(self.features(hidden_states, attention_mask)).float()).squeeze(-1)


class _GradientRescale(torch.autograd.Function):
    """`GR(x, s)`: identity in the forward pass, gradient multiplied by `s` in the backward pass."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class ExitLoopSegments(Protocol):
    """The pieces that `early_exit_loop` and `all_exits_loop` call, so that one loop serves every runtime:
    [`MultiExitModel`] implements them with its PyTorch modules, `hf_multiexit.onnx`'s ONNX Runtime model with one
    session per exported segment. Tensors go in and come out as torch tensors on the loop's device;
    `attention_mask` is the 2D 0/1 padding mask of the rows given, None when they have no padding.

    Attributes: `num_layers` (encoder layer steps), `num_labels`, `exit_index` (1-based exit layer -> exit number).
    """

    num_layers: int
    num_labels: int
    exit_index: dict[int, int]

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """The first layer's input `(B, S, hidden_size)` from the token ids (`attention_mask` 2D, all ones when
        nothing is padding)."""

    def layer_context(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> Any:
        """Whatever `run_layer` needs for these rows and this length besides the hidden states (rebuilt after rows
        leave or padding columns are cut)."""

    def run_layer(self, index: int, hidden_states: torch.Tensor, context: Any) -> torch.Tensor:
        """Hidden states after the 0-based layer step `index`."""

    def exit_logits(self, layer: int, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Logits of the exit after the 1-based `layer`."""

    def gate(self, index: int, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Skip-gate probabilities `(B,)` in float32 before the 0-based layer `index` (models with skip gates)."""

    def final_state(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The backbone's final state (`last_hidden_state`) of the last layer's output (for `output_hidden_states`)."""


def gate_weight(gate: torch.Tensor, gate_mode: str, threshold: float) -> torch.Tensor:
    """The weight of a layer's skip branch in all-exits mode from the gate probabilities `g`: `g` itself with
    `gate_mode="soft"` (SmartBERT's first training stage), else the straight-through hard weight
    `g^ = g + sg(1[g >= r] - g)` (forward: exactly `1[g >= r]`; gradient: as if it were `g`)."""
    if gate_mode == "soft":
        return gate
    hard = (gate >= threshold).to(gate.dtype)
    return gate + (hard - gate).detach()


def resolve_exit_config(default: ExitConfig, exit_config: ExitConfig | None, exit_kwargs: dict) -> ExitConfig:
    """The exit rule of one call: `exit_config` (else the model's `default`) with the call's keyword arguments
    applied and validated."""
    base = default if exit_config is None else exit_config
    if not isinstance(base, ExitConfig):
        raise ValueError(f"exit_config must be an ExitConfig, got {type(base).__name__}.")
    return base.update(**exit_kwargs) if exit_kwargs else base


def all_exits_gate_mode(gate_mode: str | None, model_config: ExitFields, has_gates: bool, training: bool) -> str | None:
    """The skip gates' mode in an all-exits pass: `gate_mode` ("soft", "hard" or "off"; default `config.gate_mode`),
    None when the model has no gates or they are off, and "hard" for "soft" outside training (inference always
    hard-skips)."""
    gate_mode = model_config.gate_mode if gate_mode is None else gate_mode
    if gate_mode not in ("soft", "hard", "off"):
        raise ValueError(f"gate_mode={gate_mode!r} is not one of ['soft', 'hard', 'off'].")
    if not has_gates or gate_mode == "off":
        return None
    return gate_mode if training else "hard"


def all_exits_loop(
    segments: ExitLoopSegments,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    output_hidden_states: bool = False,
    gradient_equilibrium: bool = False,
    gate_mode: str | None = None,
    gate_threshold: float = 0.5,
) -> MultiExitModelOutput:
    """Every layer and exit; `gate_mode` None runs without gates, "soft" or "hard" with them (see `gate_weight`).
    With gates, the intermediate exits read the layer's own output `Layer_i(h_{i-1})`, which is what they see at
    inference, where an exit is checked only for samples that ran its layer (SmartBERT trains its exits so); the
    final classifier reads the gated state."""
    num_layers, exit_index = segments.num_layers, segments.exit_index
    layer_context = segments.layer_context(hidden_states, attention_mask)
    use_gates = gate_mode is not None
    all_logits, gate_probs, states, raw_outputs = [], [], [hidden_states], []
    layers_run = torch.zeros(hidden_states.shape[0], dtype=torch.long, device=hidden_states.device)
    for index in range(num_layers):
        layer_output = segments.run_layer(index, hidden_states, layer_context)
        if use_gates:
            gate = segments.gate(index, hidden_states, attention_mask)
            gate_probs.append(gate)
            # `.to` is a no-op on one device; split over devices (`device_map`), the mix lives with the layer.
            weight = gate_weight(gate, gate_mode, gate_threshold)[:, None, None].to(layer_output.device, hidden_states.dtype)
            hidden_states = (1 - weight) * layer_output + weight * hidden_states.to(layer_output.device)
            layers_run += (weight[:, 0, 0] < 1).long().to(layers_run.device)
            raw_outputs.append(layer_output)
        else:
            hidden_states = layer_output
            layers_run += 1
        states.append(hidden_states)
        if index + 1 not in exit_index:
            continue
        if use_gates:
            exit_input = hidden_states if index + 1 == num_layers else layer_output
            all_logits.append(segments.exit_logits(index + 1, exit_input, attention_mask))
            continue
        exits_left = len(exit_index) - exit_index[index + 1]
        if gradient_equilibrium and exits_left > 1:
            hidden_states = _GradientRescale.apply(hidden_states, 1.0 / exits_left)
            all_logits.append(segments.exit_logits(index + 1, hidden_states, attention_mask))
            hidden_states = _GradientRescale.apply(hidden_states, float(exits_left - 1))
        else:
            all_logits.append(segments.exit_logits(index + 1, hidden_states, attention_mask))
    if output_hidden_states:
        states[-1] = segments.final_state(states[-1])
    return MultiExitModelOutput(
        logits=all_logits[-1],
        exit_layers=torch.full_like(layers_run, num_layers),
        layers_run=layers_run,
        all_logits=tuple(all_logits),
        gate_probs=tuple(gate_probs) if use_gates else None,
        hidden_states=tuple(states) if output_hidden_states else None,
        layer_outputs=tuple(raw_outputs) if output_hidden_states and use_gates else None,
    )


def early_exit_loop(
    segments: ExitLoopSegments, hidden_states: torch.Tensor, attention_mask: torch.Tensor, strategy: ExitStrategy
) -> MultiExitModelOutput:
    """The early-exit loop. After each checked exit the samples that leave are dropped from the batch together
    with their mask and strategy state (`index_select` of the samples that stay), and then the columns that only
    padding still uses. A check writes its logits and layer for every sample it checked; a sample that stays is
    overwritten by a later check, and the final classifier writes all that are left, so the last write is the
    exit. The bookkeeping (original indices, strategy state, outputs) stays on the embeddings' device and each
    exit's logits are moved there, so a model split over devices (`device_map`) fills its outputs on one device.

    Host synchronisations (each makes the host wait for the accelerator; `tests/test_device_and_precision.py`
    counts them per layer): 1 before the first layer (the padding cut, which also tells whether a mask is
    needed), then per checked exit 1 (`nonzero` of the samples that stay, whose number sets the next shapes),
    plus 1 for the padding cut when some samples leave and others stay. With skip gates a layer adds 1 (which
    samples run it) and, when only some do, 1 for the padding cut of those. Layers whose exit is not checked
    cost none. At batch size 1 a check is 1 read of the logits (`decide_one`) and nothing else. (Counts for eager
    and SDPA attention; flex attention's block-mask builder reads each new mask once more.)
    """
    home, batch_size = hidden_states.device, hidden_states.shape[0]
    num_layers, exit_index = segments.num_layers, segments.exit_index
    gate_threshold = strategy.gate_threshold if strategy.uses_skip_gates else None
    logits_out = hidden_states.new_zeros(batch_size, segments.num_labels)
    exit_layers = torch.full((batch_size,), num_layers, dtype=torch.long, device=home)
    # Without gates every sample runs every layer up to its exit, so only gated runs count layers.
    layers_run = torch.zeros(batch_size, dtype=torch.long, device=home) if gate_threshold is not None else None
    # Without gates a sample's exit checks follow from its exit layer (counted after the loop), which keeps
    # per-layer bookkeeping out of the batch-1 path.
    exit_checks = torch.zeros(batch_size, dtype=torch.long, device=home) if gate_threshold is not None else None
    active = torch.arange(batch_size, device=home)  # original index of each sample still in the batch
    state = strategy.init_state(batch_size, home)
    hidden_states, attention_mask, padded = compact_rows(hidden_states, attention_mask)
    layer_context, head_mask = _loop_context(segments, hidden_states, attention_mask, padded)
    for index in range(num_layers):
        layer = index + 1
        rows = None  # None: every active sample runs this layer; else the indices of those that do
        subset = None  # with rows: their layer output and head mask, trimmed to their own longest length
        if gate_threshold is None:
            hidden_states = segments.run_layer(index, hidden_states, layer_context)
        else:
            ran = segments.gate(index, hidden_states, head_mask).to(home) < gate_threshold
            rows = ran.nonzero().squeeze(1)
            if rows.numel() == ran.numel():
                rows = None
                hidden_states = segments.run_layer(index, hidden_states, layer_context)
            elif rows.numel():
                # The samples that run the layer pay for their own longest length, not the batch's.
                states, mask, padded_rows = compact_rows(hidden_states, attention_mask, rows)
                sub_context, sub_head_mask = _loop_context(segments, states, mask, padded_rows)
                states = segments.run_layer(index, states, sub_context)
                subset = (states, sub_head_mask)
                padding = hidden_states.shape[1] - states.shape[1]
                hidden_states = hidden_states.to(states.device).index_copy(
                    0, rows.to(states.device), F.pad(states, (0, 0, 0, padding)) if padding else states
                )
            layers_run[active if rows is None else active[rows]] += 1
        if layer not in exit_index:
            continue
        if layer == num_layers:
            # The final classifier answers for every sample still running, including ones that skipped it.
            logits_out[active] = segments.exit_logits(layer, hidden_states, head_mask).to(home, logits_out.dtype)
            exit_layers[active] = layer
            if exit_checks is not None:
                exit_checks[active] += 1
            break
        if not strategy.needs_logits(layer) or (rows is not None and rows.numel() == 0):
            continue
        checked = active if rows is None else active[rows]
        logits = segments.exit_logits(layer, *(subset or (hidden_states, head_mask))).to(home)
        if exit_checks is not None:
            exit_checks[checked] += 1
        if active.numel() == 1 and strategy.decide_one is not None:
            if strategy.decide_one(logits[0].tolist()):
                logits_out[active] = logits.to(logits_out.dtype)
                exit_layers[active] = layer
                break
            continue
        # Decisions in float32 whatever the model's dtype: half-precision entropies and probabilities would move
        # thresholds by their rounding (bf16 keeps 8 bits of mantissa).
        leaving = strategy.should_exit(logits.float(), layer, state if rows is None else {})
        logits_out[checked] = logits.to(logits_out.dtype)
        exit_layers[checked] = layer
        if rows is not None:  # only the skip strategy, which is stateless, gets here
            leaving = torch.zeros_like(active, dtype=torch.bool).index_copy(0, rows, leaving)
        staying = (~leaving).nonzero().squeeze(1)
        if staying.numel() == active.numel():
            continue
        if staying.numel() == 0:
            break
        active, state = active[staying], {key: value[staying] for key, value in state.items()}
        hidden_states, attention_mask, padded = compact_rows(hidden_states, attention_mask, staying)
        layer_context, head_mask = _loop_context(segments, hidden_states, attention_mask, padded)
    if exit_checks is None:
        # The checked exits at or below each sample's exit, counted on the device: a table copied from the host
        # would be one more synchronisation.
        checked_layers = [layer for layer in exit_index if layer == num_layers or strategy.needs_logits(layer)]
        exit_checks = sum((exit_layers >= layer).long() for layer in checked_layers)
    return MultiExitModelOutput(
        logits=logits_out,
        exit_layers=exit_layers,
        layers_run=exit_layers.clone() if layers_run is None else layers_run,
        exit_checks=exit_checks,
    )


def _loop_context(segments: ExitLoopSegments, hidden_states: torch.Tensor, attention_mask: torch.Tensor, padded: bool):
    """`(layer_context, head_mask)` for a batch: the segments' `layer_context` and the 2D mask for the exit heads.
    Without padding both get no mask (None: SDPA then picks its fastest kernel). `padded` comes from the padding
    cut's synchronisation, so no other test for padding is needed."""
    mask = attention_mask if padded else None
    return segments.layer_context(hidden_states, mask), mask


def compact_rows(hidden_states: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor | None = None):
    """`(hidden_states, attention_mask, padded)` of the samples `rows` (None: all), with the trailing columns that
    are padding for all of them cut (after long samples leave, the rest need not pay for the batch's old maximum
    length); `padded` says whether any padding is left. One host synchronisation reads both the last used column
    and the shortest sample, which has no padding exactly when its token count equals the columns kept. Columns
    are cut before rows are selected, so the results are contiguous without another copy, and compiled segments
    (`compile_segments`) see one memory layout."""
    mask = attention_mask if rows is None else attention_mask.index_select(0, rows)
    used = mask.bool()
    positions = torch.arange(1, used.shape[1] + 1, device=used.device)
    length, shortest = torch.stack([(used.any(dim=0) * positions).max(), used.sum(dim=1).min()]).tolist()
    length = max(length, 1)
    if rows is None:
        hidden_states = hidden_states[:, :length].contiguous()
    else:
        hidden_states = hidden_states[:, :length].index_select(0, rows.to(hidden_states.device))
    return hidden_states, mask[:, :length].contiguous(), shortest < length


class MultiExitPreTrainedModel(PreTrainedModel):
    config_class = MultiExitModelConfig
    config: MultiExitModelConfig
    base_model_prefix = "multiexit"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # ClsAttention reads its attention module's parameters directly, so it must sit whole on one device. (Stock
    # backbones bring their own `_no_split_modules`.)
    _no_split_modules = ["BertEmbeddings", "BertLayer", "ClsAttention"]
    _skip_keys_device_placement = ["shared_pooler"]
    # The forward takes `**exit_kwargs`; without this, Trainer would pass `num_items_in_batch` into them.
    accepts_loss_kwargs = False

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # transformers guesses from this file's source, where it finds `ClsAttention(nn.Module)` (the exit heads'
        # own [CLS] attention) without the attention interface; the encoder layers are the stock backbone's, which
        # use it, so `set_attn_implementation` can switch them.
        return True

    def _initialize_weights(self, module, is_custom_code: bool = False):
        # transformers skips whole parameter-less modules of custom code, which would skip the pooler copy below;
        # `_init_weights` only uses `transformers.initialization`, which already leaves loaded tensors alone.
        super()._initialize_weights(module, is_custom_code=False)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)
        elif isinstance(module, MultiExitModel) and module.shared_pooler() is not None:
            # Runs after the children (and after loading): exit poolers missing from the checkpoint (the "pooler"
            # style's, and BERT's native heads', which `BertForSequenceClassification` keeps as `bert.pooler`) start as
            # copies of the pretrained pooler, as DeeBERT and RomeBERT initialise them. `init.copy_` skips loaded
            # weights.
            pretrained = module.shared_pooler()
            for head in module.exits.modules():
                if head is not pretrained and type(head) is type(pretrained):
                    for name, parameter in head.named_parameters():
                        init.copy_(parameter, pretrained.get_parameter(name))

    def compile_segments(self, **compile_kwargs) -> None:
        """Compiles in place, with `torch.compile`, the parts of the network that have no data-dependent control
        flow: every encoder layer, exit head and skip gate (`nn.Module.compile`). The exit loop between them stays
        eager: it reads back from the device which samples leave and how much padding is left, which sets the next
        shapes, so a compiled loop would break its graph at every check. `dynamic=True` by default, since compaction
        and padding cuts give nearly every call new sizes: a graph with a symbolic batch size and length serves them
        all (PyTorch specialises sizes 0 and 1 and a missing mask, so each segment gets a few graphs, not one per
        shape; `tests/test_device_and_precision.py` bounds the count). Keyword arguments go to `torch.compile`
        (`backend=`, `mode=`, ...)."""
        compile_kwargs.setdefault("dynamic", True)
        base = self.base_model
        layers = {id(layer): layer for layer in base.layer_modules()}.values()  # ALBERT's steps share layers
        for module in (*layers, *base.exits, *(base.skip_gates or ())):
            module.compile(**compile_kwargs)

    # ----- exit configuration: stored on the model, saved as exit_config.json (like generation_config) -----
    @property
    def exit_config(self) -> ExitConfig:
        return self.base_model._exit_config

    @exit_config.setter
    def exit_config(self, value: ExitConfig) -> None:
        if not isinstance(value, ExitConfig):
            raise ValueError(f"exit_config must be an ExitConfig, got {type(value).__name__}.")
        build_exit_strategy(value, self.config)
        self.base_model._exit_config = value

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus `exit_config.json` and an `auto_map` covering `AutoConfig`,
        `AutoModel` and `AutoModelForSequenceClassification`, so the folder loads with `trust_remote_code=True`
        without hf-multiexit installed (the modeling files are copied beside the weights), and a `custom_pipelines`
        entry so that `pipeline("text-classification", ..., trust_remote_code=True)` takes exit arguments per call."""
        modeling = __name__.rsplit(".", 1)[-1]
        configuration = self.config_class.__module__.rsplit(".", 1)[-1]
        base_class, classifier_class = AUTO_FAMILIES[self.config_class]
        self.config.auto_map = {
            "AutoConfig": f"{configuration}.{self.config_class.__name__}",
            "AutoModel": f"{modeling}.{base_class.__name__}",
            "AutoModelForSequenceClassification": f"{modeling}.{classifier_class.__name__}",
        }
        self.config.custom_pipelines = {
            "text-classification": {
                "impl": f"{modeling}.MultiExitTextClassificationPipeline",
                "pt": ["AutoModelForSequenceClassification"],
                "type": "text",
            }
        }
        # Saved under the model's own parameter names: the stock key mapping that loaded a stock checkpoint
        # (`stock_key_mapping`) is not reverted into them.
        kwargs.setdefault("save_original_format", False)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.exit_config.save_pretrained(save_directory)
        return result

    @classmethod
    def stock_key_mapping(cls, config: ExitFields) -> dict[str, str]:
        """`key_mapping` (regex -> replacement, transformers' loading renames) from a stock checkpoint of the
        backbone (`<Arch>Model`, or `<Arch>For...` with the base model under `adapter.base_model_prefix`) to this
        model's names. Base-model keys go where this model holds the backbone (`backbone_prefix`), the stock
        sequence-classification head into the final exit where that exit is the same head: the "native" style
        (the adapter's `head_key_map`), or BERT's "pooler"/"linear" final exit (the pretrained pooler and a
        classifier, as `BertForSequenceClassification`). Other heads' keys (MLM heads, ...) are left unexpected.
        transformers adds this class's `base_model_prefix` where the keys need it."""
        adapter = config.backbone_adapter
        stock_prefix = adapter.base_model_prefix + "."
        final = f"exits.{config.num_exits - 1}."
        if config.exit_head == "native":
            # The backbone keeps BERT's pretrained pooler itself; the native heads' poolers are copied from it.
            held = stock_prefix + "pooler." if adapter.has_pooler else None
            heads = {stock: f"{final}head.{native}" for stock, native in adapter.head_key_map.items() if stock != held}
        elif config.exit_head in POOLER_STYLES:
            heads = {"classifier.": f"{final}classifier."}
        else:
            heads = {}
        mapping = {"^" + re.escape(stock): target for stock, target in heads.items()}
        # Every other key (not a head's, not already renamed to an exit) belongs to the backbone.
        others = "|".join(re.escape(stock) for stock in (*heads, "exits."))
        mapping[f"^(?:{re.escape(stock_prefix)})?(?!{others})"] = config.backbone_prefix
        return mapping

    @classmethod
    def _config_of_stock_checkpoint(cls, pretrained_model_name_or_path, hub_kwargs: dict, kwargs: dict) -> None:
        """For a stock backbone checkpoint (its `config.json` has the backbone's `model_type`), loads this class's
        config from it first unless `kwargs` has one (moving the config keyword arguments out of `kwargs`), since the
        key mapping depends on it (`exit_head`, the number of exits), and puts `config` and `key_mapping` into
        `kwargs`."""
        config_dict, _ = PreTrainedConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
        if config_dict.get("model_type") == cls.config_class.model_type:
            return
        if kwargs.get("config") is None:
            # `dtype` is a config field too, but for from_pretrained it is the model's loading precision.
            fields = ({field.name for field in dataclasses.fields(cls.config_class)} | {"num_labels"}) - {"dtype"}
            config_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in fields}
            kwargs["config"] = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub_kwargs, **config_kwargs)
        kwargs.setdefault("key_mapping", cls.stock_key_mapping(kwargs["config"]))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, exit_config: ExitConfig | None = None, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus the checkpoint's `exit_config.json` (defaults when absent, e.g.
        for a plain BERT checkpoint) unless `exit_config` is given.

        A stock checkpoint of a supported backbone loads with `stock_key_mapping` (`num_labels=` and the exit options
        as keyword arguments); any other `model_type` is a `ValueError` naming it and the supported ones. Backbone
        weights missing from the checkpoint are a `ValueError` naming them: the backbone is never silently random.

        A `.safetensors` file of a local folder that is cut short or damaged raises `OSError` naming the file, where
        safetensors' own error names none. The check lives here, in the file that travels with checkpoints, so that
        loading with `trust_remote_code=True` reports it too."""
        hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            cls._config_of_stock_checkpoint(pretrained_model_name_or_path, hub_kwargs, kwargs)
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except Exception as err:
            # Looked at only after a failure, so a good checkpoint pays nothing. A safetensors file is the header's
            # length (8 bytes), the JSON header, then the tensors, the last of which ends at the end of the file.
            import json

            folder = os.path.join(os.fspath(pretrained_model_name_or_path or ""), kwargs.get("subfolder") or "")
            for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                path = os.path.join(folder, name)
                if not name.endswith(".safetensors") or not os.path.isfile(path):
                    continue
                size, described = os.path.getsize(path), None
                with open(path, "rb") as f:
                    header_size = int.from_bytes(f.read(8), "little")
                    if 8 + header_size <= size:
                        try:
                            tensors = json.loads(f.read(header_size))
                            described = 8 + header_size + max(
                                (entry["data_offsets"][1] for key, entry in tensors.items() if key != "__metadata__"),
                                default=0,
                            )
                        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                            pass  # a damaged header: nothing is described
                if described != size:
                    what = f"{size} bytes where its header describes {described}" if described else "a damaged header"
                    raise OSError(
                        f"{path} is truncated or corrupt ({what}), as an interrupted copy, download or save leaves it; "
                        "save it again, or download it again (from the Hub: from_pretrained(..., force_download=True))."
                    ) from err
            raise
        outer = "" if model.base_model is model else model.base_model_prefix + "."
        backbone = tuple(f"{outer}{name}." for name in model.base_model.backbone_module_names())
        missing = [key for key in loading_info["missing_keys"] if key.startswith(backbone)]
        if missing:
            raise ValueError(
                f"{pretrained_model_name_or_path} does not hold all backbone weights of a "
                f"{model.config.backbone_config.model_type!r} model: {len(missing)} missing, e.g. {missing[:5]}; "
                "the backbone would be random. Is it a checkpoint of that architecture?"
            )
        if exit_config is None:
            exit_config = ExitConfig.from_pretrained_or_default(pretrained_model_name_or_path, **hub_kwargs)
        model.exit_config = exit_config
        return (model, loading_info) if output_loading_info else model


class MultiExitModel(MultiExitPreTrainedModel):
    r"""The multi-exit network: a stock encoder (`config.backbone_config`, built and run layer by layer by its
    adapter from `backbones.py`, held under the adapter's `base_model_prefix` so that stock checkpoints load by their
    names), one exit head per exit layer, optional skip gates, and the exit loop.

    In train mode (or with `output_all_exits=True`) every layer and every exit runs. In eval mode the exit
    strategy decides per sample; samples that leave are removed from the batch (compaction), together with their
    attention mask and the strategy's state, and columns that only padding still uses are cut, so the work per
    layer follows the samples still running at any batch size.
    """

    def __init__(self, config: ExitFields):
        super().__init__(config)
        self.adapter: BackboneAdapter = config.backbone_adapter
        self.build_backbone(config)
        make_head = EXIT_HEADS[config.exit_head]
        self.exits = nn.ModuleList(
            make_head(config, layer == config.num_hidden_layers) for layer in config.exit_layers
        )
        self.skip_gates = (
            nn.ModuleList(SkipGate(config) for _ in range(config.num_hidden_layers)) if config.use_skip_gates else None
        )
        self.exit_index = {layer: i for i, layer in enumerate(config.exit_layers)}
        self._exit_config = ExitConfig()
        self.post_init()

    def build_backbone(self, config: ExitFields) -> None:
        """Adds the stock base model under the adapter's `base_model_prefix` (`config.backbone_prefix`)."""
        self.add_module(self.adapter.base_model_prefix, self.adapter.build(config.backbone_config))

    @property
    def backbone(self) -> nn.Module:
        """What the adapter drives: a module with the stock base model's submodules and its `config`."""
        return getattr(self, self.adapter.base_model_prefix)

    def backbone_module_names(self) -> list[str]:
        """Names of this model's children that are the backbone (all of whose weights a checkpoint must hold)."""
        return [self.adapter.base_model_prefix]

    def shared_pooler(self) -> nn.Module | None:
        """The backbone's pretrained pooler, read by the "pooler"/"linear" exit heads; None where there is none."""
        return self.adapter.pooler(self.backbone)

    def layer_modules(self) -> list[nn.Module]:
        """The module each layer step applies (ALBERT's steps share them): what LoRA, RomeBERT and compilation
        address."""
        return [self.adapter.layer_module(self.backbone, index) for index in range(self.config.num_hidden_layers)]

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.backbone.set_input_embeddings(value)

    def exit_logits(self, layer: int, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits of the exit after 1-based `layer`; `attention_mask` None means no padding. Every exit reads the
        state after the backbone's final step (`adapter.final`: ModernBERT's final norm, identity elsewhere), since
        the stock heads of pre-norm encoders have only ever seen normed states; the residual stream the next layer
        reads stays as it is."""
        hidden_states = self.adapter.final(self.backbone, hidden_states)
        return self.exits[self.exit_index[layer]](hidden_states, attention_mask, shared_pooler=self.shared_pooler())

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        *,
        exit_config: ExitConfig | None = None,
        output_all_exits: bool | None = None,
        output_hidden_states: bool | None = None,
        gradient_equilibrium: bool = False,
        gate_mode: str | None = None,
        **exit_kwargs,
    ) -> MultiExitModelOutput:
        r"""
        Args:
            input_ids, attention_mask, token_type_ids: as for the backbone's stock model (`token_type_ids` are
                ignored by backbones without segments).
            exit_config: an `ExitConfig` replacing `self.exit_config` for this call.
            output_all_exits: run every layer and return `all_logits` (always so in train mode).
            output_hidden_states: also return every layer's output (all-exits mode only).
            gradient_equilibrium: in all-exits mode, rescale gradients at each exit as in ElasticBERT's gradient
                equilibrium (Li et al., 2019): with `k` exits from this one on, the head sees `GR(x, 1/k)` and the
                deeper layers `GR(GR(x, 1/k), k - 1)`, so each exit's gradient into the backbone weighs `1/k` and the
                deeper ones `(k-1)/k`. Identity in the forward pass.
            gate_mode: `"soft"`, `"hard"` or `"off"`, replacing `config.gate_mode` for this call (SmartBERT trains
                with soft gates first, then hard ones).
            **exit_kwargs: `ExitConfig` fields overriding it for this call, e.g. `exit_strategy="patience", patience=2`.
        """
        config = resolve_exit_config(self.exit_config, exit_config, exit_kwargs)
        strategy = build_exit_strategy(config, self.config)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden_states = self.embed(input_ids, attention_mask, token_type_ids)
        if self.training or output_all_exits:
            gates = all_exits_gate_mode(gate_mode, self.config, self.skip_gates is not None, self.training)
            if gates is not None and gradient_equilibrium:
                raise ValueError("gradient_equilibrium=True does not combine with skip gates; pass gate_mode='off'.")
            return all_exits_loop(
                self, hidden_states, attention_mask, bool(output_hidden_states), gradient_equilibrium, gates,
                self.config.gate_threshold,
            )
        return early_exit_loop(self, hidden_states, attention_mask, strategy)

    # ----- the segments the exit loops run (`ExitLoopSegments`) -----
    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_labels(self) -> int:
        return self.config.num_labels

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.adapter.embed(self.backbone, input_ids, token_type_ids, attention_mask)

    def layer_context(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> Any:
        return self.adapter.layer_context(self.backbone, hidden_states, attention_mask)

    def run_layer(self, index: int, hidden_states: torch.Tensor, context: Any) -> torch.Tensor:
        return self.adapter.run_layer(self.backbone, index, hidden_states, context)

    def gate(self, index: int, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.skip_gates[index](hidden_states, attention_mask)

    def final_state(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.adapter.final(self.backbone, hidden_states)


class MultiExitBertModel(MultiExitModel):
    r"""[`MultiExitModel`] for BERT with [`MultiExitConfig`], its BERT modules held flat (`embeddings`, `encoder`,
    `pooler`), as checkpoints saved by earlier versions (`model_type` `multiexit_bert`) name them. The pooler is
    built only for the "pooler"/"linear" exit heads (and "native", whose heads start from it)."""

    config_class = MultiExitConfig
    config: MultiExitConfig
    base_model_prefix = "bert"

    def build_backbone(self, config: MultiExitConfig) -> None:
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if config.exit_head in (*POOLER_STYLES, "native") else None

    @property
    def backbone(self) -> nn.Module:
        """This model itself: it holds BERT's modules, and its config is a `BertConfig`."""
        return self

    def backbone_module_names(self) -> list[str]:
        return ["embeddings", "encoder"] + (["pooler"] if self.pooler is not None else [])

    def shared_pooler(self) -> nn.Module | None:
        return self.pooler

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value


def exit_loss(
    logits: torch.Tensor, labels: torch.Tensor, problem_type: str, num_labels: int, reduction: str = "mean"
) -> torch.Tensor:
    """Loss of one exit as in `BertForSequenceClassification`: cross-entropy (single label), BCE with logits averaged
    over labels (multi label) or MSE (regression); `reduction="none"` gives one value per sample."""
    if problem_type == REGRESSION:
        per_sample = (logits.squeeze(-1).float() - labels.float().view(-1)) ** 2
    elif problem_type == MULTI_LABEL:
        per_sample = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none").mean(-1)
    else:
        per_sample = F.cross_entropy(logits.float().view(-1, num_labels), labels.view(-1), reduction="none")
    return per_sample if reduction == "none" else per_sample.mean()


def check_labels(labels: torch.Tensor, problem_type: str, num_labels: int) -> None:
    """Raises `ValueError` for labels the loss would silently mishandle (a class id outside `num_labels`, NaN)."""
    if problem_type == SINGLE_LABEL:
        if labels.is_floating_point():
            raise ValueError(f"Classification labels must be integer class ids in [0, {num_labels - 1}], got {labels.dtype}.")
        bad = labels[(labels < 0) | (labels >= num_labels)]
        if bad.numel():
            raise ValueError(f"Label {int(bad[0])} is outside num_labels={num_labels}: valid labels are 0..{num_labels - 1}.")
    elif bool(torch.isnan(labels.float()).any()):
        raise ValueError(f"labels contain NaN; {problem_type} labels must be finite numbers.")


class MultiExitModelForSequenceClassification(MultiExitPreTrainedModel):
    r"""[`MultiExitModel`] with labels, loss and `problem_type` (single-label, multi-label, regression).

    `from_pretrained(<stock checkpoint of a supported backbone>, num_labels=N, exit_head=..., exit_layers=...)`
    loads the backbone weights (and pooler) and initialises the exits; from a fine-tuned
    `<Arch>ForSequenceClassification` its head becomes the final exit (see `stock_key_mapping`).

    Loss: in train mode the joint loss `sum_j w_j * loss(z_j, y)` over the exits with `config.exit_loss_weights`
    (default PABEE's `w_j = j / sum_k k`, Zhou et al. 2020); the method trainers replace it by their objectives.
    In eval mode the final exit's loss, so `Trainer.evaluate` reports the full-depth loss.
    """

    base_model_class = MultiExitModel

    def __init__(self, config: ExitFields):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.add_module(self.base_model_prefix, self.base_model_class(config))
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        exit_config: ExitConfig | None = None,
        output_all_exits: bool | None = None,
        output_hidden_states: bool | None = None,
        gradient_equilibrium: bool = False,
        gate_mode: str | None = None,
        **exit_kwargs,
    ) -> MultiExitSequenceClassifierOutput:
        r"""As [`MultiExitModel.forward`], plus `labels` (`(B,)` class ids, `(B, C)` multi-hot, or `(B,)` floats
        for regression). Labels need the final exit, so with labels every layer and exit runs (as with
        `output_all_exits=True`) and `logits` are the final exit's: `Trainer.evaluate` then sees all exits."""
        problem_type = resolve_problem_type(self.config)
        if labels is not None:
            check_labels(labels, problem_type, self.num_labels)
        want_all = output_all_exits or (labels is not None)
        outputs = self.base_model(
            input_ids,
            attention_mask,
            token_type_ids,
            exit_config=exit_config,
            output_all_exits=want_all,
            output_hidden_states=output_hidden_states,
            gradient_equilibrium=gradient_equilibrium,
            gate_mode=gate_mode,
            **exit_kwargs,
        )
        loss = None
        if labels is not None:
            if self.training:
                weights = self.config.exit_loss_weights or [float(j) for j in self.config.exit_layers]
                total = float(sum(weights))
                loss = sum(
                    w / total * exit_loss(z, labels, problem_type, self.num_labels)
                    for w, z in zip(weights, outputs.all_logits)
                )
            else:
                loss = exit_loss(outputs.all_logits[-1], labels, problem_type, self.num_labels)
        return MultiExitSequenceClassifierOutput(loss=loss, **outputs)


class MultiExitBertForSequenceClassification(MultiExitModelForSequenceClassification):
    r"""[`MultiExitModelForSequenceClassification`] over [`MultiExitBertModel`] (held as `bert`), for BERT
    checkpoints with [`MultiExitConfig`] (`model_type` `multiexit_bert`) and plain BERT checkpoints."""

    config_class = MultiExitConfig
    config: MultiExitConfig
    base_model_prefix = "bert"
    base_model_class = MultiExitBertModel


class MultiExitTextClassificationPipeline(TextClassificationPipeline):
    """`pipeline("text-classification")` for multi-exit models. The stock pipeline hands unknown call arguments to
    the tokenizer; this one sends `ExitConfig` fields (and `exit_config`) to the model's forward instead, so
    `pipe(texts, exit_strategy="patience", patience=2)` works, and adds each input's `exit_layer` to its result."""

    def check_model_type(self, supported_models):
        # Any model with an exit rule is one this pipeline serves, also hf_multiexit's ONNX Runtime model, which no
        # Auto class registers; the stock check would warn that it is unsupported.
        if not hasattr(self.model, "exit_config"):
            super().check_model_type(supported_models)

    def _sanitize_parameters(self, function_to_apply=None, top_k="", exit_config=None, **tokenizer_kwargs):
        exit_kwargs = {name: tokenizer_kwargs.pop(name) for name in ExitConfig.field_names() if name in tokenizer_kwargs}
        if exit_config is not None:
            exit_kwargs["exit_config"] = exit_config
        preprocess_params, _, postprocess_params = super()._sanitize_parameters(function_to_apply, top_k, **tokenizer_kwargs)
        return preprocess_params, exit_kwargs, postprocess_params

    def _forward(self, model_inputs, **exit_kwargs):
        return self.model(**model_inputs, **exit_kwargs)

    def postprocess(self, model_outputs, **postprocess_params):
        result = super().postprocess(model_outputs, **postprocess_params)
        exit_layer = int(model_outputs["exit_layers"][0])
        for entry in result if isinstance(result, list) else [result]:
            entry["exit_layer"] = exit_layer
        return result


AUTO_FAMILIES: dict[type[PreTrainedConfig], tuple[type[MultiExitModel], type[MultiExitModelForSequenceClassification]]] = {
    MultiExitModelConfig: (MultiExitModel, MultiExitModelForSequenceClassification),
    MultiExitConfig: (MultiExitBertModel, MultiExitBertForSequenceClassification),
}
"""Config class -> (AutoModel class, AutoModelForSequenceClassification class): the `auto_map` a save writes."""

for _config_class, (_base_class, _classifier_class) in AUTO_FAMILIES.items():
    _base_class.register_for_auto_class("AutoModel")
    _classifier_class.register_for_auto_class("AutoModelForSequenceClassification")
    _config_class.register_for_auto_class()

__all__ = [
    "AUTO_FAMILIES",
    "EXIT_HEADS",
    "MultiExitModel",
    "MultiExitModelForSequenceClassification",
    "exit_loss",
    "MultiExitBertForSequenceClassification",
    "MultiExitBertModel",
    "MultiExitModelOutput",
    "MultiExitPreTrainedModel",
    "MultiExitTextClassificationPipeline",
    "MultiExitSequenceClassifierOutput",
]
