"""Trainers for multi-exit models, one `<Method>Trainer` + `<Method>Config` per training objective."""

from .base import (
    METHODS,
    MethodPaper,
    MultiExitTrainer,
    MultiExitTrainingArguments,
    get_method,
    per_exit_metrics,
    register_method,
    seed_run,
)
from .callbacks import StageCallback
from .curriculum_config import CurriculumConfig
from .curriculum_trainer import CurriculumTrainer
from .deebert_config import DeeBertConfig
from .deebert_trainer import DeeBertTrainer
from .leebert_config import LeeBertConfig
from .leebert_trainer import LeeBertTrainer
from .pabee_config import PabeeConfig
from .pabee_trainer import PabeeTrainer
from .romebert_config import RomeBertConfig
from .romebert_trainer import RomeBertTrainer
from .smartbert_config import SmartBertConfig
from .smartbert_trainer import SmartBertTrainer

__all__ = [
    "METHODS",
    "MethodPaper",
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
    "StageCallback",
    "get_method",
    "per_exit_metrics",
    "register_method",
    "seed_run",
]
