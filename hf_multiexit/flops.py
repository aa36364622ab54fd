"""Analytic inference FLOPs of a multi-exit model, per sample, from the work it actually did.

The count is that of `torch.utils.flop_counter`: 2 FLOPs per multiply-add of every matrix product (linear layers,
attention scores and attention-weighted values); element-wise work (softmax, GELU, LayerNorm, tanh, pooling sums)
and embedding look-ups are not counted. `tests/test_flops.py` checks the formulas against the counter.

For a sample of `n` tokens, hidden size `H`, intermediate size `I`, `C` labels:

- encoder layer `i`: the backbone adapter's `layer_flops` (BERT: `2n·3H·H` (Q, K, V) + `2n·H·H` (output) + `4n²H`
  (QKᵀ and AV) + `4n·H·I` (feed-forward); ALBERT, DeBERTa, ModernBERT, DistilBERT their own), plus the adapter's
  `embed_flops` once (a projection of the embeddings where the model has one);
- exit head, "pooler"/"linear", and "native" (every architecture's head is one H x H layer and a classifier on one
  pooled vector): `2H·H + 2H·C`;
- exit head, "attention" with width `d` (FastBERT/SmartBERT): `2n·H·d` (projection) + `2d·d` ([CLS] query)
  + `4n·d·d` (keys, values) + `4n·d` (attention of one query) + `2d·d` (attention output) + `2d·d + 2d·C`;
- skip gate with width `g`: the same attention feature extractor with `g`, then `2g` (score).

A sample's total is `embed(n) + layers(layers_run, n) + exit_checks · head(n) + gates_run · gate(n)`, with the
counts that the early-exit forward returns (`layers_run`, `exit_checks`) and one gate per layer reached when the
strategy uses the gates; `layers(k, n)` sums the first `k` layers (exact without skip gates, which skip layers; with
them the layers differ in cost only where the adapter says so, e.g. DeBERTa's convolution after layer 1). Full depth
(`exit_strategy="none"`) is `embed(n) + layers(L, n) + head(n)`: only the final classifier runs.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "attention_features_flops", "exit_head_flops", "full_depth_flops", "gate_flops", "layer_flops", "layers_flops",
    "sample_flops",
]


def layer_flops(config, n: np.ndarray | int) -> np.ndarray:
    """FLOPs of the first encoder layer on `n` tokens (every layer of BERT)."""
    return layers_flops(config, 1, n)


def layers_flops(config, layers, n) -> np.ndarray:
    """FLOPs of the first `layers` encoder layers (an int, or an array with one count per sample) on `n` tokens
    (an int or an array of the same shape), from the backbone adapter's per-layer counts."""
    adapter, backbone = config.backbone_adapter, config.backbone_config
    lengths = np.atleast_1d(np.asarray(n, dtype=np.float64))
    per_layer = [np.broadcast_to(adapter.layer_flops(backbone, lengths, index), lengths.shape) for index in range(config.num_hidden_layers)]
    cumulative = np.cumsum([np.zeros_like(lengths)] + per_layer, axis=0)
    total = cumulative[np.broadcast_to(np.asarray(layers), lengths.shape), np.arange(lengths.size)]
    return total if np.ndim(n) else total[0]


def attention_features_flops(hidden: int, width: int, n: np.ndarray | int) -> np.ndarray:
    """`tanh(W h)` on all `n` tokens, then multi-head attention of the [CLS] query over them (`ClsAttention`)."""
    n = np.asarray(n, dtype=np.float64)
    return 2 * n * hidden * width + 2 * width * width + 4 * n * width * width + 4 * n * width + 2 * width * width


def exit_head_flops(config, n: np.ndarray | int) -> np.ndarray:
    """FLOPs of one exit head (any of the model's exits: they share a style and size) on `n` tokens."""
    n = np.asarray(n, dtype=np.float64)
    if config.exit_head == "attention":
        width = config.exit_head_hidden_size
        return attention_features_flops(config.hidden_size, width, n) + 2 * width * width + 2 * width * config.num_labels
    hidden = config.hidden_size
    return np.zeros_like(n) + 2 * hidden * hidden + 2 * hidden * config.num_labels


def gate_flops(config, n: np.ndarray | int) -> np.ndarray:
    """FLOPs of one SmartBERT skip gate on `n` tokens."""
    width = config.gate_hidden_size
    return attention_features_flops(config.hidden_size, width, n) + 2 * width


def sample_flops(config, lengths, layers_run, exit_checks, gates_run=None) -> np.ndarray:
    """Per-sample FLOPs `(N,)` from each sample's token count and the layers, exit heads and gates it ran."""
    lengths = np.asarray(lengths)
    embed = np.asarray(config.backbone_adapter.embed_flops(config.backbone_config, lengths.astype(np.float64)))
    total = embed + layers_flops(config, layers_run, lengths) + np.asarray(exit_checks) * exit_head_flops(config, lengths)
    if gates_run is not None:
        total = total + np.asarray(gates_run) * gate_flops(config, lengths)
    return total


def full_depth_flops(config, lengths) -> np.ndarray:
    """Per-sample FLOPs of the plain full-depth model: every layer and the final classifier only."""
    lengths = np.asarray(lengths)
    return sample_flops(config, lengths, np.full(lengths.shape, config.num_hidden_layers), np.ones(lengths.shape))
