"""Configuration of SmartBERT training (Hu et al., "SmartBERT: A Promotion of Dynamic Early Exiting Mechanism for
Accelerating BERT Inference", IJCAI 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..models.multiexit_bert import ExitConfig
from .base import MethodPaper, MultiExitTrainingArguments, check_fields


@dataclass
class SmartBertConfig(MultiExitTrainingArguments):
    """SmartBERT: stage 1 trains backbone, skip gates and final classifier (soft gates first, then hard ones) with a
    skipping reward and a token-level cross-layer contrastive loss; stage 2 freezes them and trains the intermediate
    exits with a contrastive loss between consecutive exits. Defaults are the released script's (lr 2e-5, batch 16,
    weight decay 0.01, 5 + 4 epochs, lambda 0.04, eta1 0.01, tau1 0.5, eta2 0.05, tau2 0.55, 3 of 5 epochs soft)."""

    paper: ClassVar[MethodPaper] = MethodPaper(
        "SmartBERT",
        "SmartBERT: A Promotion of Dynamic Early Exiting Mechanism for Accelerating BERT Inference (Hu et al., IJCAI 2023)",
    )
    exit_head: ClassVar[str] = "attention"
    model_options: ClassVar[dict] = {"use_skip_gates": True}

    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate of stage 1 (script: 2e-5)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size per device (script: 16)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (script: 0.01)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs of stage 1 (script: 5)."})
    stage2_num_train_epochs: float = field(default=4.0, metadata={"help": "Epochs of stage 2 (script: 4)."})
    stage2_learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate of stage 2 (None: the same as stage 1, as in the script)."}
    )
    soft_gate_fraction: float = field(
        default=0.6,
        metadata={"help": "Stage 1 weighs layers with the soft gate probability g for this fraction of its epochs, then "
                  "with the straight-through hard weight (script: the first 3 of 5 epochs). 0: hard from the start."},
    )
    min_hard_gate_epochs: float = field(
        default=1.0,
        metadata={"help": "Shorten the soft phase so that stage 1 ends with at least this many epochs of hard gates "
                  "(where it has more epochs than this), so the final classifier sees every training sample under "
                  "the skip pattern it meets at inference at least once: the released 2 of 5 epochs hold on any "
                  "budget, also on a 2-epoch one (where 0.6 soft leaves 0.8 hard). 0: soft_gate_fraction alone "
                  "(earlier versions)."},
    )
    skip_lambda: float = field(
        default=0.04, metadata={"help": "lambda of the skipping reward lambda / sum_i mean(g_i) (script: 0.04)."}
    )
    skip_reward_reference_layers: int | None = field(
        default=12,
        metadata={"help": "Scale lambda by (n / this)^2 on a model with n gated layers, so each gate is pulled as hard "
                  "as in the released 12-layer BERT-base setting at any depth (the released term pulls a gate with "
                  "-lambda / (sum_i g_i)^2, 4x harder on 6 layers than on 12). None: the released term unscaled."},
    )
    gate_learning_rate: float | None = field(
        default=2e-5,
        metadata={"help": "Learning rate of the skip gates (script: 2e-5, the rate it trains everything at, whatever "
                  "--learning_rate is). None: the backbone's --learning_rate."},
    )
    stage1_contrastive_weight: float = field(
        default=0.01, metadata={"help": "eta1 in [0, 1): weight of the cross-layer token InfoNCE in stage 1 (script: 0.01)."}
    )
    stage1_temperature: float = field(default=0.5, metadata={"help": "tau1 > 0 of the stage-1 InfoNCE (script: 0.5)."})
    stage2_contrastive_weight: float = field(
        default=0.05, metadata={"help": "eta2 in [0, 1): weight of the contrastive loss between exits in stage 2 "
                                "(script: 0.05)."}
    )
    stage2_temperature: float = field(default=0.55, metadata={"help": "tau2 > 0 of the stage-2 InfoNCE (script: 0.55)."})
    projection_size: int = field(
        default=128, metadata={"help": "Width of the training-only projection MLPs of the contrastive losses (script: 128)."}
    )
    entropy_threshold: float = field(
        default=0.3,
        metadata={"help": "Entropy threshold S of the saved exit rule (exit_config.json: strategy 'skip', with the "
                  "model's gate_threshold r)."},
    )

    selection_split: float | None = field(
        default=None,
        metadata={"help": "Share of the training set held out (seeded by --seed) on which each stage keeps its best "
                  "epoch: stage 1 by the final exit's primary metric, stage 2 by the intermediate exits' mean (the "
                  "released code keeps the best epoch on the dev set, which this never touches). Checkpoints each "
                  "epoch, as Trainer's load_best_model_at_end does. None: every stage ends with its last epoch."},
    )

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, selection_split="(0, 1) or None", stage2_num_train_epochs="positive",
                     stage2_learning_rate="positive or None", stage1_contrastive_weight="[0, 1)",
                     stage2_contrastive_weight="[0, 1)", stage1_temperature="> 0", stage2_temperature="> 0",
                     soft_gate_fraction="[0, 1]", min_hard_gate_epochs=">= 0",
                     skip_reward_reference_layers=">= 1 or None", gate_learning_rate="positive or None",
                     skip_lambda=">= 0", projection_size="positive integer", entropy_threshold=">= 0")

    def default_exit_config(self, model_config) -> ExitConfig:
        """Skip gates at the trained model's `gate_threshold`, then entropy exit (the released inference)."""
        return ExitConfig(
            exit_strategy="skip", entropy_threshold=self.entropy_threshold, gate_threshold=model_config.gate_threshold
        )
