"""hf-multiexit: multi-exit encoders for HuggingFace Transformers.

Importing the package registers `MultiExitModelConfig` (model_type ``"multiexit"``, any supported backbone) and
`MultiExitConfig` (model_type ``"multiexit_bert"``, BERT checkpoints of earlier versions) with `AutoConfig`, and their
models with `AutoModel` and `AutoModelForSequenceClassification`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .models.multiexit_bert import (
    AUTO_FAMILIES,
    BACKBONE_ADAPTERS,
    EXIT_HEAD_STYLES,
    EXIT_HEADS,
    EXIT_STRATEGIES,
    ExitConfig,
    ExitStrategy,
    MultiExitBertForSequenceClassification,
    MultiExitBertModel,
    MultiExitConfig,
    MultiExitModel,
    MultiExitModelConfig,
    MultiExitModelForSequenceClassification,
    MultiExitModelOutput,
    MultiExitSequenceClassifierOutput,
    register_backbone,
    register_exit_strategy,
)

from .hub import PushError, build_model_card, push_model, save_model_card
from .models.multiexit_bert.modeling_multiexit_bert import MultiExitTextClassificationPipeline
from . import trainers
from .trainers import *  # noqa: F403  (every public trainer name; `trainers.__all__` is the one list of them)

__version__ = "0.1.0"

for _config_class, (_base_class, _classifier_class) in AUTO_FAMILIES.items():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _base_class, exist_ok=True)
    AutoModelForSequenceClassification.register(_config_class, _classifier_class, exist_ok=True)

__all__ = [
    *trainers.__all__,
    "BACKBONE_ADAPTERS",
    "EXIT_HEADS",
    "EXIT_HEAD_STYLES",
    "EXIT_STRATEGIES",
    "ExitConfig",
    "ExitStrategy",
    "MultiExitBertForSequenceClassification",
    "MultiExitBertModel",
    "MultiExitConfig",
    "MultiExitModel",
    "MultiExitModelConfig",
    "MultiExitModelForSequenceClassification",
    "MultiExitModelOutput",
    "MultiExitSequenceClassifierOutput",
    "register_backbone",
    "register_exit_strategy",
    "MultiExitTextClassificationPipeline",
    "PushError",
    "build_model_card",
    "push_model",
    "save_model_card",
]
