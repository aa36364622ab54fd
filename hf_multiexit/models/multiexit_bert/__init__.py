from .configuration_multiexit_bert import EXIT_HEAD_STYLES, MultiExitConfig
from .exit_configuration import EXIT_CONFIG_NAME, ExitConfig
from .exit_strategies import EXIT_STRATEGIES, ExitStrategy, build_exit_strategy, register_exit_strategy
from .modeling_multiexit_bert import (
    EXIT_HEADS,
    MultiExitBertForSequenceClassification,
    MultiExitBertModel,
    MultiExitModelOutput,
    MultiExitPreTrainedModel,
    MultiExitSequenceClassifierOutput,
)
