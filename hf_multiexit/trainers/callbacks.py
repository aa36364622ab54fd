"""Callbacks shared by the multi-exit trainers."""

from __future__ import annotations

import json
import os
import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


class StageCallback(TrainerCallback, ExportableState):
    """Records which stage of a multi-stage method (DeeBERT, SmartBERT) a checkpoint belongs to.

    Its state is written into every checkpoint's `trainer_state.json` (`stateful_callbacks`), which is how
    `MultiExitTrainer.train(resume_from_checkpoint=...)` knows which stage to continue.
    """

    def __init__(self, stage_index: int = 0, stage_name: str = ""):
        self.stage_index = stage_index
        self.stage_name = stage_name

    def state(self) -> dict:
        return {"args": {"stage_index": self.stage_index, "stage_name": self.stage_name}, "attributes": {}}

    @classmethod
    def stage_of_checkpoint(cls, checkpoint: str) -> int | None:
        """The stage index stored in `checkpoint/trainer_state.json`, or None when it has none."""
        path = os.path.join(checkpoint, "trainer_state.json")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            stored = json.load(f).get("stateful_callbacks", {}).get(cls.__name__)
        if isinstance(stored, list):
            stored = stored[0] if stored else None
        return None if stored is None else int(stored["args"]["stage_index"])


class TrainerModulesCallback(TrainerCallback):
    """What Trainer does for the model's parameters after backward, done for a `MultiExitTrainer`'s trainer-owned
    modules (`add_trainer_module`) on public hooks: clipping before the step, clearing the gradients after it, and
    storing their state in every checkpoint."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # Trainer has just clipped the model's gradients, unscaling every gradient in the optimizer first under fp16
        # (these included); the modules are clipped to the same norm on their own, as separate networks.
        if args.max_grad_norm is not None and args.max_grad_norm > 0:
            modules = self.trainer.active_trainer_modules().values()
            params = [p for module in modules for p in module.parameters() if p.grad is not None]
            if params:
                torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)

    def on_optimizer_step(self, args, state, control, **kwargs):
        # Trainer zeroes only the model's gradients. This hook also runs after a step the fp16 GradScaler skipped for
        # an overflow (an optimizer step hook would not), whose gradient would otherwise poison every later step.
        for parameter in self.trainer.trainer_modules.parameters():
            parameter.grad = None

    def on_save(self, args, state, control, **kwargs):
        if args.should_save and len(self.trainer.trainer_modules):
            self.trainer.save_trainer_modules(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))
