# Copyright 2026 The hf-multiexit authors. Licensed under the Apache License, Version 2.0.
"""Configurations of the multi-exit models: `MultiExitModelConfig` (any supported backbone, held as a sub-config)
and `MultiExitConfig` (BERT, flat, as saved by earlier versions).

This file travels to the Hub with saved checkpoints: it may import only torch, transformers and sibling files.
"""

import json
from dataclasses import dataclass
from typing import ClassVar

from transformers import AutoConfig, BertConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import cached_file

from .backbones import BACKBONE_ADAPTERS, BackboneAdapter, get_backbone_adapter

EXIT_HEAD_STYLES = ("pooler", "linear", "attention", "native")
"""Exit head styles (see `ALGORITHMS.md`):

- ``"pooler"`` (DeeBERT, Xin et al. 2020; RomeBERT, Gao et al. 2021): every exit has its own pooler
  (Linear H->H + tanh on [CLS]) initialised from the pretrained pooler, dropout, Linear H->C. The final exit
  uses the backbone's pretrained pooler, like ``BertForSequenceClassification``.
- ``"linear"`` (PABEE, Zhou et al. 2020): one pretrained pooler shared by every exit, a Linear H->C per exit.
- ``"attention"`` (FastBERT, Liu et al. 2020; SmartBERT, Hu et al. 2023): Linear H->d + tanh, a small
  self-attention over the sequence, [CLS], Linear d->d + tanh, Linear d->C.
- ``"native"``: every exit is a fresh copy of the backbone architecture's own sequence-classification head
  (`BackboneAdapter.native_head`: BERT/ALBERT pooler + classifier, RoBERTa/XLM-R/ELECTRA classification head,
  DistilBERT pre-classifier, DeBERTa context pooler, ModernBERT head), so the final exit of a model loaded from a
  fine-tuned `<Arch>ForSequenceClassification` is that checkpoint's head. The default for backbones without a pooler
  (the "pooler"/"linear" styles read one).
"""

POOLER_STYLES = ("pooler", "linear")
"""Head styles that read the backbone's pretrained pooler (`BackboneAdapter.pooler`)."""


def checkpoint_pooling(pretrained_model_name_or_path, **hub_kwargs) -> str | None:
    """`"mean"` when the checkpoint is a sentence-transformers model (a `modules.json`) whose pooling module averages
    the token states (`pooling_mode_mean_tokens`, as all-MiniLM-L6-v2's), else None. Such a backbone was trained for
    the mean: its [CLS] state in the lower layers barely depends on the input, so exits reading [CLS] stay at the
    majority class."""
    options = {key: hub_kwargs[key] for key in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if key in hub_kwargs}

    def read(name: str):
        path = cached_file(
            pretrained_model_name_or_path, name, _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False, **options,
        )
        if path is None:
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    for module in read("modules.json") or []:
        if module.get("type", "").endswith(".Pooling"):
            pooling = read(f"{module['path']}/config.json") or {}
            return "mean" if pooling.get("pooling_mode_mean_tokens") else None
    return None


@dataclass(kw_only=True)
class ExitFields:
    r"""The exit fields shared by [`MultiExitModelConfig`] and [`MultiExitConfig`], and their checks.

    Args:
        exit_layers (`list[int]`, *optional*):
            1-based layers that carry an exit, sorted. Defaults to every layer. Must contain the last layer,
            whose exit is the model's final classifier.
        exit_head (`str`, *optional*):
            One of `EXIT_HEAD_STYLES`. Defaults to `"pooler"` where the backbone has a pooler (BERT), else `"native"`.
        exit_pooling (`str`, *optional*, defaults to `"cls"`):
            What the `"pooler"`/`"linear"` heads read: `"cls"` is the [CLS] state, as in BERT; `"mean"` is the mean
            over non-padding tokens, for backbones trained with mean pooling (sentence-transformers models such as
            all-MiniLM-L6-v2, whose [CLS] state in the lower layers barely depends on the input). Loaded from a plain
            checkpoint, it defaults to `"mean"` where the folder says the backbone was trained so
            (`checkpoint_pooling`); an explicit argument wins.
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

    exit_layers: list[int] | None = None
    exit_head: str | None = None
    exit_pooling: str = "cls"
    exit_head_hidden_size: int = 128
    exit_head_num_heads: int = 2
    exit_loss_weights: list[float] | None = None
    use_skip_gates: bool = False
    gate_hidden_size: int = 128
    gate_num_heads: int = 2
    gate_mode: str = "hard"
    gate_threshold: float = 0.5

    def _check_exit_fields(self) -> None:
        """Defaults that depend on the backbone, then `ValueError`s naming any bad value and the valid choices."""
        adapter, num_layers = self.backbone_adapter, self.num_hidden_layers
        if self.exit_head is None:
            self.exit_head = "pooler" if adapter.has_pooler else "native"
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
        if self.exit_head in POOLER_STYLES and not adapter.has_pooler:
            with_pooler = sorted(name for name, other in BACKBONE_ADAPTERS.items() if other.has_pooler)
            raise ValueError(
                f"exit_head={self.exit_head!r} reads the backbone's pooler, which {adapter.model_type!r} has not; "
                f"use 'native' or 'attention' (the pooler styles need one of {with_pooler})."
            )
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

    @property
    def num_exits(self) -> int:
        return len(self.exit_layers)

    @property
    def backbone_adapter(self) -> BackboneAdapter:
        """The adapter that runs `backbone_config`'s architecture layer by layer."""
        return get_backbone_adapter(self.backbone_config.model_type)

    @property
    def backbone_prefix(self) -> str:
        """Where `MultiExitModel` holds the backbone's modules: under the adapter's `base_model_prefix`, as
        `<Arch>For...` models hold their base model."""
        return self.backbone_adapter.base_model_prefix + "."

    @property
    def exit_dropout(self) -> float:
        """Dropout of the pooled exit heads: the backbone's classifier dropout."""
        return self.backbone_adapter.classifier_dropout(self.backbone_config)

    @property
    def exit_attention_dropout(self) -> float:
        """Attention dropout of the attention exit heads: the backbone's."""
        return self.backbone_adapter.attention_dropout(self.backbone_config)


class MultiExitModelConfig(ExitFields, PreTrainedConfig):
    r"""Configuration of [`MultiExitModel`]: any supported encoder (`backbone_config`, the stock config of a
    `model_type` registered in `BACKBONE_ADAPTERS`) with a classifier ("exit") after some layers; the exit fields are
    those of [`ExitFields`]. `num_labels`/`id2label`/`problem_type` are the exits' labels.

    `from_pretrained` on a stock checkpoint folder (its `config.json` has the backbone's own `model_type`) wraps that
    config as `backbone_config` and takes over its labels (a fine-tuned classifier's `id2label`); any other
    `model_type` is a `ValueError` naming it and the supported ones.

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            The encoder's config; a `dict` needs its `model_type`. Defaults to BERT's defaults.
    """

    model_type = "multiexit"
    sub_configs_defaults: ClassVar = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    backbone_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._check_exit_fields()  # its `backbone_adapter` is a ValueError for unsupported types

    @property
    def num_hidden_layers(self) -> int:
        """Layer steps of the backbone (ALBERT: applications of its shared layers), i.e. of exits at most."""
        return self.backbone_adapter.num_layers(self.backbone_config)

    @property
    def hidden_size(self) -> int:
        return self.backbone_config.hidden_size

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """`PreTrainedConfig.get_config_dict`; a stock backbone's config (another `model_type`) comes back wrapped:
        `{"model_type": "multiexit", "backbone_config": <its dict>}` with its labels moved out, so that a fine-tuned
        classifier's `id2label` and `problem_type` become the exits' (call-time `num_labels=` still wins)."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type in (None, cls.model_type):  # None: not a config this can judge (e.g. a save cut short)
            return config_dict, kwargs
        if model_type == MultiExitConfig.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} is a {model_type!r} checkpoint (MultiExitConfig, a BERT backbone); "
                "load it with MultiExitBertForSequenceClassification or AutoModelForSequenceClassification."
            )
        get_backbone_adapter(model_type)  # ValueError naming it and the supported types
        backbone = dict(config_dict)
        wrapped = {"model_type": cls.model_type, "backbone_config": backbone}
        if checkpoint_pooling(pretrained_model_name_or_path, **kwargs) == "mean":
            wrapped["exit_pooling"] = "mean"
        for key in ("id2label", "label2id", "problem_type"):
            if key in backbone:
                wrapped[key] = backbone.pop(key)
        return wrapped, kwargs


class MultiExitConfig(ExitFields, BertConfig):
    r"""Configuration of [`MultiExitBertModel`]: a BERT backbone (all [`BertConfig`] fields, flat) with the exit
    fields of [`ExitFields`]; `exit_head` defaults to `"pooler"`. A plain BERT `config.json` loads into this class.
    Kept for BERT checkpoints saved with `model_type` `"multiexit_bert"` by earlier versions;
    [`MultiExitModelConfig`] serves every backbone, BERT included."""

    model_type = "multiexit_bert"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._check_exit_fields()

    @property
    def backbone_config(self) -> BertConfig:
        """The BERT fields are this config's own."""
        return self

    @property
    def backbone_adapter(self) -> BackboneAdapter:
        return get_backbone_adapter("bert")

    @property
    def backbone_prefix(self) -> str:
        """`MultiExitBertModel` holds BERT's modules flat."""
        return ""

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """A plain BERT `config.json` is this config's BERT part: its `model_type` is read as this one's, so that
        transformers does not warn about loading a `bert` model into a `multiexit_bert` one."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type == BertConfig.model_type:
            config_dict = {**config_dict, "model_type": cls.model_type}
            if checkpoint_pooling(pretrained_model_name_or_path, **kwargs) == "mean":
                config_dict["exit_pooling"] = "mean"
        elif model_type not in (None, cls.model_type):  # None: not a config this check can judge (e.g. cut short)
            raise ValueError(
                f"MultiExitConfig is BERT's (model_type 'bert' or {cls.model_type!r}), not {model_type!r}; for "
                f"{sorted(BACKBONE_ADAPTERS)} use MultiExitModelConfig / MultiExitModelForSequenceClassification."
            )
        return config_dict, kwargs


__all__ = ["EXIT_HEAD_STYLES", "ExitFields", "MultiExitConfig", "MultiExitModelConfig"]
