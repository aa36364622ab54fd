"""LoRA for multi-exit models with PEFT: low-rank adapters on the backbone, the exit heads trained in full.

    model = MultiExitBertForSequenceClassification.from_pretrained("bert-base-uncased", num_labels=2)
    model = add_lora(model, r=8)                 # a peft.PeftModel; every <Method>Trainer trains it
    trainer = PabeeTrainer(model=model, args=..., train_dataset=...)
    trainer.train()
    save_lora(model, "out/adapter")              # adapter + exit heads (modules_to_save) + the multi-exit config
    model = load_lora("out/adapter")             # on the base checkpoint named in adapter_config.json
    merged = model.merge_and_unload()            # a plain multi-exit model, same early-exit outputs

The backbone's weights stay frozen and get LoRA adapters (Hu et al., 2022; by default on the attention query and
value projections, as in the paper). The exit heads, the skip gates and the shared pretrained pooler are new or
task-specific, so they are trained in full: PEFT's `modules_to_save` keeps a trainable copy of each and saves it
with the adapter.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedConfig

from .io import atomic_save_pretrained
from .models.multiexit_bert import AUTO_FAMILIES, ExitConfig

LORA_ADAPTER_DIR = "adapter"
"""Where `hf-multiexit train --lora_r` saves the adapter, inside `output_dir` (the merged model is `output_dir`)."""
MULTIEXIT_CONFIG_NAME = "multiexit_config.json"
"""The base model's multi-exit config (exit heads, labels), saved beside the adapter: the base checkpoint named in
`adapter_config.json` may be a plain BERT, which does not know them."""


def exit_module_names(model) -> list[str]:
    """Full names of the modules trained in full next to LoRA: exit heads, skip gates, shared pooler."""
    network = model.base_model
    prefix = f"{model.base_model_prefix}." if network is not model else ""
    names = [f"{prefix}exits.{i}" for i in range(len(network.exits))]
    if network.skip_gates is not None:
        names += [f"{prefix}skip_gates.{i}" for i in range(len(network.skip_gates))]
    pooler = network.shared_pooler()
    if pooler is not None:
        names += [name for name, module in model.named_modules() if module is pooler]
    return names


def layer_projections(model) -> dict[str, list[str]]:
    """The linear layers inside the encoder layers (`base_model.layer_modules()`, ALBERT's shared ones once), by the
    name LoRA targets them with, to their full module names. A projection is named by its last name component
    (`query`, `value_proj`, `Wqkv`) where that is unique within a layer, else by its path inside the layer with
    sub-layer indices left out (BERT's `attention.output.dense`, `intermediate.dense`, `output.dense`)."""
    module_names = {id(module): name for name, module in model.named_modules()}
    kinds: dict[str, list[str]] = {}
    for layer in {id(layer): layer for layer in model.base_model.layer_modules()}.values():
        for inner, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                kind = ".".join(part for part in inner.split(".") if not part.isdigit())
                kinds.setdefault(kind, []).append(f"{module_names[id(layer)]}.{inner}")
    last = Counter(kind.rsplit(".", 1)[-1] for kind in kinds)
    return {kind if last[kind.rsplit(".", 1)[-1]] > 1 else kind.rsplit(".", 1)[-1]: names for kind, names in kinds.items()}


def add_lora(
    model,
    r: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
) -> PeftModel:
    """Wraps a multi-exit model in a `PeftModel` with rank-`r` LoRA on the encoder layers' `target_modules` (names
    from `layer_projections`, e.g. BERT's `query`, `key`, `value`, `attention.output.dense`, `intermediate.dense`,
    `output.dense`; default: the backbone adapter's attention query and value projections, as in Hu et al.) and the
    exit heads, skip gates and shared pooler trained in full. `alpha` defaults to `2 r`."""
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"LoRA rank r={r!r} must be a positive integer.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout={dropout} must lie in [0, 1).")
    config = model.config
    if target_modules is None:
        target_modules = config.backbone_adapter.lora_target_modules(config.backbone_config)
    known = layer_projections(model)
    unknown = [name for name in target_modules if name not in known]
    if unknown or not target_modules:
        raise ValueError(f"LoRA target_modules={list(target_modules)} must be a non-empty subset of {list(known)}.")
    # Full module names, so that only encoder layers match: exit heads have `dense` layers of their own.
    lora_config = LoraConfig(
        r=r,
        lora_alpha=2 * r if alpha is None else alpha,
        lora_dropout=dropout,
        target_modules=[name for target in target_modules for name in known[target]],
        modules_to_save=exit_module_names(model),
    )
    return get_peft_model(model, lora_config)


@dataclass
class _MultiExitSettings:
    """What `load_lora` needs beside the adapter: the base model's multi-exit config and its exit rule."""

    config: PreTrainedConfig
    exit_config: ExitConfig

    def save_pretrained(self, folder: str) -> None:
        self.config.to_json_file(os.path.join(folder, MULTIEXIT_CONFIG_NAME))
        self.exit_config.save_pretrained(folder)


def save_lora(model: PeftModel, directory: str | os.PathLike) -> None:
    """Saves the adapter (with the exit heads), the multi-exit config and the exit rule, atomically: until
    `adapter_config.json` is renamed into place, the folder does not load as an adapter."""
    base = model.get_base_model()
    atomic_save_pretrained(directory, _MultiExitSettings(base.config, base.exit_config), model)


def merged_copy(model: PeftModel):
    """A plain multi-exit model with the adapter merged into the backbone and the trained exit heads in place; the
    PEFT model is left as it is."""
    return copy.deepcopy(model).merge_and_unload()


def load_lora(directory: str | os.PathLike, base_model_name_or_path: str | None = None, is_trainable: bool = False) -> PeftModel:
    """Loads an adapter saved by `save_lora` onto its base checkpoint (`base_model_name_or_path` overrides the one
    recorded in `adapter_config.json`, e.g. when the base was moved)."""
    directory = str(directory)
    config_path = os.path.join(directory, MULTIEXIT_CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise ValueError(f"{directory} has no {MULTIEXIT_CONFIG_NAME}; it is not an adapter saved by save_lora().")
    with open(os.path.join(directory, "adapter_config.json"), encoding="utf-8") as f:
        base_path = base_model_name_or_path or json.load(f)["base_model_name_or_path"]
    with open(config_path, encoding="utf-8") as f:
        model_type = json.load(f)["model_type"]
    config_class = next(config_class for config_class in AUTO_FAMILIES if config_class.model_type == model_type)
    _, classifier_class = AUTO_FAMILIES[config_class]
    base = classifier_class.from_pretrained(
        base_path, config=config_class.from_json_file(config_path), exit_config=ExitConfig.from_pretrained(directory)
    )
    return PeftModel.from_pretrained(base, directory, is_trainable=is_trainable)
