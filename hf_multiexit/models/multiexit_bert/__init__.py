from .backbones import BACKBONE_ADAPTERS, BackboneAdapter, get_backbone_adapter, register_backbone
from .configuration_multiexit_bert import EXIT_HEAD_STYLES, MultiExitConfig, MultiExitModelConfig
from .exit_configuration import EXIT_CONFIG_NAME, ExitConfig
from .exit_strategies import EXIT_STRATEGIES, ExitStrategy, build_exit_strategy, register_exit_strategy
from .modeling_multiexit_bert import (
    AUTO_FAMILIES,
    EXIT_HEADS,
    MultiExitBertForSequenceClassification,
    MultiExitBertModel,
    MultiExitModel,
    MultiExitModelForSequenceClassification,
    MultiExitModelOutput,
    MultiExitPreTrainedModel,
    MultiExitSequenceClassifierOutput,
)
