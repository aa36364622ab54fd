# Copyright 2026 The hf-multiexit authors. Licensed under the Apache License, Version 2.0.
"""Exit strategies: the per-sample rules that decide, layer by layer, which samples leave the batch.

A strategy is built once per forward call from the `ExitConfig` and the model config, then asked at each exit
layer, for the samples still in the batch, which of them leave now. Strategies keep per-sample state as
batch-first tensors so that the model can compact that state together with the hidden states.

New strategies are added with `@register_exit_strategy` (compare PEFT's `register_peft_method`).

This file travels to the Hub with saved checkpoints: it may import only torch, transformers and sibling files.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import ClassVar

import torch

from .exit_configuration import ExitConfig

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"

EXIT_STRATEGIES: dict[str, type[ExitStrategy]] = {}


def register_exit_strategy(cls: type[ExitStrategy]) -> type[ExitStrategy]:
    """Class decorator adding a strategy to `EXIT_STRATEGIES` under `cls.name`."""
    if cls.name in EXIT_STRATEGIES:
        raise ValueError(f"An exit strategy named {cls.name!r} is already registered.")
    EXIT_STRATEGIES[cls.name] = cls
    return cls


def resolve_problem_type(config) -> str:
    """The model's problem type; like `BertForSequenceClassification`, one label means regression."""
    if config.problem_type is not None:
        return config.problem_type
    return REGRESSION if config.num_labels == 1 else SINGLE_LABEL


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """`H(softmax(z)) = -sum_c p_c ln p_c` per row, in float32 so thresholds do not depend on the model dtype.
    (`entr` computes `-p ln p` in one kernel: this runs after every layer, where a few small ops cost real time
    at batch size 1.)"""
    return torch.special.entr(torch.softmax(logits.float(), dim=-1)).sum(dim=-1)


def _as_float32(value: float) -> float:
    """`value` rounded to float32: the tensor path compares float32 tensors with the threshold in float32, so the
    one-sample Python path must use the same rounded threshold (and round its own result) to decide alike."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _float32_entropy(logits: list[float]) -> float:
    """`entropy` of one sample in Python, rounded to float32 like the tensor path."""
    top = max(logits)
    weights = [math.exp(z - top) for z in logits]
    total = sum(weights)
    return _as_float32(-sum(w / total * math.log(w / total) for w in weights if w > 0))


class ExitStrategy:
    """Base class. `parameters` names the `ExitConfig` fields the strategy reads (for error messages and docs),
    `regression_parameters` those of them it reads only for regression."""

    name: ClassVar[str]
    parameters: ClassVar[tuple[str, ...]] = ()
    regression_parameters: ClassVar[tuple[str, ...]] = ()
    problem_types: ClassVar[tuple[str, ...]] = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
    uses_skip_gates: ClassVar[bool] = False

    def __init__(self, exit_config: ExitConfig, model_config):
        self.exit_layers = list(model_config.exit_layers)
        self.num_layers = model_config.num_hidden_layers
        self.problem_type = resolve_problem_type(model_config)
        self.min_exit_layer = exit_config.min_exit_layer
        if self.problem_type not in self.problem_types:
            raise ValueError(
                f"exit_strategy={self.name!r} does not fit problem_type={self.problem_type!r}; it supports "
                f"{list(self.problem_types)}. Strategies for {self.problem_type!r}: "
                f"{[n for n, s in EXIT_STRATEGIES.items() if self.problem_type in s.problem_types]}."
            )
        if self.min_exit_layer > self.num_layers:
            raise ValueError(f"min_exit_layer={self.min_exit_layer} is out of range: the model has {self.num_layers} layers.")
        if self.uses_skip_gates and not model_config.use_skip_gates:
            raise ValueError(
                f"exit_strategy={self.name!r} needs a model with skip gates (use_skip_gates=True); this model has none. "
                f"Valid strategies here: {[n for n, s in EXIT_STRATEGIES.items() if not s.uses_skip_gates]}."
            )

    decide_one: Callable[[list[float]], bool] | None = None
    """Optional: the same decision for a batch of one sample, on its logits as Python floats. At batch size 1 the
    per-layer check is dominated by per-op overhead, and this replaces several tensor ops by a little Python. What it
    pays (`benchmarks/results/batch1_decide_one.md`, 320 SST-2 sentences, 5 interleaved rounds, 2-core AMD host):
    batch-1 inference 1.2% faster with entropy (every round 0.9-3.6%), 2.7% with confidence (-1.8% to 4.1%)."""

    def needs_logits(self, layer: int) -> bool:
        """Whether the exit head at this 1-based exit layer must run (the last exit always runs)."""
        return layer >= self.min_exit_layer

    def init_state(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        return {}

    def should_exit(self, logits: torch.Tensor, layer: int, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Boolean `(n,)`: which of the `n` samples still in the batch leave at this exit. May update `state`.

        `logits` are float32 `(n, C)` whatever the model's dtype (the early-exit loop upcasts half-precision
        logits), so entropies, probabilities and agreements are compared in float32. The result stays on the device:
        the loop reads it once per exit (the samples that stay), and a strategy should not read tensors back to the
        host itself (`.item()`, `bool(t)`, `.tolist()`, `nonzero()`), since each read waits for the accelerator."""
        raise NotImplementedError


@register_exit_strategy
class NoExit(ExitStrategy):
    """Every sample runs every layer and gets the final classifier's prediction (fine-tuned BERT)."""

    name = "none"

    def needs_logits(self, layer: int) -> bool:
        return layer == self.num_layers

    def should_exit(self, logits, layer, state):
        return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)


@register_exit_strategy
class StaticExit(ExitStrategy):
    """Every sample leaves at `exit_layer` (the BERT-kL baselines)."""

    name = "static"
    parameters = ("exit_layer",)

    def __init__(self, exit_config, model_config):
        super().__init__(exit_config, model_config)
        self.exit_layer = exit_config.exit_layer
        if self.exit_layer not in self.exit_layers:
            raise ValueError(
                f"exit_layer={self.exit_layer!r} is not an exit of this model; valid exit layers are {self.exit_layers}."
            )
        if self.exit_layer < self.min_exit_layer:
            raise ValueError(f"exit_layer={self.exit_layer} is below min_exit_layer={self.min_exit_layer}.")

    def needs_logits(self, layer: int) -> bool:
        return layer == self.exit_layer

    def should_exit(self, logits, layer, state):
        return torch.full((logits.shape[0],), layer == self.exit_layer, dtype=torch.bool, device=logits.device)


@register_exit_strategy
class EntropyExit(ExitStrategy):
    """Leave at the first exit with `H(p_i) < S` (DeeBERT, Xin et al., ACL 2020), or `H(p_i) / ln C < S`
    with `normalize_entropy` (FastBERT's normalised uncertainty, Liu et al., ACL 2020)."""

    name = "entropy"
    parameters = ("entropy_threshold", "normalize_entropy")
    problem_types = (SINGLE_LABEL,)

    def __init__(self, exit_config, model_config):
        super().__init__(exit_config, model_config)
        threshold = exit_config.entropy_threshold
        if exit_config.normalize_entropy and threshold > 1.0:
            raise ValueError(
                f"entropy_threshold={threshold} is out of range for normalize_entropy=True: it must lie in [0, 1]."
            )
        # `H / ln C < S` as `H < S ln C`: one op less in the check that runs after every layer.
        self.threshold = _as_float32(threshold * math.log(model_config.num_labels) if exit_config.normalize_entropy else threshold)

    def should_exit(self, logits, layer, state):
        return entropy(logits) < self.threshold

    def decide_one(self, logits: list[float]) -> bool:
        return _float32_entropy(logits) < self.threshold


@register_exit_strategy
class ConfidenceExit(ExitStrategy):
    """Leave at the first exit whose top softmax probability exceeds `c` (the common max-probability baseline)."""

    name = "confidence"
    parameters = ("confidence_threshold",)
    problem_types = (SINGLE_LABEL,)

    def __init__(self, exit_config, model_config):
        super().__init__(exit_config, model_config)
        self.threshold = _as_float32(exit_config.confidence_threshold)

    def should_exit(self, logits, layer, state):
        return torch.softmax(logits.float(), dim=-1).amax(dim=-1) > self.threshold

    def decide_one(self, logits: list[float]) -> bool:
        top = max(logits)
        return _as_float32(1.0 / sum(math.exp(z - top) for z in logits)) > self.threshold


@register_exit_strategy
class PatienceExit(ExitStrategy):
    """PABEE (Zhou et al., NeurIPS 2020): a counter per sample grows while consecutive exits agree and resets
    to 0 when they do not; the sample leaves when the counter reaches `t` (earliest: the `t+1`-th exit).

    Agreement is `argmax z_i == argmax z_{i-1}` for single-label classification, equal thresholded
    predictions `z > 0` for multi-label, and `|z_i - z_{i-1}| < tau` (`regression_threshold`) for regression.
    Every exit head runs, also below `min_exit_layer`, because the counter needs the earlier predictions.
    """

    name = "patience"
    parameters = ("patience", "regression_threshold")
    regression_parameters = ("regression_threshold",)

    def __init__(self, exit_config, model_config):
        super().__init__(exit_config, model_config)
        self.patience = exit_config.patience
        self.tau = exit_config.regression_threshold

    def needs_logits(self, layer: int) -> bool:
        return True

    def init_state(self, batch_size, device):
        return {"counter": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def _prediction(self, logits: torch.Tensor) -> torch.Tensor:
        if self.problem_type == SINGLE_LABEL:
            return logits.argmax(dim=-1)
        if self.problem_type == MULTI_LABEL:
            return logits > 0
        return logits.float().squeeze(-1)

    def _agrees(self, current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        if self.problem_type == SINGLE_LABEL:
            return current == previous
        if self.problem_type == MULTI_LABEL:
            return (current == previous).all(dim=-1)
        return (current - previous).abs() < self.tau

    def should_exit(self, logits, layer, state):
        prediction = self._prediction(logits)
        if "previous" in state:
            agrees = self._agrees(prediction, state["previous"])
            state["counter"] = torch.where(agrees, state["counter"] + 1, torch.zeros_like(state["counter"]))
        state["previous"] = prediction
        return (state["counter"] >= self.patience) & (layer >= self.min_exit_layer)


@register_exit_strategy
class SkipExit(EntropyExit):
    """SmartBERT (Hu et al., IJCAI 2023): before each layer a gate `g_i` reads the layer's input; a sample with
    `g_i >= r` skips the layer (no layer, no exit check), the others run it and leave when `H(p_i) < S`."""

    name = "skip"
    parameters = ("entropy_threshold", "gate_threshold", "normalize_entropy")
    uses_skip_gates = True

    def __init__(self, exit_config, model_config):
        super().__init__(exit_config, model_config)
        self.gate_threshold = exit_config.gate_threshold


def build_exit_strategy(exit_config: ExitConfig, model_config) -> ExitStrategy:
    """The registered strategy named by `exit_config.exit_strategy`, validated against the model."""
    try:
        strategy_cls = EXIT_STRATEGIES[exit_config.exit_strategy]
    except KeyError:
        raise ValueError(
            f"Unknown exit_strategy={exit_config.exit_strategy!r}; valid strategies are {list(EXIT_STRATEGIES)}."
        ) from None
    return strategy_cls(exit_config, model_config)


__all__ = [
    "EXIT_STRATEGIES",
    "ExitStrategy",
    "build_exit_strategy",
    "entropy",
    "register_exit_strategy",
    "resolve_problem_type",
]
