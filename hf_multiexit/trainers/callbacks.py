"""Callbacks shared by the multi-exit trainers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState


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


class ZeroGradAfterStep(TrainerCallback):
    """Clears the gradients of parameters that a trainer owns outside the model (Trainer zeroes only the model's)
    after every optimizer step, also one the fp16 GradScaler skipped for an overflow: an optimizer step hook would
    not run then, and the overflowed gradient would poison every later step. `parameters` is called each time, so
    parameters rebuilt for a new model (`model_init`) are the ones cleared."""

    def __init__(self, parameters: Callable[[], Iterable[torch.nn.Parameter]]):
        self.parameters = parameters

    def on_optimizer_step(self, args, state, control, **kwargs):
        for parameter in self.parameters():
            parameter.grad = None
