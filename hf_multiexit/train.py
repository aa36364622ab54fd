"""End-to-end training of a multi-exit model: arguments, data, model, `<Method>Trainer`, saved results.

Used by `hf-multiexit train` and `examples/run_glue_multiexit.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from peft import PeftModel
from safetensors import SafetensorError
from transformers import AutoTokenizer

from .calibrate_model import CALIBRATION_SPLIT_NAME, calibrate_model, check_calibration_options, hold_out_split
from .data import load_glue, load_text_files, make_collator
from .data_arguments import DataArguments
from .tasks import get_glue_task
from .io import atomic_save_pretrained, atomic_write_json, check_model_path
from .lora import LORA_ADAPTER_DIR, add_lora, merged_copy, save_lora
from .metrics import check_metric, primary_metric
from .models import multiexit_config_class
from .models.multiexit_bert import AUTO_FAMILIES, EXIT_HEAD_STYLES
from .models.multiexit_bert.configuration_multiexit_bert import POOLER_STYLES
from .models.multiexit_bert.exit_strategies import resolve_problem_type
from .trainers import MultiExitTrainingArguments, get_method, seed_run
from .trainers.base import per_exit_metrics

_RECORDED_DATA_ARGUMENTS = ("data_dir", "train_file", "validation_file", "text_columns", "label_column", "class_names",
                             "max_length", "max_train_samples")
"""What reads the training set again, for `hf-multiexit calibrate` to find the held-out examples by their indices."""


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "A plain BERT or multi-exit checkpoint (folder or Hub id)."})
    exit_head: str | None = field(
        default=None,
        metadata={"help": f"Exit head style, one of {list(EXIT_HEAD_STYLES)} (default: the method's paper's)."},
    )
    exit_layers: list[int] | None = field(
        default=None, metadata={"help": "1-based layers with an exit (default: every layer)."}
    )
    exit_pooling: str = field(
        default="cls",
        metadata={"help": "What pooler/linear exit heads read: 'cls' (BERT) or 'mean' (mean-pooling backbones such as "
                  "sentence-transformers models)."},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (default: model_name_or_path)."})
    lora_r: int | None = field(
        default=None,
        metadata={"help": "Train LoRA adapters of this rank on the backbone (frozen) and the exit heads in full "
                  "(hf_multiexit.lora); saves the merged model in output_dir and the adapter in output_dir/adapter."},
    )
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA scaling alpha (default: 2 * lora_r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Encoder modules with LoRA adapters (default: the attention query and value projections "
                  "of the backbone), e.g. for BERT query, key, value, attention.output.dense, intermediate.dense, "
                  "output.dense."},
    )

    def __post_init__(self):
        check_model_path(self.model_name_or_path, "--model_name_or_path",
                         "a BERT or multi-exit checkpoint folder or a Hub model id")
        if self.tokenizer_name is not None:
            check_model_path(self.tokenizer_name, "--tokenizer_name", "a tokenizer folder or a Hub model id")
        if self.exit_head is not None and self.exit_head not in EXIT_HEAD_STYLES:
            raise ValueError(f"exit_head={self.exit_head!r} is not one of {list(EXIT_HEAD_STYLES)}.")
        if self.lora_r is not None and self.lora_r < 1:
            raise ValueError(f"lora_r={self.lora_r} must be a positive rank, or left out for full fine-tuning.")


@dataclass
class CalibrationArguments:
    """Training options that hold out a calibration split and choose the saved exit rule on it after training
    (`hf_multiexit.calibrate_model`)."""

    calibration_split: float | None = field(
        default=None,
        metadata={"help": "Share of the training set held out before training (seeded by --seed), recorded in "
                  "output_dir/calibration_split.json, on which `hf-multiexit calibrate` (or --calibrate_max_drop) "
                  "chooses the exit rule: data the model never trained on, and not the evaluation set."},
    )
    calibrate_max_drop: float | None = field(
        default=None,
        metadata={"help": "After training, save as exit_config.json the fastest rule whose disagreement with full "
                  "depth (or accuracy drop) on new data is at most this, with probability 1 - calibrate_delta "
                  "(Learn-then-Test on the held-out split; needs --calibration_split), e.g. 0.01."},
    )
    calibrate_delta: float = field(default=0.1, metadata={"help": "Error level of the guarantee, in [0, 1) (0: empirical)."})
    calibrate_criterion: str = field(default="agreement", metadata={"help": "'agreement' or 'metric' (see calibrate)."})
    calibrate_strategies: str = field(
        default="entropy,patience,confidence", metadata={"help": "Comma-separated strategies to calibrate."}
    )

    def __post_init__(self):
        if self.calibrate_max_drop is not None:
            if self.calibration_split is None:
                raise ValueError(
                    f"--calibrate_max_drop {self.calibrate_max_drop} needs held-out training data to calibrate on "
                    "(the evaluation set is never used): add --calibration_split 0.1."
                )
            check_calibration_options(self.calibrate_max_drop, self.calibrate_delta, self.calibrate_criterion,
                                      self.calibrate_strategies, None, None, prefix="calibrate_")
        if self.calibration_split is not None and not 0.0 < self.calibration_split < 1.0:
            raise ValueError(f"--calibration_split={self.calibration_split!r} is out of range: it must lie in (0, 1).")


def load_datasets(data_args: DataArguments, task: str | None, tokenizer):
    """`(train, validation, label_names)`: GLUE by task, or the given files; truncated to the max sample counts."""
    if data_args.train_file is not None:
        data = load_text_files(
            data_args.train_file,
            data_args.validation_file,
            text_columns=tuple(data_args.text_columns),
            label_column=data_args.label_column,
            label_names=data_args.class_names,
            tokenizer=tokenizer,
            max_length=data_args.max_length,
        )
        validation_split = "validation"
        label_names = data["train"].features["label"].names if hasattr(data["train"].features["label"], "names") else None
    else:
        if task is None:
            raise ValueError("Give --task (a GLUE task) or --train_file/--validation_file.")
        spec = get_glue_task(task)
        data = load_glue(task, data_dir=data_args.data_dir, tokenizer=tokenizer, max_length=data_args.max_length)
        validation_split = spec.validation_splits[0]
        label_names = None if spec.is_regression else list(spec.label_names)
    train, validation = data["train"], data[validation_split]
    if len(train) == 0 or len(validation) == 0:
        raise ValueError(f"Empty split: {len(train)} training and {len(validation)} validation examples.")
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_eval_samples is not None:
        validation = validation.select(range(min(data_args.max_eval_samples, len(validation))))
    return train, validation, label_names


def build_model(model_args: ModelArguments, method: str, label_names: list[str] | None, checkpoint_config):
    options: dict[str, Any] = {"num_labels": len(label_names) if label_names else 1}
    if label_names:
        options["id2label"] = dict(enumerate(label_names))
        options["label2id"] = {name: i for i, name in enumerate(label_names)}
    # `checkpoint_config`: the checkpoint's config as its multi-exit config class reads it (build_trainer has it).
    config_class = type(checkpoint_config)
    method_config, _ = get_method(method)
    exit_head = model_args.exit_head or method_config.exit_head
    if model_args.exit_head is None and exit_head in POOLER_STYLES:
        # The method's own style reads a pooler; backbones without one get their config's default ("native").
        exit_head = exit_head if checkpoint_config.backbone_adapter.has_pooler else None
    if exit_head is not None:  # None leaves the config's own default; passed, it would override it with None
        options["exit_head"] = exit_head
    if model_args.exit_layers is not None:
        options["exit_layers"] = model_args.exit_layers
    options["exit_pooling"] = model_args.exit_pooling
    options.update(method_config.model_options)
    _, classifier_class = AUTO_FAMILIES[config_class]
    try:
        model = classifier_class.from_pretrained(model_args.model_name_or_path, **options)
    except SafetensorError as err:
        raise ValueError(
            f"The weights of {model_args.model_name_or_path} cannot be read ({err}): a .safetensors file there is "
            "truncated or corrupt, e.g. by an interrupted download, copy or save. Download or save the checkpoint again."
        ) from err
    if model.exit_config.calibration is not None:
        # The record certifies the rule for the weights it was calibrated on, which training is about to change.
        model.exit_config = model.exit_config.update(calibration=None)
    if model_args.lora_r is not None:
        model = add_lora(model, model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout, model_args.lora_target_modules)
    return model


def eval_report(
    metrics: dict[str, float], exit_layers: list[int], task: str | None, is_regression: bool, metric: str | None = None
) -> dict[str, Any]:
    """`eval_results.json`: the final exit's metrics, one entry per exit, and Trainer's raw `eval_*` numbers."""
    per_exit = []
    for layer in exit_layers:
        prefix = f"eval_exit_{layer}_"
        per_exit.append({"layer": layer, "metrics": {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}})
    final = per_exit[-1]["metrics"]
    return {
        "primary_metric": primary_metric(
            task or ("regression" if is_regression else "classification"), is_regression, metric
        ),
        "final": final,
        "per_exit": per_exit,
        "raw": metrics,
    }


def build_trainer(
    model_args: ModelArguments, data_args: DataArguments, training_args: MultiExitTrainingArguments, method: str,
    calibration_split: float | None = None,
):
    """`(trainer, tokenizer, label_names, held_out)`: the method's trainer over the loaded data and a fresh
    multi-exit model, built after seeding from `training_args.seed` (with `full_determinism`, deterministic
    algorithms too), so that two runs with the same seed start from the same exit heads. With `calibration_split`,
    that share of the training set is held out first (`hold_out_split`, seeded by `training_args.seed`) and
    `held_out` is `(examples, record for calibration_split.json)`; else None."""
    _, trainer_class = get_method(method)
    checkpoint_config = multiexit_config_class(model_args.model_name_or_path).from_pretrained(model_args.model_name_or_path)
    positions = checkpoint_config.backbone_adapter.max_length(checkpoint_config.backbone_config)
    if data_args.max_length > positions:
        # The tokenizer's limit may be unset or larger; longer inputs would fail inside the embeddings.
        raise ValueError(
            f"max_length={data_args.max_length} is above the {positions} positions of {model_args.model_name_or_path}; "
            f"pass --max_length {positions} or less."
        )
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    train, validation, label_names = load_datasets(data_args, training_args.task, tokenizer)
    held_out = None
    if calibration_split is not None:
        train, examples, record = hold_out_split(train, calibration_split, training_args.seed)
        data = {name: getattr(data_args, name) for name in _RECORDED_DATA_ARGUMENTS}
        # Absolute paths: `hf-multiexit calibrate` may run from another working directory.
        data.update({name: os.path.abspath(data[name]) for name in ("data_dir", "train_file", "validation_file")
                     if data[name] is not None})
        held_out = examples, {**record, "data": {"task": training_args.task, **data}}
    check_metric(data_args.metric, training_args.task, len(label_names) if label_names else 1)
    # Trainer seeds only once the model exists; its exit heads (gates, LoRA adapters) are initialised here.
    seed_run(training_args)
    model = build_model(model_args, method, label_names, checkpoint_config)
    config = model.config
    trainer = trainer_class(
        model=model,
        args=training_args,
        compute_metrics=per_exit_metrics(
            training_args.task, resolve_problem_type(config), list(config.exit_layers), data_args.metric
        ),
        train_dataset=train,
        eval_dataset=validation,
        data_collator=make_collator(tokenizer),
        processing_class=tokenizer,
    )
    return trainer, tokenizer, label_names, held_out


def save_results(trainer, tokenizer, report: dict[str, Any]) -> None:
    """The trained model (with its exit rule), the tokenizer and `eval_results.json`, written atomically. A LoRA
    model is saved merged, and its adapter in `output_dir/adapter`."""
    if trainer.is_world_process_zero():
        output_dir = trainer.args.output_dir
        model = trainer.accelerator.unwrap_model(trainer.model)
        if isinstance(model, PeftModel):
            save_lora(model, os.path.join(output_dir, LORA_ADAPTER_DIR))
            model = merged_copy(model)
        atomic_save_pretrained(output_dir, model, tokenizer)
        atomic_write_json(os.path.join(output_dir, "eval_results.json"), report)


def run_training(
    model_args: ModelArguments, data_args: DataArguments, training_args: MultiExitTrainingArguments, method: str,
    calibration_args: CalibrationArguments | None = None,
) -> dict[str, Any]:
    """Trains with `method`, evaluates every exit, saves the model (with its exit rule) and `eval_results.json`
    in `training_args.output_dir`, and returns the report. With `calibration_args.calibration_split`, the held-out
    examples are recorded in `calibration_split.json`; with `calibrate_max_drop` too, the saved exit rule is the
    one calibrated on them (`calibrate_model`), and the report gains `exit_rule` and `calibration`."""
    calibration_args = calibration_args or CalibrationArguments()
    trainer, tokenizer, label_names, held_out = build_trainer(
        model_args, data_args, training_args, method, calibration_args.calibration_split
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = trainer.evaluate()
    report = eval_report(
        metrics, list(trainer.model.config.exit_layers), training_args.task, label_names is None, data_args.metric
    )
    report.update(method=method, train_runtime=train_result.metrics.get("train_runtime"), config=trainer.config_summary())
    if calibration_args.calibrate_max_drop is not None:
        network = trainer.unwrapped_model()
        network.exit_config = calibrate_model(
            trainer.model, held_out[0], trainer.data_collator, max_drop=calibration_args.calibrate_max_drop,
            delta=calibration_args.calibrate_delta, criterion=calibration_args.calibrate_criterion,
            strategies=calibration_args.calibrate_strategies.split(","), metric=data_args.metric,
            task=training_args.task, seed=training_args.seed, batch_size=training_args.per_device_eval_batch_size,
            source={"source": "held-out training split", **held_out[1]["data"],
                    "share": calibration_args.calibration_split, "seed": training_args.seed},
        )
        rule = network.exit_config.to_dict()
        report["calibration"] = rule.pop("calibration")
        report["exit_rule"] = rule
    save_results(trainer, tokenizer, report)
    if held_out is not None and trainer.is_world_process_zero():
        atomic_write_json(os.path.join(training_args.output_dir, CALIBRATION_SPLIT_NAME), held_out[1])
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return report
