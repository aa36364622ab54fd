"""Analytic inference FLOPs of a multi-exit BERT, per sample, from the work it actually did.

The count is that of `torch.utils.flop_counter`: 2 FLOPs per multiply-add of every matrix product (linear layers,
attention scores and attention-weighted values); element-wise work (softmax, GELU, LayerNorm, tanh, pooling sums)
and embedding look-ups are not counted. `tests/test_flops.py` checks the formulas against the counter.

For a sample of `n` tokens, hidden size `H`, intermediate size `I`, `C` labels:

- encoder layer: `2n·3H·H` (Q, K, V) + `2n·H·H` (output) + `4n²H` (QKᵀ and AV) + `4n·H·I` (feed-forward);
- exit head, "pooler"/"linear": `2H·H + 2H·C` (pooler on one pooled vector, classifier);
- exit head, "attention" with width `d` (FastBERT/SmartBERT): `2n·H·d` (projection) + `2d·d` ([CLS] query)
  + `4n·d·d` (keys, values) + `4n·d` (attention of one query) + `2d·d` (attention output) + `2d·d + 2d·C`;
- skip gate with width `g`: the same attention feature extractor with `g`, then `2g` (score).

A sample's total is `layers_run · layer(n) + exit_checks · head(n) + gates_run · gate(n)`, with the counts that
the early-exit forward returns (`layers_run`, `exit_checks`) and one gate per layer reached when the strategy uses
the gates. Full depth (`exit_strategy="none"`) is `L · layer(n) + head(n)`: only the final classifier runs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["attention_features_flops", "exit_head_flops", "full_depth_flops", "gate_flops", "layer_flops", "sample_flops"]


def layer_flops(config, n: np.ndarray | int) -> np.ndarray:
    """FLOPs of one BERT encoder layer on `n` tokens."""
    n = np.asarray(n, dtype=np.float64)
    hidden, inner = config.hidden_size, config.intermediate_size
    return 8 * n * hidden * hidden + 4 * n * n * hidden + 4 * n * hidden * inner


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
    total = np.asarray(layers_run) * layer_flops(config, lengths) + np.asarray(exit_checks) * exit_head_flops(config, lengths)
    if gates_run is not None:
        total = total + np.asarray(gates_run) * gate_flops(config, lengths)
    return total


def full_depth_flops(config, lengths) -> np.ndarray:
    """Per-sample FLOPs of the plain full-depth model: every layer and the final classifier only."""
    lengths = np.asarray(lengths)
    return sample_flops(config, lengths, np.full(lengths.shape, config.num_hidden_layers), np.ones(lengths.shape))
