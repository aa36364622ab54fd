"""`hf-multiexit evaluate`: its arguments, the evaluation set, and the run that writes `report.json`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..data_arguments import EvaluationDataArguments
from ..io import atomic_write_json, check_model_path
from ..metrics import check_metric
from ..models.multiexit_bert import EXIT_STRATEGIES, ExitConfig
from ..models.multiexit_bert.exit_strategies import build_exit_strategy
from .replay import DEFAULT_GRID_STEP, sweep_parameter
from .report import plot_report
from .tradeoff import evaluate_tradeoff


def _parse_values(text: str | None, convert, flag: str) -> list | None:
    if text is None:
        return None
    try:
        return [convert(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"--{flag}={text!r} must be a comma-separated list of numbers, e.g. 0.1,0.3,0.5.") from None


def resolve_device(name: str) -> str:
    """`--device`: "auto" is the accelerator torch finds (CUDA, XPU, MPS, ...), else the CPU; anything else must
    name a device torch knows and that is present here."""
    if name == "auto":
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        return "cpu" if accelerator is None else accelerator.type
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device={name!r} is not a device name: use 'auto', 'cpu', 'cuda', 'cuda:1', ... ({err})") from None
    if device.type != "cpu" and not (torch.accelerator.is_available() and torch.accelerator.current_accelerator().type == device.type):
        raise ValueError(f"--device={name!r}: no {device.type} device is available here; use --device cpu (or auto).")
    return name


RUNTIMES = ("torch", "onnx")


@dataclass(kw_only=True)
class EvaluateArguments(EvaluationDataArguments):
    """`hf-multiexit evaluate`: a trade-off sweep of a trained multi-exit model on a validation set (given by the
    inherited data flags)."""

    model: str = field(metadata={"help": "A saved multi-exit model folder (or Hub id)."})
    output: str = field(metadata={"help": "Where to write report.json."})
    exit_strategy: str = field(
        default="entropy,static",
        metadata={"help": f"Strategy, or comma-separated strategies, to sweep: {list(EXIT_STRATEGIES)} (default "
                  "entropy and static: a single intermediate exit sometimes beats the final one)."},
    )
    thresholds: str | None = field(
        default=None,
        metadata={"help": "Comma-separated thresholds for entropy/confidence/skip (default: thresholds placed on this "
                  "data's exit statistics, consecutive points at most --grid_step apart in layer speed-up)."},
    )
    grid_step: float = field(
        default=DEFAULT_GRID_STEP, metadata={"help": "Largest layer speed-up step of the default threshold grids."}
    )
    patience: str | None = field(default=None, metadata={"help": "Comma-separated patience values (default 0..E-1)."})
    exit_layers: str | None = field(default=None, metadata={"help": "Comma-separated layers for static (default: all exits)."})
    task: str | None = field(default=None, metadata={"help": "GLUE task (or give --validation_file)."})
    batch_size: int = field(default=32, metadata={"help": "Inference batch size."})
    repeats: int = field(default=1, metadata={
        "help": "Timed rounds per setting, each one pass of the setting and one at full depth (the fastest of each counts)."})
    wall_clock: bool = field(default=True, metadata={"help": "Time a real early-exit run at every point."})
    plot: str | None = field(default=None, metadata={"help": "Also write the trade-off plot (PNG) here."})
    device: str = field(default="auto", metadata={
        "help": "Device to run on: 'auto' (the accelerator torch finds, else the CPU), 'cpu', 'cuda', 'cuda:1', ..."})
    runtime: str = field(default="torch", metadata={
        "help": "torch: the PyTorch model; onnx: --model is a folder written by `hf-multiexit export`, run by ONNX "
                "Runtime on the CPU (the same exit loop).", "choices": list(RUNTIMES)})

    _flags = {"entropy_threshold": "thresholds", "confidence_threshold": "thresholds", "patience": "patience",
              "exit_layer": "exit_layers"}
    """The flag that gives the values of each swept `ExitConfig` field."""

    def __post_init__(self):
        super().__post_init__()
        self.strategies = [name.strip() for name in self.exit_strategy.split(",") if name.strip()]
        parameters = {name: sweep_parameter(name) for name in self.strategies}
        values = {flag: _parse_values(getattr(self, flag), convert, flag)
                  for flag, convert in (("thresholds", float), ("patience", int), ("exit_layers", int))}
        self.sweep = {name: values.get(self._flags.get(parameter)) for name, parameter in parameters.items()}
        read = {self._flags.get(parameter) for parameter in parameters.values()}
        for flag in values:
            if getattr(self, flag) is not None and flag not in read:
                readers = [name for name, cls in EXIT_STRATEGIES.items()
                           if cls.parameters and self._flags.get(cls.parameters[0]) == flag]
                raise ValueError(f"--{flag} is given, but no strategy in --exit_strategy={self.exit_strategy!r} reads "
                                 f"it; add {' or '.join(readers)} to --exit_strategy or leave --{flag} out.")
        self.check_sweep()
        check_metric(self.metric, self.task)
        check_model_path(self.model, "--model", "the --output_dir of `hf-multiexit train` (or a Hub model id)")
        if (self.task is None) == (self.validation_file is None):
            raise ValueError("Give exactly one of --task (a GLUE task) and --validation_file.")
        for name in ("batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be a positive integer.")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"--runtime={self.runtime!r} is not one of {list(RUNTIMES)}.")
        if self.runtime == "onnx" and self.device not in ("auto", "cpu"):
            raise ValueError(f"--device={self.device!r}: --runtime onnx runs on the CPU; leave --device out.")
        self.device = "cpu" if self.runtime == "onnx" else resolve_device(self.device)

    def check_sweep(self, model_config=None) -> None:
        """Checks every value given to sweep, so that a bad one fails before anything is loaded: its range, and with
        `model_config` (read before the weights) whether the model can run it (`--exit_layers` must be exits)."""
        for strategy, values in self.sweep.items():
            parameter = sweep_parameter(strategy)
            for value in values or ():
                try:
                    exit_config = ExitConfig(exit_strategy=strategy, **{parameter: value})
                    if model_config is not None:
                        build_exit_strategy(exit_config, model_config)
                except ValueError as err:
                    flag = self._flags[parameter]
                    raise ValueError(f"--{flag}={getattr(self, flag)!r}: {err}") from None


def load_evaluation_set(args: EvaluateArguments, model, tokenizer):
    """The tokenised validation split of the GLUE task, or of the file (labels read with the model's label names)."""
    from ..data import load_glue, load_text_files
    from ..tasks import get_glue_task

    if args.validation_file is not None:
        names = None if model.config.num_labels == 1 else [model.config.id2label[i] for i in range(model.config.num_labels)]
        data = load_text_files(
            validation_file=args.validation_file, text_columns=tuple(args.text_columns), label_column=args.label_column,
            label_names=names, tokenizer=tokenizer, max_length=args.max_length,
        )["validation"]
    else:
        spec = get_glue_task(args.task)
        split = spec.validation_splits[0]
        data = load_glue(args.task, data_dir=args.data_dir, tokenizer=tokenizer, max_length=args.max_length, splits=split)[split]
    if args.max_eval_samples is not None:
        data = data.select(range(min(args.max_eval_samples, len(data))))
    return data


def trained_model_config(model: str, command: str, why: str):
    """The config of a trained multi-exit model given as `--model`, read before the weights; a folder without
    config.json or a plain (non multi-exit) checkpoint is refused, saying that `why` (its exits are untrained)."""
    from transformers import AutoConfig

    from ..models.multiexit_bert import AUTO_FAMILIES

    if os.path.isdir(model) and not os.path.exists(os.path.join(model, "config.json")):
        raise FileNotFoundError(f"--model={model!r} has no config.json: it is not a saved model folder.")
    config = AutoConfig.from_pretrained(model)
    if type(config) not in AUTO_FAMILIES:
        raise ValueError(
            f"--model {model!r} is a plain {config.model_type!r} checkpoint, not a multi-exit one: its exits were "
            f"never trained (loading it gives them random weights), so {why}. Train it first, e.g. `hf-multiexit "
            f"train --method pabee --model_name_or_path {model} --output_dir OUT ...`, and {command} OUT."
        )
    return config


def load_classifier(model: str, config, runtime: str = "torch", device: str = "cpu"):
    """The trained classifier in `model` (its `config` from `trained_model_config`) for `runtime`: the PyTorch
    model on `device`, or the ONNX Runtime model of an `hf-multiexit export` folder."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is not one of {list(RUNTIMES)}.")
    if runtime == "onnx":
        from ..onnx import ORTMultiExitModelForSequenceClassification

        return ORTMultiExitModelForSequenceClassification.from_pretrained(model)
    from ..models.multiexit_bert import AUTO_FAMILIES

    _, classifier_class = AUTO_FAMILIES[type(config)]
    return classifier_class.from_pretrained(model, config=config).to(device).eval()


def run_evaluation(args: EvaluateArguments) -> dict:
    """Loads the model and data, sweeps, writes `report.json` (and the plot) atomically, returns the report."""
    from transformers import AutoTokenizer

    from ..data import make_collator

    config = trained_model_config(args.model, "evaluate", "a trade-off would measure noise")
    args.check_sweep(config)
    model = load_classifier(args.model, config, args.runtime, args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = load_evaluation_set(args, model, tokenizer)
    report = evaluate_tradeoff(
        model, data, make_collator(tokenizer), args.sweep, task=args.task, batch_size=args.batch_size,
        wall_clock=args.wall_clock, repeats=args.repeats, metric=args.metric, grid_step=args.grid_step,
    )
    report["model"] = args.model
    report["runtime"] = args.runtime
    if args.plot:
        plot_report(report, args.plot)
        report["plot"] = args.plot
    atomic_write_json(args.output, report)
    return report
