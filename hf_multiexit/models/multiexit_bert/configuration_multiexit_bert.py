# Copyright 2026 The hf-multiexit authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the multi-exit BERT model.

This file travels to the Hub with saved checkpoints: it may import only torch, transformers and sibling files.
"""

from transformers import BertConfig

EXIT_HEAD_STYLES = ("pooler", "linear", "attention")
"""Exit head styles (see `ALGORITHMS.md`):

- ``"pooler"`` (DeeBERT, Xin et al. 2020; RomeBERT, Gao et al. 2021): every exit has its own pooler
  (Linear H->H + tanh on [CLS]) initialised from the pretrained pooler, dropout, Linear H->C. The final exit
  uses the backbone's pretrained pooler, like ``BertForSequenceClassification``.
- ``"linear"`` (PABEE, Zhou et al. 2020): one pretrained pooler shared by every exit, a Linear H->C per exit.
- ``"attention"`` (FastBERT, Liu et al. 2020; SmartBERT, Hu et al. 2023): Linear H->d + tanh, a small
  self-attention over the sequence, [CLS], Linear d->d + tanh, Linear d->C.
"""


class MultiExitConfig(BertConfig):
    r"""Configuration of [`MultiExitBertModel`]: a BERT backbone with a classifier ("exit") after some layers.

    All [`BertConfig`] fields are accepted, so a plain BERT `config.json` loads into this class.

    Args:
        exit_layers (`list[int]`, *optional*):
            1-based layers that carry an exit, sorted. Defaults to every layer. Must contain the last layer,
            whose exit is the model's final classifier.
        exit_head (`str`, *optional*, defaults to `"pooler"`):
            One of `EXIT_HEAD_STYLES`.
        exit_pooling (`str`, *optional*, defaults to `"cls"`):
            What the `"pooler"`/`"linear"` heads read: `"cls"` is the [CLS] state, as in BERT; `"mean"` is the mean
            over non-padding tokens, for backbones trained with mean pooling (sentence-transformers models such as
            all-MiniLM-L6-v2, whose [CLS] state in the lower layers barely depends on the input).
        exit_head_hidden_size (`int`, *optional*, defaults to 128):
            Width `d` of the attention exit heads.
        exit_head_num_heads (`int`, *optional*, defaults to 2):
            Attention heads of the attention exit heads.
        exit_loss_weights (`list[float]`, *optional*):
            Weights `w_j` of the training loss the model computes itself when given labels in train mode,
            `sum_j w_j * loss(z_j, y)`. Defaults to PABEE's `j / sum_j j` over the exit layers. The trainers in
            `hf_multiexit.trainers` compute their own objectives from `all_logits` instead.
        use_skip_gates (`bool`, *optional*, defaults to `False`):
            Adds a SmartBERT skip gate before every layer (Hu et al., IJCAI 2023).
        gate_hidden_size (`int`, *optional*, defaults to 128) / gate_num_heads (`int`, *optional*, defaults to 2):
            Size of the skip gates (Linear H->d + tanh, self-attention, [CLS], Linear d->1, sigmoid).
        gate_mode (`str`, *optional*, defaults to `"hard"`):
            How gates weigh a layer in training: `"soft"` uses `g`, `"hard"` the straight-through
            `g + sg(1[g >= r] - g)`; `"off"` runs every layer (gates ignored).
        gate_threshold (`float`, *optional*, defaults to 0.5):
            `r`: a layer is skipped when its gate is `>= r`.
    """

    model_type = "multiexit_bert"

    exit_layers: list[int] | None = None
    exit_head: str = "pooler"
    exit_pooling: str = "cls"
    exit_head_hidden_size: int = 128
    exit_head_num_heads: int = 2
    exit_loss_weights: list[float] | None = None
    use_skip_gates: bool = False
    gate_hidden_size: int = 128
    gate_num_heads: int = 2
    gate_mode: str = "hard"
    gate_threshold: float = 0.5

    def __post_init__(self, **kwargs):
        num_layers = self.num_hidden_layers
        if self.exit_layers is None:
            self.exit_layers = list(range(1, num_layers + 1))
        layers = list(self.exit_layers)
        if (
            not layers
            or any(not isinstance(i, int) or not 1 <= i <= num_layers for i in layers)
            or layers != sorted(set(layers))
            or layers[-1] != num_layers
        ):
            raise ValueError(
                f"exit_layers={layers} is invalid: it must be a sorted list of distinct 1-based layers in "
                f"1..{num_layers} that ends with the last layer {num_layers}."
            )
        if self.exit_head not in EXIT_HEAD_STYLES:
            raise ValueError(f"exit_head={self.exit_head!r} is not one of {list(EXIT_HEAD_STYLES)}.")
        if self.exit_pooling not in ("cls", "mean"):
            raise ValueError(f"exit_pooling={self.exit_pooling!r} is not one of ['cls', 'mean'].")
        if self.exit_loss_weights is not None and len(self.exit_loss_weights) != len(layers):
            raise ValueError(
                f"exit_loss_weights has {len(self.exit_loss_weights)} values but there are {len(layers)} exits "
                f"(exit_layers={layers})."
            )
        if self.gate_mode not in ("soft", "hard", "off"):
            raise ValueError(f"gate_mode={self.gate_mode!r} is not one of ['soft', 'hard', 'off'].")
        if not 0.0 < self.gate_threshold < 1.0:
            raise ValueError(f"gate_threshold={self.gate_threshold} must lie in the open interval (0, 1).")
        super().__post_init__(**kwargs)

    @property
    def num_exits(self) -> int:
        return len(self.exit_layers)


__all__ = ["EXIT_HEAD_STYLES", "MultiExitConfig"]
