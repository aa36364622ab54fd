"""Configuration of LeeBERT training (Zhu, "LeeBERT: Learned Early Exit for BERT with cross-level optimization",
ACL 2021)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import MethodPaper, MultiExitTrainingArguments, check_fields

WEIGHT_NORMALIZATIONS = ("softmax", "sigmoid")
WEIGHT_SCHEMES = ("joint", "all")
UNROLL_STEPS = ("auto", "adam", "sgd")
"""How the loss terms get their weights (`LossWeights` in leebert_trainer.py)."""


@dataclass
class LeeBertConfig(MultiExitTrainingArguments):
    """LeeBERT: mutual distillation between all exits with learned loss-term weights, trained by cross-level
    optimisation (CLO). No code was released; the reconstruction and its choices are documented in
    `LeeBertTrainer`. Training defaults are PABEE's (lr 2e-5, batch 32, 5 epochs), whose setup LeeBERT follows."""

    paper: ClassVar[MethodPaper] = MethodPaper(
        "LeeBERT",
        "LeeBERT: Learned Early Exit for BERT with Cross-Level Optimization (Zhu, ACL 2021)",
    )
    exit_head: ClassVar[str] = "linear"
    default_exit_strategy: ClassVar[str] = "patience"
    exit_rule_fields: ClassVar[tuple[str, ...]] = ("patience",)

    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate of the model (PABEE's 2e-5)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device (PABEE's 32)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs (PABEE's 5)."})
    temperature: float = field(default=3.0, metadata={"help": "Distillation temperature T > 0 of every KL term."})
    weight_scheme: str = field(
        default="joint",
        metadata={"help": "'joint': the label terms keep fixed PABEE weights (exit after layer l: l / sum of layers) "
                  "and only the distillation weights are learned, over the pairs whose teacher is deeper than the "
                  "student, summing to distillation_weight; 'all': one learned weight per term, all M^2 normalised "
                  "together, starting at distillation_share (earlier versions)."},
    )
    distillation_weight: float = field(
        default=1.0,
        metadata={"help": "'joint': total weight beta of the distillation terms, beside label weights summing to 1 "
                  "(1: labels and distillation weigh alike in total, as the 'all' scheme starts)."},
    )
    weight_normalization: str = field(
        default="softmax",
        metadata={"help": f"One of {list(WEIGHT_NORMALIZATIONS)}: how the learnable logits a become the loss-term "
                  "weights w: 'softmax' w = softmax(a); 'sigmoid' w = sigmoid(a) / sum(sigmoid(a)). Both keep "
                  "sum(w) = 1, so the weights cannot all collapse to zero."},
    )
    distillation_share: float = field(
        default=0.5,
        metadata={"help": "Initial total weight of the M(M-1) distillation terms, in [0, 1); the M cross-entropy "
                  "terms share the rest. Each group starts uniform."},
    )
    weight_learning_rate: float = field(
        default=1e-2,
        metadata={"help": "Learning rate of the loss-weight logits (their own optimizer group, no weight decay, "
                  "same schedule as the model)."},
    )
    clo_mix: float = field(
        default=0.5,
        metadata={"help": "CLO mixing coefficient lambda in [0, 1]: the weights' gradient is lambda * (single-level "
                  "gradient on D1) + (1 - lambda) * (one-step-unrolled bi-level gradient on D2). 1 = single-level "
                  "only (no split, no unrolling); 0 = bi-level only."},
    )
    bilevel_split: float = field(
        default=0.2,
        metadata={"help": "Fraction of the training set held out as D2 for the bi-level gradient, in (0, 1); the "
                  "model trains on the rest (D1). Unused when clo_mix = 1."},
    )
    unroll_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Step size xi of the virtual step (unroll_step) theta' = theta - xi P grad L_D1 (None: the "
                  "model's current learning rate, as in DARTS)."},
    )
    unroll_step: str = field(
        default="auto",
        metadata={"help": f"One of {list(UNROLL_STEPS)}: the virtual step of cross-level optimisation, at the scale of "
                  "the optimizer's real update. 'adam': theta' = theta - xi P grad L_D1 with Adam's preconditioner "
                  "P = 1 / (sqrt(v_hat) + eps) from the optimizer's state (needs an Adam-family optimizer); 'sgd': "
                  "DARTS' plain step theta - xi grad L_D1 (earlier versions); 'auto': 'adam' for an Adam-family "
                  "optimizer (the default AdamW), 'sgd' otherwise."},
    )
    finite_difference_eps: float = field(
        default=0.01,
        metadata={"help": "DARTS' finite-difference radius: theta +- (eps / ||v||) v, v = grad of the D2 loss at "
                  "theta'."},
    )
    patience: int = field(
        default=3, metadata={"help": "Patience t saved as the model's default exit rule (exit_config.json)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, temperature="> 0", weight_normalization=WEIGHT_NORMALIZATIONS, weight_scheme=WEIGHT_SCHEMES,
                     distillation_weight=">= 0", distillation_share="[0, 1)", weight_learning_rate=">= 0",
                     clo_mix="[0, 1]", bilevel_split="(0, 1)", unroll_learning_rate="positive or None",
                     unroll_step=UNROLL_STEPS, finite_difference_eps="> 0", patience="integer >= 0")
