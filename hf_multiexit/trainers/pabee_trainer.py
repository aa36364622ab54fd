"""PABEE training (Zhou et al., "BERT Loses Patience: Fast and Robust Inference with Early Exit", NeurIPS 2020)."""

from __future__ import annotations

from ..losses import weighted_exit_loss
from .base import MultiExitTrainer, register_method
from .pabee_config import PabeeConfig


@register_method("pabee", PabeeConfig)
class PabeeTrainer(MultiExitTrainer):
    """Trains every exit jointly on `L = sum_j j * CE(z_j, y) / sum_j j` (weights from `exit_loss_weights`);
    inference uses patience-based early exit."""

    args: PabeeConfig

    def objective(self, outputs, labels):
        weights = self.args.exit_loss_weights or [float(layer) for layer in self.exit_layers]
        if len(weights) != len(self.exit_layers):
            raise ValueError(
                f"exit_loss_weights has {len(weights)} values but the model has {len(self.exit_layers)} exits "
                f"(layers {self.exit_layers})."
            )
        return {"weighted": weighted_exit_loss(outputs.all_logits, labels, self.problem_type, weights)}
