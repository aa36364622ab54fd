"""Model families of hf-multiexit (flat folders that travel to the Hub)."""

from __future__ import annotations

from transformers import BertConfig, PreTrainedConfig

from .multiexit_bert import AUTO_FAMILIES, MultiExitConfig, MultiExitModelConfig


def multiexit_config_class(pretrained_model_name_or_path, **hub_kwargs) -> type[PreTrainedConfig]:
    """The multi-exit config class that loads a checkpoint, from its `config.json`'s `model_type`: a multi-exit
    checkpoint's own; `MultiExitConfig` for a plain BERT, so that models trained from BERT keep the flat
    `multiexit_bert` format that earlier versions (and the published checkpoints) use; `MultiExitModelConfig` for
    every other backbone (which raises `ValueError` for unsupported types). `AUTO_FAMILIES[cls]` gives its models."""
    model_type = PreTrainedConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)[0].get("model_type")
    for config_class in AUTO_FAMILIES:
        if model_type == config_class.model_type:
            return config_class
    return MultiExitConfig if model_type == BertConfig.model_type else MultiExitModelConfig


__all__ = ["multiexit_config_class"]
