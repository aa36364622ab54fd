"""hf-multiexit: multi-exit BERT for HuggingFace Transformers.

Importing the package registers `MultiExitConfig` (model_type ``"multiexit_bert"``) with `AutoConfig` and the models
with `AutoModel` and `AutoModelForSequenceClassification`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .models.multiexit_bert import (
    EXIT_HEAD_STYLES,
    EXIT_HEADS,
    EXIT_STRATEGIES,
    ExitConfig,
    ExitStrategy,
    MultiExitBertForSequenceClassification,
    MultiExitBertModel,
    MultiExitConfig,
    MultiExitModelOutput,
    MultiExitSequenceClassifierOutput,
    register_exit_strategy,
)

from .hub import PushError, build_model_card, push_model, save_model_card
from .models.multiexit_bert.modeling_multiexit_bert import MultiExitTextClassificationPipeline
from .trainers import (
    CurriculumConfig,
    CurriculumTrainer,
    DeeBertConfig,
    DeeBertTrainer,
    LeeBertConfig,
    LeeBertTrainer,
    MultiExitTrainer,
    MultiExitTrainingArguments,
    PabeeConfig,
    PabeeTrainer,
    RomeBertConfig,
    RomeBertTrainer,
    SmartBertConfig,
    SmartBertTrainer,
)

__version__ = "0.1.0"

AutoConfig.register(MultiExitConfig.model_type, MultiExitConfig, exist_ok=True)
AutoModel.register(MultiExitConfig, MultiExitBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(MultiExitConfig, MultiExitBertForSequenceClassification, exist_ok=True)

__all__ = [
    "CurriculumConfig",
    "CurriculumTrainer",
    "DeeBertConfig",
    "DeeBertTrainer",
    "LeeBertConfig",
    "LeeBertTrainer",
    "MultiExitTrainer",
    "MultiExitTrainingArguments",
    "PabeeConfig",
    "PabeeTrainer",
    "RomeBertConfig",
    "RomeBertTrainer",
    "SmartBertConfig",
    "SmartBertTrainer",
    "EXIT_HEADS",
    "EXIT_HEAD_STYLES",
    "EXIT_STRATEGIES",
    "ExitConfig",
    "ExitStrategy",
    "MultiExitBertForSequenceClassification",
    "MultiExitBertModel",
    "MultiExitConfig",
    "MultiExitModelOutput",
    "MultiExitSequenceClassifierOutput",
    "register_exit_strategy",
    "MultiExitTextClassificationPipeline",
    "PushError",
    "build_model_card",
    "push_model",
    "save_model_card",
]
