"""DeeBERT training (Xin et al., "DeeBERT: Dynamic Early Exiting for Accelerating BERT Inference", ACL 2020)."""

from __future__ import annotations

from ..losses import task_loss
from .base import MultiExitTrainer, register_method
from .deebert_config import DeeBertConfig


@register_method("deebert", DeeBertConfig)
class DeeBertTrainer(MultiExitTrainer):
    """Two stages in one `train()` call, each with a fresh optimizer and schedule:

    1. `"backbone"`: ordinary fine-tuning, `L = CE(z_L, y)`.
    2. `"exits"`: embeddings, encoder, pooler and final classifier frozen; `L = sum_{i<L} CE(z_i, y)` trains the
       intermediate exits only.

    Freezing: the frozen parameters get `requires_grad=False` (so no gradient is computed into the backbone, which
    makes stage 2 cheaper than the released code, which leaves them out of the optimizer while gradients still
    flow); dropout stays on in the backbone as in the released code. The frozen weights stay bit-identical.
    Inference uses entropy exit. With `skip_first_stage` only stage 2 runs: adding exits to a fine-tuned classifier,
    whose logits at full depth stay those of the checkpoint.
    """

    args: DeeBertConfig
    stages = ("backbone", "exits")

    def objective(self, outputs, labels):
        if self.stage == "backbone":
            return {"final": task_loss(outputs.all_logits[-1], labels, self.problem_type)}
        return {"exits": sum(task_loss(z, labels, self.problem_type) for z in outputs.all_logits[:-1])}

    def stage_arguments(self, index):
        if index == 0:
            return {}
        overrides = {
            "num_train_epochs": self.args.stage2_num_train_epochs,
            "learning_rate": self.args.stage2_learning_rate,
        }
        return {name: value for name, value in overrides.items() if value is not None}

    def stage_trainable(self, index, model):
        return None if index == 0 else self.intermediate_exit_parameters(model)

    def first_stage(self) -> int:
        return 1 if self.args.skip_first_stage else 0
