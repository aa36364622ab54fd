"""Shared base of the multi-exit trainers: objective from all exits, per-exit logging and metrics, stages.

A method subclasses `MultiExitTrainer`, implements `objective` (named per-sample loss terms computed from every
exit's logits) and registers itself with `register_method`, which is how `hf-multiexit train --method` finds it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Subset
from transformers import EvalPrediction, Trainer, TrainingArguments, enable_full_determinism, set_seed
from transformers.utils import logging

from ..hub import push_model
from ..io import remove_stale_saves
from ..losses import task_loss
from ..metrics import logits_metrics
from ..models.multiexit_bert import ExitConfig
from ..models.multiexit_bert.exit_strategies import EXIT_STRATEGIES, REGRESSION, resolve_problem_type
from .callbacks import StageCallback, TrainerModulesCallback

logger = logging.get_logger(__name__)

METHODS: dict[str, tuple[type[MultiExitTrainingArguments], type[MultiExitTrainer]]] = {}


@dataclass(frozen=True)
class MethodPaper:
    """A training method's paper, for the model card: display name, citation and link (None where the paper has no
    open-access page)."""

    name: str
    title: str
    url: str | None = None
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
TRAINER_MODULES_NAME = "trainer_modules.safetensors"
"""The file in each checkpoint with the state of the trainer-owned modules (`MultiExitTrainer.add_trainer_module`)."""


def register_method(name: str, config_class: type[MultiExitTrainingArguments]):
    """Class decorator registering a trainer and its config under a method name (`--method name`)."""

    def decorator(trainer_class: type[MultiExitTrainer]) -> type[MultiExitTrainer]:
        if name in METHODS:
            raise ValueError(f"A training method named {name!r} is already registered.")
        trainer_class.method = name
        METHODS[name] = (config_class, trainer_class)
        return trainer_class

    return decorator


def last_complete_checkpoint(folder: str) -> str | None:
    """The newest `checkpoint-<step>` folder in `folder` that was written to the end, or None.

    Trainer writes a checkpoint's `trainer_state.json` last, so a checkpoint without it was cut off by a crash
    while saving; `get_last_checkpoint` would return it and resuming from it fails or starts from the wrong state.
    """
    if not os.path.isdir(folder):
        return None
    steps = {}
    for name in os.listdir(folder):
        match = _CHECKPOINT_NAME.fullmatch(name)
        if match and os.path.isfile(os.path.join(folder, name, "trainer_state.json")):
            steps[int(match.group(1))] = os.path.join(folder, name)
    return steps[max(steps)] if steps else None


def get_method(name: str) -> tuple[type[MultiExitTrainingArguments], type[MultiExitTrainer]]:
    """`(config class, trainer class)` of a registered method; unknown names raise `ValueError` with the choices."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown training method {name!r}; valid methods are {sorted(METHODS)}.") from None


_INTERVAL = re.compile(r"([\[(])(\S+), (\S+)([\])])")
_BOUND = re.compile(r"(integer )?(>=?) (\S+)")


def check_fields(args: Any, **rules: str | Collection) -> None:
    """Raises `ValueError` naming the first field of `args` that breaks its rule, the value and what it must be.

    A rule is a collection of the valid choices (a tuple, a registry dict), or a string: an interval (`"[0, 1)"`,
    `"(0, 1]"`), a bound (`"> 0"`, `">= 1"`), an integer bound (`"integer >= 0"`), `"positive"` (a number > 0) or
    `"positive integer"`; with `" or None"` after it, None passes too. One function for every method's config, so
    that the same constraint is worded the same everywhere (a field's metadata cannot carry it: `HfArgumentParser`
    hands all of the metadata to `argparse.add_argument`)."""
    for name, rule in rules.items():
        value = getattr(args, name)
        if not isinstance(rule, str):
            if value not in rule:
                raise ValueError(f"{name}={value!r} is not one of {list(rule)}.")
            continue
        condition = rule.removesuffix(" or None")
        optional = condition != rule
        if value is None and optional:
            continue
        is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        is_integer = is_number and isinstance(value, numbers.Integral)
        if interval := _INTERVAL.fullmatch(condition):
            opening, low, high, closing = interval.groups()
            low, high = float(low), float(high)
            valid = is_number and (low <= value if opening == "[" else low < value) and (
                value <= high if closing == "]" else value < high)
            must = f"is out of range: it must lie in {condition}" + (", or be None" if optional else "")
        else:
            if condition == "positive":
                valid, must = is_number and value > 0, "must be a positive number"
            elif condition == "positive integer":
                valid, must = is_integer and value > 0, "must be a positive integer"
            else:
                integer, operator, bound = _BOUND.fullmatch(condition).groups()
                valid = (is_integer if integer else is_number) and (
                    value >= float(bound) if operator == ">=" else value > float(bound))
                must = f"must be {'an integer ' if integer else ''}{operator} {bound}"
            must += " or None" if optional else ""
        if not valid:
            raise ValueError(f"{name}={value!r} {must}.")


@dataclass
class MultiExitTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus what every multi-exit method shares.

    A method's config class also carries what the rest of the package needs to know about the method, so that a method
    is one config file, one trainer file and one `register_method`: its `paper` (model card), its exit-head style
    `exit_head` and `model_options` (the model `hf-multiexit train` builds for it), and `default_exit_config` (the
    exit rule saved with the trained model)."""

    paper: ClassVar[MethodPaper | None] = None
    exit_head: ClassVar[str] = "pooler"
    """The paper's exit-head style (`EXIT_HEAD_STYLES`); a backbone without a pooler gets its own default where this
    style needs one."""
    model_options: ClassVar[dict[str, Any]] = {}
    """Model config fields the method needs (SmartBERT: its skip gates)."""
    default_exit_strategy: ClassVar[str] = "none"
    exit_rule_fields: ClassVar[tuple[str, ...]] = ()
    """The saved rule's strategy and the config fields that set it (`patience`, `entropy_threshold`), which carry the
    same names in `ExitConfig`."""

    task: str | None = field(
        default=None,
        metadata={"help": "GLUE task name (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) for the eval metrics; "
                  "None: accuracy for classification, Pearson/Spearman for regression."},
    )
    exit_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the intermediate exit heads (None: learning_rate). The shallow exits of a "
                  "pretrained backbone learn slowly at the backbone's rate; FastBERT trains its students at 10x."},
    )

    init_regression_bias: bool = field(
        default=True,
        metadata={"help": "Regression only: when training starts (not when it resumes), set the output bias of every "
                  "exit to the mean training label. With labels far from 0 (STS-B: 0 to 5) the first, large squared-"
                  "error gradients otherwise push exits that share a pooler (PABEE, LeeBERT) or an attention head "
                  "to a near-constant output before their biases catch up (PABEE on STS-B: 0.22 Pearson without, "
                  "0.85 with)."},
    )

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, exit_learning_rate="positive or None")

    def default_exit_config(self, model_config) -> ExitConfig:
        """The exit rule saved with a model trained by this method (`model_config`: the trained model's config):
        `default_exit_strategy` set by the `exit_rule_fields` of this config (none, i.e. full depth, for trainers
        used without a method's config)."""
        return ExitConfig(exit_strategy=self.default_exit_strategy, **{name: getattr(self, name) for name in self.exit_rule_fields})


def seed_run(args: TrainingArguments) -> None:
    """Seeds Python, NumPy and torch from `args.seed` as Trainer does: `enable_full_determinism` (deterministic
    algorithms too) with `full_determinism`, else `set_seed`. Call it before building a model that is not fully
    pretrained (new exit heads, gates, LoRA adapters), as Trainer seeds only in its `__init__`, after the model
    passed to it was built."""
    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)


def per_exit_metrics(
    task: str | None, problem_type: str, exit_layers: list[int], metric: str | None = None
) -> Callable[[EvalPrediction], dict]:
    """`compute_metrics` for `Trainer`: predictions are `(N, E, C)` logits of all exits; returns the final exit's
    metrics under their GLUE names and every exit's as `exit_<layer>_<metric>` (`metric`: see `logits_metrics`)."""
    def compute(eval_prediction: EvalPrediction) -> dict[str, float]:
        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        results = {}
        for index, layer in enumerate(exit_layers):
            for name, value in logits_metrics(task, problem_type, logits[:, index], labels, metric).items():
                results[f"exit_{layer}_{name}"] = value
        results.update(logits_metrics(task, problem_type, logits[:, -1], labels, metric))
        return results

    return compute


def split_dataset(dataset, held_out: float, seed: int, purpose: str = "Cross-level optimisation") -> tuple[Any, Any]:
    """`(kept, held)`: a seeded random `held_out` fraction of `dataset` held apart (at least one example each side),
    both in dataset order; `purpose` names the caller in the error for a dataset too small to split."""
    size = len(dataset)
    if size < 2:
        raise ValueError(f"{purpose} splits the training set in two; it has {size} example(s).")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    held = min(max(1, round(held_out * size)), size - 1)
    d2, d1 = sorted(order[:held]), sorted(order[held:])
    if hasattr(dataset, "select"):  # datasets.Dataset keeps its type (and column handling in Trainer)
        return dataset.select(d1), dataset.select(d2)
    return Subset(dataset, d1), Subset(dataset, d2)


def label_mean(dataset) -> torch.Tensor:
    """Mean of a training set's `label` (or `labels`) values: `()` for one target, `(num_labels,)` for several."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:  # a map-style torch Dataset of feature dicts
        examples = (dataset[index] for index in range(len(dataset)))
        values = [example["labels"] if "labels" in example else example["label"] for example in examples]
    elif "label" in columns or "labels" in columns:
        values = dataset["label" if "label" in columns else "labels"]
    else:
        raise ValueError(f"The training set has no 'label' or 'labels' column; its columns are {columns}.")
    return torch.as_tensor(np.asarray(list(values), dtype=np.float64).mean(0))


def set_exit_biases(model, value: torch.Tensor) -> None:
    """Sets the output bias of every exit head of a multi-exit model (`value` broadcast over its outputs)."""
    with torch.no_grad():
        for head in model.base_model.exits:
            head.classifier.bias.copy_(value.to(head.classifier.bias.dtype).expand_as(head.classifier.bias))


def move_to_own_groups(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], lr: float) -> None:
    """Moves `params` out of the optimizer's parameter groups into groups of their own at learning rate `lr`, each
    keeping the rest of the group it came from (weight decay). Call before the learning-rate schedule is built."""
    ids = {id(p) for p in params}
    groups = []
    for group in optimizer.param_groups:
        moved = [p for p in group["params"] if id(p) in ids]
        kept = [p for p in group["params"] if id(p) not in ids]
        groups += [{**group, "params": kept}] if kept else []
        groups += [{**group, "params": moved, "lr": lr}] if moved else []
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)


class MultiExitTrainer(Trainer):
    """`transformers.Trainer` for multi-exit models.

    - The training loss is the method's `objective`: named per-sample terms computed from every exit's logits,
      summed and normalised by the number of samples in the whole accumulated batch (`num_items_in_batch`), so that
      `gradient_accumulation_steps=k` with batch `b` matches one batch of `k * b`.
    - Logs each exit's task loss (`exit_<layer>_loss`) next to the training loss, and evaluates every exit
      (`eval_exit_<layer>_<metric>`, plus the final exit's `eval_<metric>`).
    - Multi-stage methods list their `stages`; `train()` runs them all, each with its checkpoints in
      `output_dir/stage-<k>`, and resumes a checkpoint in the stage it was taken in. Each stage gets a fresh optimizer
      and schedule, unless the method sets `shared_schedule`: then the stages are one run, with one optimizer and one
      learning-rate schedule over all their steps.
    - Saves the model with the method's exit rule (`default_exit_config`) unless the model already has one.
    - For regression, starts every exit's output bias at the mean training label (`init_regression_bias`).
    - Takes the model or Trainer's `model_init` (seeded, built once per `train()`, `setup_model` run on it).
    - Under fp16 mixed precision, a method that mixes gradients of its own into `p.grad` brings them to the
      GradScaler's scale (`gradient_scale`).
    """

    method: ClassVar[str] = ""
    stages: ClassVar[tuple[str, ...]] = ("train",)
    shared_schedule: ClassVar[bool] = False
    """The stages continue one training run: the optimizer (with its state) and the learning-rate schedule, built
    over the steps of all stages, carry from one stage to the next instead of restarting."""

    def __init__(self, model=None, args: MultiExitTrainingArguments | None = None, compute_metrics=None, **kwargs):
        if not isinstance(args, MultiExitTrainingArguments):
            raise ValueError(
                f"{type(self).__name__} needs its method's config (a MultiExitTrainingArguments), got {type(args).__name__}."
            )
        super().__init__(model=model, args=args, compute_metrics=compute_metrics, **kwargs)
        if self.is_world_process_zero():
            # A run killed while saving its final model left a hidden copy of it in output_dir; a new run there
            # is when a user would otherwise find the disk full.
            remove_stale_saves(self.args.output_dir)
        # Makes Trainer count the samples of each accumulated batch; `compute_loss` normalises by that count.
        self.model_accepts_loss_kwargs = True
        self.stage_index = 0
        self._exit_loss_sum: torch.Tensor | None = None
        self._exit_loss_steps = 0
        self._saved_arguments: dict[str, Any] = {}
        self._carried_schedule: dict[str, Any] | None = None
        self._saved_requires_grad: dict[str, bool] | None = None
        self._per_exit_metrics = compute_metrics is None
        self._trainer_module_views: dict[str, nn.Module] = {}
        self.add_callback(TrainerModulesCallback(self))
        self.setup_model()

    def setup_model(self) -> None:
        """Reads what the method needs from `self.model` (problem type, exit layers), checks it, and sets up what
        depends on it: the per-exit metrics, the saved exit rule and, in subclasses, trainer-owned parameters.
        Runs at construction (with the model passed in, or the one `model_init` built) and whenever `train()`
        builds a new model with `model_init`."""
        config = self.model.config
        self.problem_type = resolve_problem_type(config)
        self.exit_layers = list(config.exit_layers)
        self.trainer_modules = nn.ModuleDict()
        self._trainer_module_options: dict[str, dict[str, Any]] = {}
        if self._per_exit_metrics:
            self.compute_metrics = per_exit_metrics(self.args.task, self.problem_type, self.exit_layers)
        network = self.unwrapped_model()
        if network.exit_config == ExitConfig():
            network.exit_config = self.saved_exit_config()

    def gradient_scale(self) -> float:
        """The factor by which the gradients in `p.grad` exceed the loss's gradients until the optimizer step
        unscales them: the GradScaler's current scale under fp16 mixed precision, 1 otherwise (bf16, fp32).
        Gradients a method takes itself (`torch.autograd.grad`) and mixes into `p.grad` must be brought to this
        scale, and `p.grad` divided by it to be used as a gradient before the step (exactly: the scale is a power of
        two with GradScaler's default growth and backoff factors)."""
        scaler = self.accelerator.scaler
        return 1.0 if scaler is None else scaler.get_scale()

    # ----------------------------------------------------------------------------------------------- objective
    @property
    def stage(self) -> str:
        return self.stages[self.stage_index]

    def objective(self, outputs, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named per-sample loss terms (each `(B,)`); the training loss is their sum. Implemented by each method."""
        raise NotImplementedError

    def default_exit_config(self) -> ExitConfig:
        """The method's exit rule (its config's `default_exit_config`), saved as the model's `exit_config.json`
        unless the model already has one."""
        rule = getattr(self.args, "default_exit_config", None)
        return ExitConfig() if rule is None else rule(self.unwrapped_model(self.model).config)

    def saved_exit_config(self) -> ExitConfig:
        """`default_exit_config`, or patience (PABEE's rule, the one early-exit rule defined for regression) where
        the method's rule does not fit the problem, e.g. DeeBERT's entropy on STS-B: the method trains the same."""
        rule = self.default_exit_config()
        if self.problem_type in EXIT_STRATEGIES[rule.exit_strategy].problem_types:
            return rule
        logger.warning(
            "%s's exit rule exit_strategy=%r does not fit problem_type=%r; the model is saved with exit_strategy="
            "'patience' instead (override per call or with model.exit_config).", self.method, rule.exit_strategy, self.problem_type
        )
        return ExitConfig(exit_strategy="patience")

    def forward_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for the model's all-exits forward pass."""
        return {}

    def reduce(self, per_sample: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        """Mean over the samples of the whole accumulated (and, on several processes, gathered) batch."""
        if num_items_in_batch is None:
            return per_sample.mean()
        samples = num_items_in_batch / (labels[0].numel() if labels.dim() > 1 else 1)
        loss = per_sample.sum() / samples
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            # Trainer gathered the count over processes and DDP averages gradients, so undo that average.
            loss = loss * self.args.world_size
        return loss

    def model_outputs(self, model, inputs: dict[str, Any]):
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        return model(**model_inputs, output_all_exits=True, **self.forward_kwargs())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        outputs = self.model_outputs(model, inputs)
        terms = self.objective(outputs, labels)
        loss = self.reduce(sum(terms.values()), labels, num_items_in_batch)
        if model.training:
            self._record_exit_losses(outputs.all_logits, labels)
        return (loss, outputs) if return_outputs else loss

    def _record_exit_losses(self, all_logits, labels) -> None:
        with torch.no_grad():
            losses = torch.stack([task_loss(z, labels, self.problem_type).mean() for z in all_logits]).cpu()
        self._exit_loss_sum = losses if self._exit_loss_sum is None else self._exit_loss_sum + losses
        self._exit_loss_steps += 1

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._exit_loss_steps:
            mean = self._exit_loss_sum / self._exit_loss_steps
            logs.update({f"exit_{layer}_loss": round(float(v), 4) for layer, v in zip(self.exit_layers, mean)})
            self._exit_loss_sum, self._exit_loss_steps = None, 0
        if len(self.stages) > 1:
            logs.setdefault("stage", self.stage_index + 1)
        super().log(logs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Returns `(loss, (B, E, C) logits of every exit, labels)` so that `compute_metrics` sees all exits."""
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad():
            outputs = self.model_outputs(model, inputs)
            loss = None
            if labels is not None:
                loss = self.reduce(sum(self.objective(outputs, labels).values()), labels).detach()
        if prediction_loss_only:
            return loss, None, None
        return loss, torch.stack(outputs.all_logits, dim=1), labels

    # ----------------------------------------------------------------------------------------------- optimizer
    def unwrapped_model(self, model=None):
        """The multi-exit model being trained, out of its DDP and PEFT (LoRA, `hf_multiexit.lora`) wrappers."""
        model = self.accelerator.unwrap_model(model or self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft.PeftModel

    def intermediate_exit_parameters(self, model=None) -> list[torch.nn.Parameter]:
        """Parameters of the exit heads before the last layer (the final exit is the ordinary classifier)."""
        model = self.unwrapped_model(model)
        final = model.base_model.exits[-1]
        final_ids = {id(p) for p in final.parameters()}
        return [p for p in model.base_model.exits.parameters() if id(p) not in final_ids]

    def update_steps_per_epoch(self, num_samples: int) -> int:
        """Optimizer steps in an epoch of `num_samples` training samples, as Trainer counts them (batches per process,
        then per gradient-accumulation window, the last window possibly short)."""
        args = self.args
        batches_per_process = math.ceil(num_samples / (self._train_batch_size * args.world_size))
        return max(1, math.ceil(batches_per_process / args.gradient_accumulation_steps))

    def stage_steps(self, index: int) -> int:
        """Optimizer steps that stage `index` takes (its `num_train_epochs`, or `max_steps` where set)."""
        if self.args.max_steps > 0:
            return self.args.max_steps
        epochs = self.stage_arguments(index).get(
            "num_train_epochs", self._saved_arguments.get("num_train_epochs", self.args.num_train_epochs)
        )
        return math.ceil(epochs * self.update_steps_per_epoch(len(self.train_dataset)))

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """Trainer's scheduler; with `shared_schedule`, one schedule over the steps of every stage this `train()` runs,
        continued from where the previous stage left it."""
        if not self.shared_schedule or len(self.stages) == 1 or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        total = sum(self.stage_steps(index) for index in range(self.first_stage(), len(self.stages)))
        scheduler = super().create_scheduler(total, optimizer)
        if self._carried_schedule is not None:
            scheduler.load_state_dict(self._carried_schedule)
        return scheduler

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return super().create_optimizer(model)
        optimizer = super().create_optimizer(model)
        if self.args.exit_learning_rate is not None:
            move_to_own_groups(optimizer, self.intermediate_exit_parameters(model), self.args.exit_learning_rate)
        for name, module in self.active_trainer_modules().items():
            params = [p for p in module.parameters() if p.requires_grad]
            options = self._trainer_module_options[name]
            if params:
                decay = self.args.weight_decay if options["weight_decay"] is None else options["weight_decay"]
                optimizer.add_param_group({"params": params, "lr": options["lr"] or self.args.learning_rate,
                                           "weight_decay": decay})
        return optimizer

    # ----------------------------------------------------------------------------------------------- trainer modules
    def add_trainer_module(self, name: str, module: nn.Module, *, stages: tuple[int, ...] | None = None,
                           learning_rate: float | None = None, weight_decay: float | None = None) -> None:
        """Registers a module that the method trains but that is not part of the saved model (LeeBERT's loss weights,
        SmartBERT's projection heads); call it from `setup_model`. One mechanism gives it what Trainer gives the
        model's parameters, while a stage in `stages` (indices; None: every stage) runs: a group in the optimizer
        (`learning_rate`, default the stage's; `weight_decay`, default Trainer's), clipping to `max_grad_norm` and
        cleared gradients after each step (`TrainerModulesCallback`), gradients averaged over processes by its own
        `DistributedDataParallel` wrapper (call it through `trainer_module(name)`), and its state in every
        checkpoint (`TRAINER_MODULES_NAME`), from which resuming restores it."""
        self.trainer_modules[name] = module.to(self.args.device)
        self._trainer_module_options[name] = {"stages": stages, "lr": learning_rate, "weight_decay": weight_decay}

    def active_trainer_modules(self) -> dict[str, nn.Module]:
        """The trainer-owned modules that the current stage trains."""
        return {name: module for name, module in self.trainer_modules.items()
                if self._trainer_module_options[name]["stages"] is None
                or self.stage_index in self._trainer_module_options[name]["stages"]}

    def trainer_module(self, name: str) -> nn.Module:
        """The trainer-owned module `name` to call in the training loss: on several processes its DDP wrapper, whose
        backward averages its gradients over them as DDP does the model's; else the module itself."""
        return self._trainer_module_views.get(name, self.trainer_modules[name])

    def _wrap_trainer_modules(self) -> None:
        self._trainer_module_views = {}
        if self.accelerator.num_processes == 1:
            return
        device = self.args.device
        for name, module in self.active_trainer_modules().items():
            if any(p.requires_grad for p in module.parameters()):
                self._trainer_module_views[name] = nn.parallel.DistributedDataParallel(
                    module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
                )

    def trainer_modules_metadata(self) -> dict[str, str]:
        """What a checkpoint's trainer modules must have been trained with for this run to resume them."""
        return {"trainer": type(self).__name__}

    def save_trainer_modules(self, folder: str) -> None:
        """Writes the trainer modules' state (with `trainer_modules_metadata`) into checkpoint `folder`."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.trainer_modules.state_dict().items()}
        path = os.path.join(folder, TRAINER_MODULES_NAME)
        save_file(state, path + ".tmp", metadata=self.trainer_modules_metadata())
        os.replace(path + ".tmp", path)  # a checkpoint holds the whole file or none

    def load_trainer_modules(self, checkpoint: str) -> None:
        """Restores the trainer modules from `checkpoint`, refusing one written by another trainer or options."""
        if not len(self.trainer_modules):
            return
        path = os.path.join(checkpoint, TRAINER_MODULES_NAME)
        if not os.path.isfile(path):
            raise ValueError(f"{checkpoint} has no {TRAINER_MODULES_NAME}: it was not written by {type(self).__name__}; "
                             "resume from one of its checkpoints.")
        with safe_open(path, "pt") as stored:
            metadata = stored.metadata() or {}
        expected = self.trainer_modules_metadata()
        different = {key: metadata.get(key) for key, value in expected.items() if metadata.get(key) != value}
        if different:
            raise ValueError(
                f"{checkpoint} was trained with {', '.join(f'{k}={v!r}' for k, v in different.items())}; this run "
                f"uses {', '.join(f'{k}={expected[k]!r}' for k in different)}. Resume with the options it was trained with."
            )
        self.trainer_modules.load_state_dict(load_file(path, device=str(self.args.device)))

    # ----------------------------------------------------------------------------------------------- stages
    def stage_arguments(self, index: int) -> dict[str, Any]:
        """`TrainingArguments` values that stage `index` changes (e.g. its own epochs); restored after training."""
        return {}

    def first_stage(self) -> int:
        """Index of the first stage `train()` runs; the stages before it are taken as done (DeeBERT's
        `skip_first_stage`)."""
        return 0

    def stage_trainable(self, index: int, model) -> list[torch.nn.Parameter] | None:
        """The only parameters stage `index` trains (the others are frozen), or None for no freezing."""
        return None

    def begin_stage(self, index: int) -> None:
        """Sets up stage `index`: its training arguments and which parameters it trains."""
        self.stage_index = index
        for name, value in {**self._saved_arguments, **self.stage_arguments(index)}.items():
            self._saved_arguments.setdefault(name, getattr(self.args, name))
            setattr(self.args, name, value)
        model = self.accelerator.unwrap_model(self.model)
        if self._saved_requires_grad is None:
            self._saved_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        trainable = self.stage_trainable(index, model)
        keep = None if trainable is None else {id(p) for p in trainable}
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(self._saved_requires_grad[name] and (keep is None or id(parameter) in keep))
        self._wrap_trainer_modules()

    def end_training(self) -> None:
        """Restores the arguments and `requires_grad` flags that the stages changed."""
        self._trainer_module_views = {}
        for name, value in self._saved_arguments.items():
            setattr(self.args, name, value)
        self._saved_arguments = {}
        if self._saved_requires_grad is not None:
            for name, parameter in self.accelerator.unwrap_model(self.model).named_parameters():
                parameter.requires_grad_(self._saved_requires_grad[name])
            self._saved_requires_grad = None

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        """Trainer's `train()`, over every stage. With `model_init`, the model is built once here, seeded as
        Trainer seeds it: Trainer's own rebuild at the start of each `train()` would come after the regression
        biases and the stage's frozen parameters were set, and would throw away what earlier stages trained."""
        model_init = self.model_init
        if model_init is not None:
            seed_run(self.args)
            self.model = self.call_model_init(trial)
            self.optimizer, self.lr_scheduler = None, None
            if self.place_model_on_device:
                self._move_model_to_device(self.model, self.args.device)
            self.model_wrapped = self.model
            self.setup_model()
        self.model_init = None
        try:
            return self._train_stages(resume_from_checkpoint, trial=trial, **kwargs)
        finally:
            self.model_init = model_init

    def _train_stages(self, resume_from_checkpoint: str | bool | None, **kwargs):
        if not resume_from_checkpoint and self.args.init_regression_bias and self.problem_type == REGRESSION:
            if self.train_dataset is None or not hasattr(self.train_dataset, "__len__"):
                raise ValueError(
                    "init_regression_bias=True needs a training set with a length to average its labels over; "
                    f"got {type(self.train_dataset).__name__}. Pass init_regression_bias=False to keep the biases."
                )
            mean = label_mean(self.train_dataset)
            set_exit_biases(self.unwrapped_model(), mean)
            logger.info(f"Exit output biases start at the mean training label {mean.tolist()}.")
        if len(self.stages) == 1:
            if resume_from_checkpoint is True:
                resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
                if resume_from_checkpoint is None:
                    raise ValueError(
                        f"resume_from_checkpoint=True but no complete checkpoint was found in {self.args.output_dir}."
                    )
            self.begin_stage(0)
            try:
                if resume_from_checkpoint:
                    self.load_trainer_modules(resume_from_checkpoint)
                return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
            finally:
                self.end_training()
        root = self.args.output_dir
        start, checkpoint = self._resume_point(root, resume_from_checkpoint)
        start = max(start, self.first_stage())
        stage_callback = StageCallback()
        self.add_callback(stage_callback)
        results = {}
        try:
            for index in range(start, len(self.stages)):
                self.args.output_dir = os.path.join(root, f"stage-{index + 1}")
                stage_callback.stage_index, stage_callback.stage_name = index, self.stages[index]
                if self.shared_schedule and index > start:
                    # The torch optimizer itself (Trainer prepares it again for the stage) and the schedule's position.
                    self.optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
                    self._carried_schedule = self.lr_scheduler.state_dict()
                else:
                    self.optimizer, self._carried_schedule = None, None
                self.lr_scheduler = None
                # A fresh DDP wrapper too: DDP all-reduces only the gradients of the parameters that required one
                # when it was built, so a stage that trains what an earlier stage froze would train it per process.
                self.model_wrapped = self.model
                self.begin_stage(index)
                if checkpoint and index == start:
                    self.load_trainer_modules(checkpoint)
                results[index] = super().train(resume_from_checkpoint=checkpoint if index == start else None, **kwargs)
        finally:
            self.args.output_dir = root
            self.remove_callback(stage_callback)
            self.end_training()
        # The last stage's TrainOutput, with the run time of every stage run here and their total.
        last = results[max(results)]
        for index, result in results.items():
            last.metrics[f"stage_{index + 1}_train_runtime"] = result.metrics["train_runtime"]
        last.metrics["train_runtime"] = sum(result.metrics["train_runtime"] for result in results.values())
        return last

    def _resume_point(self, root: str, resume_from_checkpoint: str | bool | None) -> tuple[int, str | None]:
        """`(stage index, checkpoint)` to start from: stage 0 from scratch, or the stage a checkpoint belongs to."""
        if not resume_from_checkpoint:
            return 0, None
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = None
            for index in reversed(range(len(self.stages))):
                stage_dir = os.path.join(root, f"stage-{index + 1}")
                if checkpoint := last_complete_checkpoint(stage_dir):
                    break
            if checkpoint is None:
                raise ValueError(f"resume_from_checkpoint=True but no complete checkpoint was found under {root}/stage-*/.")
        index = StageCallback.stage_of_checkpoint(checkpoint)
        if index is None or not 0 <= index < len(self.stages):
            raise ValueError(
                f"{checkpoint} does not record a stage of {type(self).__name__} (stages {list(self.stages)}); pass a "
                "checkpoint written by this trainer."
            )
        return index, checkpoint

    def config_summary(self) -> dict[str, Any]:
        """The method's own hyper-parameters (fields not in `TrainingArguments`), for reports and model cards."""
        base = {f.name for f in dataclasses.fields(TrainingArguments)}
        return {f.name: getattr(self.args, f.name) for f in dataclasses.fields(self.args) if f.name not in base}

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        report: str | None = None,
        base_model: str | None = None,
        license: str | None = None,
    ):
        """Trainer's upload (`--push_to_hub`), publishing what `hf-multiexit push` publishes instead of Trainer's
        generic card and `output_dir` as it stands: saves the model, then `hf_multiexit.hub.push_model` uploads the
        model's files and the generated card (`report`, `base_model`, `license` as for `push_model`) in one commit,
        removing what checkpoint pushes during training uploaded besides the model.
        Always blocking (`blocking` is accepted for Trainer's signature): the card is built from the saved files."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        self._finish_current_push()
        return push_model(
            self.args.output_dir,
            self.hub_model_id,
            report=report,
            private=private if private is not None else self.args.hub_private_repo,
            token=token,
            revision=revision if revision is not None else self.args.hub_revision,
            commit_message=commit_message,
            base_model=base_model,
            license=license,
            remove_stale=True,
        )
