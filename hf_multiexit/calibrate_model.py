"""Choosing a model's saved exit rule on held-out data: `hf-multiexit calibrate` and its Python equivalent.

    hf-multiexit calibrate --model DIR [--task T [--data_dir D] | --calibration_file F [--text_columns ...]]
        --max_drop 0.01 [--delta 0.1] [--criterion agreement|metric] [--strategies entropy,patience,confidence]
        [--metric M]

One all-exits pass over the calibration samples caches every exit's logits; each strategy's candidates are replayed
on them and decided by Learn-then-Test with fixed-sequence testing (`hf_multiexit.calibration`; Angelopoulos et al.,
"Learn then Test", 2021; as CALM calibrates its thresholds, Schuster et al., NeurIPS 2022), and the strategy whose
certified setting has the largest layer speed-up on the calibration samples becomes the model's `exit_config.json`,
with the calibration record (`ExitConfig.calibration`). With probability at least `1 - delta` over the draw of the
calibration samples, the saved rule's risk on new data from the same distribution is at most `max_drop`:
its disagreement rate with the model's own full depth (`agreement`), or its accuracy drop (`metric`).

Where the calibration samples come from:

- the training examples that `hf-multiexit train --calibration_split S` held out before training (seeded; the
  indices, the seed and a fingerprint of the training set are in the model folder's `calibration_split.json`);
  the model never trained on them, and they are not the evaluation set;
- or `--calibration_file F`: labelled examples the model neither trained on nor will be evaluated on.

The evaluation (dev) set is never used: a rule chosen on it would make every number measured there afterwards
optimistic. A model without a recorded split therefore needs `--calibration_file`, and a file that is a GLUE dev
file or the training run's validation file is refused.

The candidate thresholds are placed on the exit statistics of a seeded share (`--grid_share`, 0.2) of the
calibration samples, and tested on the others, so that the grid does not depend on the tested samples (condition
(c) of the guarantee in `hf_multiexit.calibration`). `--grid_share 0` places them on the tested samples themselves,
which keeps all samples for the test at the price of that condition (the record says which was done).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .calibration import CRITERIA, PER_SAMPLE_METRICS, STRATEGIES, calibrate_strategy
from .tasks import GLUE_TASKS
from .metrics import METRICS, check_metric, primary_metric
from .models.multiexit_bert import ExitConfig
from .models.multiexit_bert.exit_strategies import REGRESSION, resolve_problem_type

__all__ = [
    "CALIBRATION_SPLIT_NAME",
    "DEFAULT_STRATEGIES",
    "CalibrateArguments",
    "calibrate_model",
    "check_calibration_options",
    "dataset_fingerprint",
    "hold_out_split",
    "run_calibration",
]

CALIBRATION_SPLIT_NAME = "calibration_split.json"
DEFAULT_STRATEGIES = ("entropy", "patience", "confidence")
_GLUE_DEV_FILES = {name for task in GLUE_TASKS.values() for split, name in task.split_files if split != "train"}
_GLUE_FOLDERS = {task.folder for task in GLUE_TASKS.values()}


def dataset_fingerprint(dataset) -> str:
    """SHA-256 of a tokenised dataset's `input_ids` and `label` columns, row by row: the same training set read
    again (same files, tokenizer, max_length and max_train_samples) gives the same fingerprint, so recorded
    indices are known to point at the same examples."""
    digest = hashlib.sha256()
    for ids, label in zip(dataset["input_ids"], dataset["label"]):
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        digest.update(f"|{label!r}\n".encode())
    return digest.hexdigest()


def hold_out_split(dataset, share: float, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """`(kept, held_out, record)`: a seeded random `share` of `dataset` held out, the rest kept (both in file
    order), and the record to save as `calibration_split.json` (share, seed, size, held-out indices, fingerprint)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"calibration_split={share!r} is out of range: the held-out share must lie in (0, 1).")
    count = len(dataset)
    held = int(round(share * count))
    if not 0 < held < count:
        raise ValueError(
            f"calibration_split={share} of {count} training examples holds out {held}: nothing would be "
            f"{'held out' if held == 0 else 'left to train on'}. Use more data or another share."
        )
    order = np.random.default_rng(seed).permutation(count)
    held_out, kept = np.sort(order[:held]), np.sort(order[held:])
    record = {
        "share": share, "seed": seed, "num_train_examples": count, "indices": held_out.tolist(),
        "fingerprint": dataset_fingerprint(dataset),
    }
    return dataset.select(kept), dataset.select(held_out), record


def _grid_and_test(count: int, grid_share: float, seed: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Indices of the samples that place the grid (None: the tested ones) and of the tested samples."""
    if grid_share == 0:
        return None, np.arange(count)
    order = np.random.default_rng(seed).permutation(count)
    grid = max(1, int(round(grid_share * count)))
    if grid >= count:
        raise ValueError(f"grid_share={grid_share} of {count} calibration samples leaves none to test.")
    return np.sort(order[:grid]), np.sort(order[grid:])


def _strategy_summary(result) -> dict[str, Any]:
    return {
        "setting": result.setting, "fallback": result.fallback, "empirical_risk": result.empirical_risk,
        "p_value": result.p_value, "layer_speedup": result.layer_speedup, "avg_exit_layer": result.avg_exit_layer,
        "chosen_index": result.chosen_index, "num_candidates": len(result.candidates),
        "metric_drop": None if result.chosen_index is None else result.candidates[result.chosen_index].metric_drop,
    }


def calibrate_model(
    model, dataset, collator, *, max_drop: float, delta: float = 0.1, criterion: str = "agreement",
    strategies: Sequence[str] = DEFAULT_STRATEGIES, metric: str | None = None, task: str | None = None,
    grid_share: float = 0.2, seed: int = 0, max_step: float = 0.1, batch_size: int = 32,
    source: dict[str, Any] | None = None,
) -> ExitConfig:
    """The Python equivalent of `hf-multiexit calibrate`: calibrates every strategy in `strategies` on `dataset`
    (tokenised, with labels; never the evaluation set) and returns `model.exit_config` updated to the one with the
    largest calibrated layer speed-up, its `calibration` record filled in (`source` describes the data). The model
    is not changed; save the result with `save_pretrained` or assign it to `model.exit_config`.

    `criterion="agreement"`: risk = disagreement rate with the final exit; `"metric"`: the drop of `metric`
    (default: the task's primary metric), certified for accuracy through `1[early wrong AND final right]` and only
    empirical (`delta=0`) for the others. When no strategy certifies anything, the rule is full depth
    (`exit_strategy="none"`) and the record says `fallback: true`."""
    from .evaluation import all_exit_logits

    strategies = check_calibration_options(max_drop, delta, criterion, ",".join(strategies), metric, task)
    config = model.config
    regression = resolve_problem_type(config) == REGRESSION
    metric = check_metric(metric, task, config.num_labels) or (
        primary_metric(task or ("regression" if regression else "classification"), regression)
        if criterion == "metric" else None
    )
    logits, labels = all_exit_logits(model, dataset, collator, batch_size)
    if labels is None and criterion == "metric":
        raise ValueError("criterion='metric' needs labelled calibration samples; these have no labels.")
    grid, test = _grid_and_test(len(logits), grid_share, seed)
    base = model.exit_config
    results = {
        name: calibrate_strategy(
            logits[test], config, name, max_drop=max_drop, delta=delta, criterion=criterion,
            labels=None if labels is None else labels[test], metric=metric or "accuracy",
            grid_logits=None if grid is None else logits[grid], max_step=max_step, exit_config=base,
        )
        for name in strategies
    }
    # Ties go to the first strategy listed; full depth (speed-up 1) only when every strategy fell back.
    best = max(results, key=lambda name: results[name].layer_speedup)
    chosen = results[best]
    record = {
        "method": "learn_then_test" if delta > 0 else "empirical",
        "criterion": criterion, "metric": metric, "max_drop": max_drop, "delta": delta,
        "p_value_method": chosen.p_value_method, "n": chosen.n, "strategy": None if chosen.fallback else best,
        "fallback": chosen.fallback, "empirical_risk": chosen.empirical_risk, "p_value": chosen.p_value,
        "layer_speedup": chosen.layer_speedup, "avg_exit_layer": chosen.avg_exit_layer,
        "grid": {"source": "calibration samples held apart from the test" if grid is not None
                 else "the tested calibration samples", "n": len(test) if grid is None else len(grid),
                 "grid_share": grid_share, "seed": seed, "max_step": max_step},
        "data": source or {},
        "strategies": {name: _strategy_summary(result) for name, result in results.items()},
    }
    return base.update(**chosen.setting, calibration=json.loads(json.dumps(record)))


def check_calibration_options(
    max_drop: float, delta: float, criterion: str, strategies: str, metric: str | None, task: str | None,
    prefix: str = "",
) -> list[str]:
    """Checks the calibration options before anything is loaded or trained, naming each flag as `--{prefix}name`
    (`prefix="calibrate_"` for the training options); returns the list of strategies."""
    strategy_list = [name.strip() for name in strategies.split(",") if name.strip()]
    unknown = [name for name in strategy_list if name not in STRATEGIES]
    if unknown or not strategy_list:
        raise ValueError(
            f"--{prefix}strategies={strategies!r}: {unknown or 'none given'}; valid strategies are {list(STRATEGIES)}."
        )
    if criterion not in CRITERIA:
        raise ValueError(f"--{prefix}criterion={criterion!r} is not one of {list(CRITERIA)}.")
    if not 0.0 < max_drop < 1.0:
        raise ValueError(f"--{prefix}max_drop={max_drop!r} is out of range: it must lie in (0, 1), e.g. 0.01.")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"--{prefix}delta={delta!r} is out of range: it must lie in [0, 1) (0: empirical pick).")
    check_metric(metric, task)
    metric = metric or (GLUE_TASKS[task].primary_metric if task in GLUE_TASKS else None)
    if criterion == "metric" and delta > 0 and metric is not None and metric not in PER_SAMPLE_METRICS:
        raise ValueError(
            f"--{prefix}criterion metric with metric={metric!r} and --{prefix}delta {delta}: {metric} is not a mean "
            "of per-sample scores, so Learn-then-Test cannot certify its drop. Use criterion agreement, metric "
            "accuracy, or delta 0 (empirical, no guarantee)."
        )
    return strategy_list


@dataclass
class CalibrateArguments:
    """`hf-multiexit calibrate`: choose and save a trained model's exit rule on held-out data (module docstring)."""

    model: str = field(metadata={"help": "A saved multi-exit model folder (hf-multiexit train --output_dir)."})
    max_drop: float = field(metadata={
        "help": "Risk budget in (0, 1): the largest disagreement rate with full depth (agreement) or accuracy drop "
                "(metric) the saved rule may have on new data, e.g. 0.01 = one point."})
    delta: float = field(default=0.1, metadata={
        "help": "Error level in [0, 1): the budget holds with probability at least 1 - delta over the calibration "
                "draw. 0: the plain empirical pick on the calibration samples, without a guarantee."})
    criterion: str = field(default="agreement", metadata={
        "help": f"One of {list(CRITERIA)}: disagreement with the model's full depth (needs no labels to mean "
                "something, holds for any metric), or the drop of --metric (accuracy certified; others need --delta 0)."})
    strategies: str = field(default=",".join(DEFAULT_STRATEGIES), metadata={
        "help": f"Comma-separated strategies to calibrate, from {list(STRATEGIES)}; the fastest certified one is saved."})
    metric: str | None = field(default=None, metadata={
        "help": f"Metric of --criterion metric, one of {list(METRICS)} (default: the task's primary metric, else "
                "accuracy / pearson)."})
    task: str | None = field(default=None, metadata={
        "help": "GLUE task: calibrate on the training examples held out by `hf-multiexit train --calibration_split` "
                "(recorded in the model folder). Without --task and --calibration_file, the recorded split is used."})
    data_dir: str | None = field(default_factory=lambda: os.environ.get("GLUE_DIR"), metadata={
        "help": "GLUE folder with the official TSV files (default: the one recorded at training, else $GLUE_DIR)."})
    calibration_file: str | None = field(default=None, metadata={
        "help": "CSV/TSV/JSON(L) file of labelled examples the model neither trained on nor will be evaluated on."})
    text_columns: list[str] = field(default_factory=lambda: ["sentence"], metadata={"help": "Text column(s) of the file."})
    label_column: str = field(default="label", metadata={"help": "Label column of the file."})
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per example of the file."})
    grid_share: float = field(default=0.2, metadata={
        "help": "Share in [0, 1) of the calibration samples that only places the candidate thresholds (seeded), "
                "the rest being tested; 0 places them on the tested samples (the guarantee then is approximate)."})
    max_step: float = field(default=0.1, metadata={
        "help": "Largest layer speed-up step between consecutive candidate thresholds."})
    seed: int = field(default=0, metadata={"help": "Seed of the grid/test division of the calibration samples."})
    batch_size: int = field(default=32, metadata={"help": "Inference batch size of the all-exits pass."})

    def __post_init__(self):
        from .io import check_model_path

        self.strategy_list = check_calibration_options(
            self.max_drop, self.delta, self.criterion, self.strategies, self.metric, self.task
        )
        if not 0.0 <= self.grid_share < 1.0:
            raise ValueError(f"--grid_share={self.grid_share!r} is out of range: it must lie in [0, 1).")
        if not self.max_step > 0:
            raise ValueError(f"--max_step={self.max_step!r} must be > 0.")
        if self.task is not None and self.calibration_file is not None:
            raise ValueError("Give --task (the recorded held-out split) or --calibration_file, not both.")
        for name in ("batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be a positive integer.")
        check_model_path(self.model, "--model", "the --output_dir of `hf-multiexit train`", hub_id=False)
        if self.calibration_file is not None:
            _refuse_evaluation_file(self.calibration_file, _read_split_record(self.model))


def _read_split_record(model_dir: str) -> dict[str, Any] | None:
    path = os.path.join(model_dir, CALIBRATION_SPLIT_NAME)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _refuse_evaluation_file(path: str, record: dict[str, Any] | None) -> None:
    """Refuses a calibration file that is an evaluation set: a GLUE dev file, or the training run's validation file."""
    real = os.path.realpath(path)
    validation = (record or {}).get("data", {}).get("validation_file")
    is_glue_dev = os.path.basename(real) in _GLUE_DEV_FILES and os.path.basename(os.path.dirname(real)) in _GLUE_FOLDERS
    if is_glue_dev or (validation is not None and os.path.realpath(validation) == real):
        what = "a GLUE dev file" if is_glue_dev else "the validation file the model was evaluated on in training"
        raise ValueError(
            f"--calibration_file {path} is {what}: an exit rule chosen on the evaluation set leaves no honest "
            "measurement of it. Calibrate on held-out training data (`hf-multiexit train --calibration_split 0.1`, "
            "then --task) or on a file of other labelled examples."
        )


def _recorded_split(args: CalibrateArguments, tokenizer):
    """The held-out training examples recorded in the model folder, read again and checked by fingerprint."""
    from .train import DataArguments, load_datasets

    record = _read_split_record(args.model)
    if record is None:
        raise ValueError(
            f"--model {args.model} has no {CALIBRATION_SPLIT_NAME}: it was trained without a held-out calibration "
            "split, and the evaluation (dev) set is never used to choose the rule. Give --calibration_file F with "
            "labelled examples it neither trained on nor will be evaluated on, or retrain with "
            "`hf-multiexit train ... --calibration_split 0.1 [--calibrate_max_drop 0.01]`."
        )
    data = dict(record["data"])
    task = data.pop("task")
    if args.task is not None and task != args.task:
        raise ValueError(f"--task {args.task}, but {args.model}'s calibration split was held out of {task or 'files'}.")
    if args.data_dir is not None and task is not None:
        data["data_dir"] = args.data_dir
    train, _, _ = load_datasets(DataArguments(**data), task, tokenizer)
    if dataset_fingerprint(train) != record["fingerprint"]:
        raise ValueError(
            f"The training data read now ({task or data.get('train_file')}, {len(train)} examples) differs from the "
            f"data {args.model} was trained on (fingerprint in {CALIBRATION_SPLIT_NAME}): the recorded indices would "
            "point at other examples. Pass the --data_dir used in training, or --calibration_file."
        )
    return train.select(record["indices"]), {"source": "held-out training split", "task": task, **data,
                                             "share": record["share"], "seed": record["seed"]}, task


def run_calibration(args: CalibrateArguments) -> dict[str, Any]:
    """Loads the model and the calibration samples, calibrates, then writes the model's `exit_config.json`
    atomically (the only file written, and only once everything succeeded); returns the calibration record."""
    from transformers import AutoTokenizer

    from .data import load_text_files, make_collator
    from .evaluation.command import trained_model_config
    from .models.multiexit_bert import AUTO_FAMILIES

    config = trained_model_config(args.model, "calibrate", "no rule chosen on them could be trusted")
    model = AUTO_FAMILIES[type(config)][1].from_pretrained(args.model, config=config)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    task = args.task
    if args.calibration_file is not None:
        names = None if config.num_labels == 1 else [config.id2label[i] for i in range(config.num_labels)]
        dataset = load_text_files(
            validation_file=args.calibration_file, text_columns=tuple(args.text_columns),
            label_column=args.label_column, label_names=names, tokenizer=tokenizer, max_length=args.max_length,
        )["validation"]
        source = {"source": "file", "calibration_file": os.path.abspath(args.calibration_file)}
    else:
        dataset, source, task = _recorded_split(args, tokenizer)
    exit_config = calibrate_model(
        model, dataset, make_collator(tokenizer), max_drop=args.max_drop, delta=args.delta, criterion=args.criterion,
        strategies=args.strategy_list, metric=args.metric, task=task, grid_share=args.grid_share, seed=args.seed,
        max_step=args.max_step, batch_size=args.batch_size, source=source,
    )
    exit_config.save_pretrained(args.model)
    return {"exit_rule": {k: v for k, v in exit_config.to_dict().items() if k != "calibration"},
            "calibration": exit_config.calibration}
