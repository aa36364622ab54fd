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
from collections.abc import Sequence
from dataclasses import dataclass

from peft import LoraConfig, PeftModel, get_peft_model

from .io import atomic_save_pretrained
from .models.multiexit_bert import ExitConfig, MultiExitBertForSequenceClassification, MultiExitConfig

DEFAULT_TARGET_MODULES = ("query", "value")
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
    if network.pooler is not None:
        names.append(f"{prefix}pooler")
    return names


def add_lora(
    model,
    r: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
) -> PeftModel:
    """Wraps a multi-exit model in a `PeftModel` with rank-`r` LoRA on the encoder layers' `target_modules`
    (`query`, `key`, `value`, `attention.output.dense`, `intermediate.dense`, `output.dense`) and the exit heads,
    skip gates and shared pooler trained in full. `alpha` defaults to `2 r`."""
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"LoRA rank r={r!r} must be a positive integer.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout={dropout} must lie in [0, 1).")
    known = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
    unknown = [name for name in target_modules if name not in known]
    if unknown or not target_modules:
        raise ValueError(f"LoRA target_modules={list(target_modules)} must be a non-empty subset of {list(known)}.")
    # A regex so that only encoder layers match: exit heads have `dense` layers of their own.
    names = "|".join(name.replace(".", r"\.") for name in target_modules)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r if alpha is None else alpha,
        lora_dropout=dropout,
        target_modules=rf".*encoder\.layer\.\d+\.(?:attention\.self\.)?(?:{names})",
        modules_to_save=exit_module_names(model),
    )
    return get_peft_model(model, config)


@dataclass
class _MultiExitSettings:
    """What `load_lora` needs beside the adapter: the base model's multi-exit config and its exit rule."""

    config: MultiExitConfig
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
    config = MultiExitConfig.from_json_file(config_path)
    base = MultiExitBertForSequenceClassification.from_pretrained(
        base_path, config=config, exit_config=ExitConfig.from_pretrained(directory)
    )
    return PeftModel.from_pretrained(base, directory, is_trainable=is_trainable)
