"""Toy training runs for the tests that need a process of their own (several processes, a SIGKILL).

    python tests/toy_training.py ddp OUT BATCH
        trains every case of `DDP_CASES` with per-device batch BATCH and saves the final weights as `OUT/<case>.pt`
        (run by `accelerate launch --cpu --num_processes 2` in test_distributed.py);
    python tests/toy_training.py kill CASE OUT STAGE STEP [during-save]
        trains `CASE` with a checkpoint every `SAVE_STEPS` steps and kills its own process with SIGKILL in stage
        STAGE (1-based) at global step STEP: at the end of that step, or in the middle of writing its checkpoint
        (test_resume.py);
    python tests/toy_training.py kill-saving OUT {writing,first,last}
        saves a model in OUT, then kills itself while saving another one over it (test_resume.py).

The cases are the toy task and tiny model of test_trainers.py, with plain SGD so that the weights follow the
gradients exactly (Adam's first steps turn float-rounding noise into full-size differences).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from hf_multiexit.io import atomic_save_pretrained
from hf_multiexit.lora import add_lora
from hf_multiexit.trainers import DeeBertTrainer, get_method
from test_trainers import ToyTask, toy_args, toy_model

TRAIN_SIZE = 32
EVAL_SIZE = 16
SAVE_STEPS = 3

class StageOneFreezesExits(DeeBertTrainer):
    """DeeBERT whose first stage also freezes the intermediate exits (as SmartBERT's does): its second stage trains
    parameters that required no gradient when the first stage wrapped the model in DDP."""

    def stage_trainable(self, index, model):
        if index > 0:
            return super().stage_trainable(index, model)
        exits = {id(p) for p in self.intermediate_exit_parameters(model)}
        return [p for p in model.parameters() if id(p) not in exits]


# case name -> (method, method options). Variants of a method are named `<method>-<variant>`.
CASES: dict[str, tuple[str, dict]] = {
    "pabee": ("pabee", {}),
    "romebert": ("romebert", {"gradient_regularization": "gp"}),
    "romebert-ge": ("romebert", {"gradient_regularization": "ge"}),
    "deebert": ("deebert", {}),
    "deebert-frozen-exits": ("deebert", {}),
    "leebert": ("leebert", {}),  # cross-level optimisation (clo_mix 0.5): D1/D2 split, unrolled bi-level gradient
    # For the DDP comparison: D1 and D2 of 24 and 8 samples, whole batches of 8 (DDP averages a smaller last batch
    # as two unequal halves), and loss weights that move fast enough for the D2 batch to show in the model's weights.
    "leebert-ddp": ("leebert", {"bilevel_split": 0.25, "weight_learning_rate": 5.0}),
    # The same with two micro-batches per step (DDP averages the gradients at the second only): D1 and D2 of 16.
    "leebert-ddp-accumulation": (
        "leebert", {"bilevel_split": 0.5, "weight_learning_rate": 5.0, "gradient_accumulation_steps": 2}
    ),
    "leebert-single-level": ("leebert", {"clo_mix": 1.0}),
    "curriculum": ("curriculum", {}),  # a warm-up stage, then the loss-scored curriculum
    "smartbert": ("smartbert", {"stage2_num_train_epochs": 2}),
}
# Trainers other than the method's own.
TRAINERS = {"deebert-frozen-exits": StageOneFreezesExits}
# Model options a method needs on the tiny model.
MODEL_OPTIONS: dict[str, dict] = {"smartbert": {"use_skip_gates": True, "exit_head": "attention"}}

DDP_CASES = (
    "pabee", "romebert", "romebert-ge", "deebert", "deebert-frozen-exits", "leebert-ddp", "leebert-ddp-accumulation",
    "leebert-single-level", "curriculum", "smartbert",
)
"""RomeBERT's projection (`gp`) acts on the all-reduced gradient, `ge` in the forward pass; DeeBERT and SmartBERT
switch stage (`deebert-frozen-exits`: to parameters the first stage froze, as SmartBERT's does); LeeBERT's learned
loss weights are a trainer module with its own DDP wrapper, and its cross-level optimisation shares out each D2 batch and
averages the D2 gradient over the processes; the curriculum shares out each optimizer step's draw."""


def build_trainer(case: str, output_dir: str | Path, batch: int = 8, lora: dict | None = None, **overrides):
    """The method's trainer on the toy task: SGD, no dropout, fixed seeds; `lora`: `add_lora` options."""
    method, options = CASES[case]
    config_class, trainer_class = get_method(method)
    trainer_class = TRAINERS.get(case, trainer_class)
    values = dict(
        output_dir=str(output_dir), per_device_train_batch_size=batch, optim="sgd", learning_rate=0.5,
        num_train_epochs=2, logging_steps=4,
    )
    values.update(options, **overrides)
    args = toy_args(config_class, Path(output_dir), **values)
    model = toy_model(**MODEL_OPTIONS.get(method, {}))
    if lora is not None:
        model = add_lora(model, **lora)
    return trainer_class(model=model, args=args, train_dataset=ToyTask(TRAIN_SIZE), eval_dataset=ToyTask(EVAL_SIZE, seed=1))


def final_weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def train_ddp_cases(output_dir: Path, batch: int) -> None:
    for case in DDP_CASES:
        trainer = build_trainer(case, output_dir / case, batch=batch)
        trainer.train()
        if trainer.is_world_process_zero():
            weights = final_weights(trainer.accelerator.unwrap_model(trainer.model))
            torch.save({"world_size": trainer.args.world_size, "weights": weights}, output_dir / f"{case}.pt")


def stage_of(args) -> int:
    """1-based stage of a running trainer: multi-stage trainers train in `output_dir/stage-<k>`."""
    name = os.path.basename(os.path.normpath(args.output_dir))
    return int(name.split("-")[1]) if name.startswith("stage-") else 1


class KillAtStep(TrainerCallback):
    """SIGKILLs the process at the end of global step `step` of stage `stage`: no handler, no cleanup runs."""

    def __init__(self, stage: int, step: int):
        self.stage, self.step = stage, step

    def on_step_end(self, args, state, control, **kwargs):
        if stage_of(args) == self.stage and state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def train_until_killed(case: str, output_dir: Path, stage: int, step: int, during_save: bool) -> None:
    trainer = build_trainer(case, output_dir, save_strategy="steps", save_steps=SAVE_STEPS)
    if during_save:
        # Killed after the checkpoint's weights and optimizer state are written, before its RNG and trainer state.
        save_rng_state = trainer._save_rng_state

        def kill_while_saving(checkpoint_dir):
            if stage_of(trainer.args) == stage and trainer.state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)
            save_rng_state(checkpoint_dir)

        trainer._save_rng_state = kill_while_saving
    else:
        trainer.add_callback(KillAtStep(stage, step))
    trainer.train()


# Where `save_until_killed` dies: `(renamed file, whether it is renamed into the model folder) -> die?`
SAVE_KILL_POINTS = {
    "writing": lambda target, into_folder: not into_folder,  # while the temporary folder is written
    "first": lambda target, into_folder: into_folder,  # before the first rename into the model folder
    "last": lambda target, into_folder: os.path.basename(target) == "model.safetensors",  # before the last one
}


def save_until_killed(output_dir: Path, when: str) -> None:
    """Saves one model with `atomic_save_pretrained`, then a second one over it and SIGKILLs the process at
    `SAVE_KILL_POINTS[when]`."""
    atomic_save_pretrained(output_dir, toy_model(seed=1))
    replace, dies = os.replace, SAVE_KILL_POINTS[when]

    def replace_or_die(source, target):
        if dies(target, os.path.dirname(os.path.abspath(target)) == os.path.abspath(output_dir)):
            os.kill(os.getpid(), signal.SIGKILL)
        replace(source, target)

    os.replace = replace_or_die
    atomic_save_pretrained(output_dir, toy_model(seed=2))


def main(argv: list[str]) -> None:
    command, *rest = argv
    if command == "ddp":
        output_dir, batch = rest
        train_ddp_cases(Path(output_dir), int(batch))
    elif command == "kill":
        case, output_dir, stage, step, *mode = rest
        train_until_killed(case, Path(output_dir), int(stage), int(step), during_save=mode == ["during-save"])
    elif command == "kill-saving":
        output_dir, when = rest
        save_until_killed(Path(output_dir), when)
    else:
        raise ValueError(f"Unknown command {command!r}; valid commands are ['ddp', 'kill', 'kill-saving'].")


if __name__ == "__main__":
    main(sys.argv[1:])
