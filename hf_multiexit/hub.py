"""Publishing multi-exit models on the Hugging Face Hub: a generated model card and one commit holding everything
`AutoModelForSequenceClassification.from_pretrained(repo_id, trust_remote_code=True)` needs.

    hf-multiexit push --model O --repo_id org/name [--private] [--report report.json] [--method M]
        [--base_model ID] [--license L] [--card_only README.md]

The upload is a single commit: weights (safetensors), `config.json` with its `auto_map`, the modeling files,
`exit_config.json`, the tokenizer, `eval_results.json` and the report (when there are any), the trade-off plot, and
`README.md`, a card rendered from `templates/model_card.md` with `huggingface_hub.ModelCard`. The card's numbers come
from `hf-multiexit evaluate`'s `report.json` (per-exit table, trade-off table and plot) and/or the training run's
`eval_results.json` (per-exit table only). `MultiExitTrainer.push_to_hub` (Trainer's `--push_to_hub`) goes through
`push_model` too, so both routes publish the same files and card.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from importlib import resources
from types import SimpleNamespace
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoConfig

from .tasks import GLUE_TASKS, get_glue_task
from .io import atomic_write_text, check_model_path
from .models.multiexit_bert import AUTO_FAMILIES, EXIT_STRATEGIES, ExitConfig
from .models.multiexit_bert.exit_configuration import EXIT_CONFIG_NAME
from .models.multiexit_bert.exit_strategies import REGRESSION, resolve_problem_type

logger = logging.getLogger(__name__)

MODEL_TYPES = tuple(config_class.model_type for config_class in AUTO_FAMILIES)
AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForSequenceClassification")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "added_tokens.json")
EVAL_RESULTS_NAME = "eval_results.json"
REPORT_NAME = "report.json"
PLOT_NAME = "trade_off.png"
REPORT_FIELDS = ("num_layers", "full_depth", "per_exit", "points")
POINT_FIELDS = ("strategy", "params", "metrics", "avg_exit_layer", "layer_speedup", "flops_speedup", "wall_speedup")
GLUE_DATASET = "nyu-mll/glue"
REPO_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def _method_paper(method: str | None) -> tuple[str | None, str | None, str | None]:
    """Display name, paper and link of a registered training method (its config's `paper`); an unknown method (a
    model trained elsewhere) keeps its name without a paper."""
    from .trainers import METHODS  # the trainers import this module (push at the end of training)

    paper = METHODS[method][0].paper if method in METHODS else None
    return (method, None, None) if paper is None else (paper.name, paper.title, paper.url)


@dataclass
class PushArguments:
    """Flags of `hf-multiexit push`: upload a trained multi-exit model and its generated model card to the Hugging
    Face Hub (one commit), or with `--card_only` write the card and upload nothing."""

    model: str = field(metadata={"help": "Saved multi-exit model folder (hf-multiexit train --output_dir)."})
    repo_id: str = field(metadata={"help": "Hub model repo, 'org/name' (created if missing)."})
    private: bool = field(default=False, metadata={"help": "Create the repo private (no effect if it exists)."})
    report: str | None = field(default=None, metadata={
        "help": "report.json of hf-multiexit evaluate: trade-off table and plot in the card."})
    method: str | None = field(default=None, metadata={
        "help": "Training method, for a model saved without eval_results.json (card text)."})
    base_model: str | None = field(default=None, metadata={
        "help": "Hub id of the backbone it was fine-tuned from (card metadata)."})
    license: str | None = field(default=None, metadata={
        "help": "License of the weights (card metadata), e.g. the backbone's: apache-2.0."})
    revision: str | None = field(default=None, metadata={"help": "Branch to commit to (default: main)."})
    card_only: str | None = field(default=None, metadata={"help": "Write the card to this path and upload nothing."})

    @property
    def card_kwargs(self) -> dict[str, str | None]:
        return {"report": self.report, "method": self.method, "base_model": self.base_model, "license": self.license}


class PushError(OSError):
    """The Hub refused or failed an upload; the message names the repo and what to do. An `OSError`, so that the
    command line reports it as an error message (also when `hf-multiexit train --push_to_hub` fails at the end)."""


# ------------------------------------------------------------------------------------------------- checking inputs
def check_repo_id(repo_id: str) -> str:
    """Returns `repo_id` if it is a Hub model id of the form `org/name`; raises `ValueError` naming it otherwise."""
    if (
        not isinstance(repo_id, str)
        or not REPO_ID_PATTERN.fullmatch(repo_id)
        or len(repo_id) > 96
        or ".." in repo_id
        or "--" in repo_id
        or repo_id.endswith((".", "-", ".git"))
    ):
        raise ValueError(
            f"repo_id={repo_id!r} is not a valid Hub model id: expected 'org/name' (your user name or an "
            "organisation, a slash, then letters, digits, '-', '_' or '.', at most 96 characters, no '--' or '..'), "
            "e.g. 'my-org/romebert-minilm-l6-sst2'."
        )
    return repo_id


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {what}.") from err


def check_model_folder(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Returns the `config.json` of a saved multi-exit model after checking that the folder holds everything the
    Hub copy needs; raises `FileNotFoundError` / `ValueError` naming the folder, what is missing and how to fix it."""
    model_dir = os.fspath(model_dir)
    expected = "the --output_dir of `hf-multiexit train` or a folder written by `model.save_pretrained`"
    check_model_path(model_dir, "Model folder", expected, hub_id=False)
    if not os.path.isdir(model_dir):
        raise NotADirectoryError(f"Model folder {model_dir!r} is a file, not a folder; pass {expected}.")
    fix = ("save it with MultiExitBertForSequenceClassification.save_pretrained (e.g. `hf-multiexit train "
           "--output_dir`), which writes the weights, config with auto_map, modeling files and exit_config.json")
    config_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{model_dir!r} is not a multi-exit model folder: it has no config.json; {fix}.")
    config = _read_json(config_path, fix)
    if not isinstance(config, dict) or config.get("model_type") not in MODEL_TYPES:
        found = config.get("model_type") if isinstance(config, dict) else None
        raise ValueError(
            f"{model_dir!r} is not a multi-exit model folder: config.json has model_type={found!r}, expected one of "
            f"{list(MODEL_TYPES)}. Load it with MultiExitBertForSequenceClassification.from_pretrained({model_dir!r}, "
            "num_labels=N) (BERT; other backbones: MultiExitModelForSequenceClassification), train it, and "
            "save_pretrained the result."
        )
    auto_map = config.get("auto_map") or {}
    missing = [name for name in AUTO_CLASSES if name not in auto_map]
    modules = sorted({ref.split(".")[0] + ".py" for ref in auto_map.values()})
    missing += [name for name in modules + [EXIT_CONFIG_NAME] if not os.path.isfile(os.path.join(model_dir, name))]
    if not any(name.endswith(".safetensors") for name in os.listdir(model_dir)):
        missing.append("*.safetensors weights")
    if not any(os.path.isfile(os.path.join(model_dir, name)) for name in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.save_pretrained(folder))")
    if missing:
        raise ValueError(f"{model_dir!r} is not a complete multi-exit model folder: missing {missing}; {fix}.")
    return config


def files_to_upload(model_dir: str) -> list[str]:
    """The model's own files in `model_dir`: weights, configs, modeling code and tokenizer (not training state such as
    `training_args.bin`, checkpoints or logs)."""
    names = []
    for name in sorted(os.listdir(model_dir)):
        if not os.path.isfile(os.path.join(model_dir, name)) or name.startswith("."):
            continue
        if (
            name.endswith((".safetensors", ".py"))
            or name in ("config.json", "model.safetensors.index.json", EXIT_CONFIG_NAME, EVAL_RESULTS_NAME)
            or name in TOKENIZER_FILES
        ):
            names.append(name)
    return names


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Reads an `hf-multiexit evaluate` report and checks the fields the card uses."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Report {path!r} does not exist; write one with `hf-multiexit evaluate ... --output {path}`.")
    fix = f"write it with `hf-multiexit evaluate ... --output {path}`"
    report = _read_json(path, fix)
    missing = [name for name in REPORT_FIELDS if not isinstance(report, dict) or name not in report]
    if not missing:
        missing = [f"points[{i}].{name}" for i, point in enumerate(report["points"]) for name in POINT_FIELDS if name not in point]
    if missing:
        raise ValueError(f"{path} is not an hf-multiexit evaluate report: it lacks {missing}; {fix}.")
    plot = report.get("plot")
    if plot:
        candidates = [plot] if os.path.isabs(plot) else [os.path.join(os.path.dirname(os.path.abspath(path)), plot), plot]
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            raise FileNotFoundError(
                f"{path} names the plot {plot!r}, which does not exist (looked at {candidates}); re-run "
                "`hf-multiexit evaluate --plot`, or remove the 'plot' field."
            )
        report = {**report, "plot": os.path.abspath(found)}
    return report


# ------------------------------------------------------------------------------------------------- the card
def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for metrics in rows:
        names += [name for name in metrics if name not in names]
    return names


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"`{name}={value}`" for name, value in params.items()) or "-"


def _exit_arguments(exit_config: ExitConfig, regression: bool) -> dict[str, Any]:
    """The saved exit rule's strategy and the arguments that strategy reads for this problem type."""
    strategy = EXIT_STRATEGIES.get(exit_config.exit_strategy)
    names = [n for n in strategy.parameters if regression or n not in strategy.regression_parameters] if strategy else []
    if exit_config.min_exit_layer != ExitConfig().min_exit_layer:
        names.append("min_exit_layer")
    return {"exit_strategy": exit_config.exit_strategy, **{name: getattr(exit_config, name) for name in names}}


def _is_default_point(point: dict[str, Any], exit_config: ExitConfig) -> bool:
    if point["strategy"] != exit_config.exit_strategy:
        return False
    for name, value in point["params"].items():
        saved = getattr(exit_config, name, None)
        if isinstance(value, (int, float)) and isinstance(saved, (int, float)):
            if not math.isclose(value, saved, rel_tol=1e-6, abs_tol=1e-9):
                return False
        elif value != saved:
            return False
    return True


def _primary_metric(task: str | None, results: dict[str, Any], metrics: dict[str, Any]) -> str | None:
    if results.get("primary_metric") in metrics:
        return results["primary_metric"]
    if task in GLUE_TASKS and GLUE_TASKS[task].primary_metric in metrics:
        return GLUE_TASKS[task].primary_metric
    return next(iter(metrics), None)


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _trade_off(report: dict[str, Any], exit_config: ExitConfig, primary: str | None, num_layers: int):
    """`(columns, rows, default point, advice)`: the report's trade-off table with full depth first and the saved
    exit rule marked, that rule's point (None when the sweep missed it), and a sentence naming the fastest point
    within one point of full depth. Points replayed without a timed run have no wall-clock speed-up ("-")."""
    final = report["full_depth"]["metrics"]
    columns = _metric_columns([final] + [p["metrics"] for p in report["points"]])
    rows = [["none (full depth)", "-"] + [_number(final.get(c, "")) for c in columns] + [str(num_layers)] + ["1.00x"] * 3]
    default_point = None
    for point in report["points"]:
        is_default = default_point is None and _is_default_point(point, exit_config)
        default_point = point if is_default else default_point
        rows.append(
            [point["strategy"] + (" (saved default)" if is_default else ""), _params_text(point["params"])]
            + [_number(point["metrics"].get(c, "")) for c in columns]
            + [f"{point['avg_exit_layer']:.2f}"]
            + [_times(point[k]) for k in ("layer_speedup", "flops_speedup", "wall_speedup")]
        )
    header = ["strategy", "arguments"] + columns + ["avg. exit layer", "layer speed-up", "FLOPs speed-up",
                                                    "wall-clock speed-up"]
    advice = None
    close = [p for p in report["points"] if primary in final and p["metrics"].get(primary, -math.inf) >= final[primary] - 0.01]
    if close:
        best = max(close, key=lambda p: p["layer_speedup"])
        wall = "" if best["wall_speedup"] is None else f", {best['wall_speedup']:.2f}x wall-clock"
        advice = (f"the fastest setting within 1 point of full depth is `exit_strategy=\"{best['strategy']}\"` with "
                  f"{_params_text(best['params'])}: {primary} {_number(best['metrics'][primary])} vs. "
                  f"{_number(final[primary])} at full depth, {best['layer_speedup']:.2f}x fewer layers{wall}")
    return header, rows, default_point, advice


def _calibration_note(
    record: dict[str, Any] | None, default_point: dict[str, Any] | None, final: dict[str, Any], primary: str | None,
    measured_on: str,
) -> str | None:
    """What the saved rule's calibration record (`ExitConfig.calibration`) claims, next to what the report measured
    for that rule; None for a rule that was not calibrated."""
    if not record:
        return None
    risk = "disagreement with full depth" if record["criterion"] == "agreement" else f"{record['metric']} drop"
    data = record.get("data", {})
    where = ("training examples held out before training" if data.get("source") == "held-out training split"
             else "examples of a calibration file")
    if record["method"] == "learn_then_test":
        claim = (f"its {risk} on new data of the same distribution is at most {record['max_drop']:g} with probability "
                 f"at least {1 - record['delta']:g} (Learn-then-Test, Angelopoulos et al. 2021, as in CALM, Schuster "
                 "et al. 2022)")
    else:
        claim = f"its {risk} was at most {record['max_drop']:g} on those examples (an empirical pick: no guarantee)"
    if record["fallback"]:
        note = (f"`hf-multiexit calibrate` certified no early-exit setting on {record['n']} {where} within a budget "
                f"of {record['max_drop']:g} ({risk}), so the saved rule is full depth.")
    else:
        note = (f"It was chosen by `hf-multiexit calibrate` on {record['n']} {where}, as the fastest of "
                f"{', '.join(record['strategies'])} for which {claim}; there it had a {risk} of "
                f"{record['empirical_risk']:.4f} and {record['layer_speedup']:.2f}x fewer layers.")
    if default_point is not None and primary in final:
        wall = "" if default_point.get("wall_speedup") is None else f", {default_point['wall_speedup']:.2f}x wall-clock"
        note += (f" Measured on {measured_on}: {primary} {_number(default_point['metrics'][primary])} vs. "
                 f"{_number(final[primary])} at full depth, {default_point['layer_speedup']:.2f}x fewer layers{wall}.")
    return note


def _card_eval_results(task: str | None, final: dict[str, Any], default_point: dict[str, Any] | None, num_layers: int):
    """`model-index` entries: the final exit (full depth) and, when the report measured it, the saved exit rule."""
    if task not in GLUE_TASKS:
        logger.warning("Task %r is not a GLUE task: the card gets no model-index results.", task)
        return None
    spec = get_glue_task(task)
    dataset = dict(task_type="text-classification", dataset_type=GLUE_DATASET, dataset_name=f"GLUE {spec.folder}",
                   dataset_config=task, dataset_split=spec.validation_splits[0])
    results = [
        EvalResult(**dataset, metric_type=name, metric_value=value,
                   metric_name=f"{name} (final exit, all {num_layers} layers)")
        for name, value in final.items()
    ]
    if default_point is not None:
        setting = ", ".join(f"{k}={v}" for k, v in default_point["params"].items())
        results += [
            EvalResult(**dataset, metric_type=name, metric_value=value,
                       metric_name=f"{name} (default exit: {default_point['strategy']} {setting}, "
                                   f"{default_point['layer_speedup']:.2f}x fewer layers)")
            for name, value in default_point["metrics"].items()
        ]
    return results


def build_model_card(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    report: str | os.PathLike | dict[str, Any] | None = None,
    eval_results: dict[str, Any] | None = None,
    method: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The model card of the model saved in `model_dir`, to be published as `repo_id`.

    Args:
        report: an `hf-multiexit evaluate` report (path, or the dict `load_report` returns): per-exit table,
            trade-off table and plot, and the default exit rule's result in `model-index`.
        eval_results: the training run's results (default: `model_dir/eval_results.json` when present): per-exit
            table and training method when there is no report.
        method: the training method (`hf-multiexit train --method`), for models saved without `eval_results.json`.
        base_model: Hub id of the backbone the model was fine-tuned from (card metadata).
        license: license of the weights (card metadata), e.g. the backbone's.
    """
    model_dir = os.fspath(model_dir)
    check_repo_id(repo_id)
    config = check_model_folder(model_dir)
    if report is not None and not isinstance(report, dict):
        report = load_report(report)
    if eval_results is None and os.path.isfile(os.path.join(model_dir, EVAL_RESULTS_NAME)):
        eval_results = _read_json(os.path.join(model_dir, EVAL_RESULTS_NAME), "re-run `hf-multiexit train` to rewrite it")
    exit_config = ExitConfig.from_pretrained(model_dir)
    num_labels = config.get("num_labels", len(config.get("id2label") or {}))
    regression = resolve_problem_type(SimpleNamespace(problem_type=config.get("problem_type"), num_labels=num_labels)) == REGRESSION
    exit_rule = _exit_arguments(exit_config, regression)
    # The backbone's layer count: a field of the flat BERT config, derived from the backbone's in the others.
    num_layers = AutoConfig.from_pretrained(model_dir).num_hidden_layers
    exit_layers = config.get("exit_layers") or list(range(1, num_layers + 1))
    training = (eval_results or {}).get("config") or {}
    task = (report or {}).get("task") or training.get("task")
    method = method or (eval_results or {}).get("method") or (report or {}).get("method")
    method_name, paper, paper_url = _method_paper(method)

    per_exit = (report or eval_results or {}).get("per_exit") or []
    exit_columns = _metric_columns([entry["metrics"] for entry in per_exit])
    per_exit_rows = [[str(e["layer"])] + [_number(e["metrics"].get(c, "")) for c in exit_columns] for e in per_exit]
    final = report["full_depth"]["metrics"] if report else (eval_results or {}).get("final") or {}
    primary = _primary_metric(task, report or eval_results or {}, final)

    trade_off_columns, trade_off_rows, default_point, advice = [], [], None, None
    if report:
        trade_off_columns, trade_off_rows, default_point, advice = _trade_off(report, exit_config, primary, num_layers)
    if report and default_point is None:
        logger.warning(
            "The report has no point for the saved exit rule %s, so the card's model-index lists the final exit only; "
            "add that setting to the `hf-multiexit evaluate` sweep to include it.", exit_rule
        )

    tags = ["multi-exit", "early-exit", "bert", "text-classification", "custom_code"] + ([method] if method else [])
    card_data = ModelCardData(
        language="en",
        license=license,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=tags,
        base_model=base_model,
        datasets=[GLUE_DATASET] if task in GLUE_TASKS else None,
        metrics=sorted(final) or None,
        model_name=repo_id.split("/")[-1],
        eval_results=_card_eval_results(task, final, default_point, num_layers) if final else None,
    )
    labels = config.get("id2label") or {}
    template = resources.files("hf_multiexit").joinpath("templates/model_card.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        method_name=method_name,
        paper=paper,
        paper_url=paper_url,
        task_display=f"GLUE {GLUE_TASKS[task].folder}" if task in GLUE_TASKS else task,
        base_model=base_model,
        num_layers=num_layers,
        exit_layers=exit_layers,
        exit_head=config.get("exit_head"),
        exit_pooling=config.get("exit_pooling", "cls"),
        labels=[labels[k] for k in sorted(labels, key=int)] if labels else [],
        exit_rule=exit_rule,
        exit_rule_call=", ".join(f"{k}={v!r}" for k, v in exit_rule.items()),
        per_exit_columns=["exit layer"] + exit_columns,
        per_exit_rows=per_exit_rows,
        per_exit_source=("`report.json`" if report else f"`{EVAL_RESULTS_NAME}`") if per_exit_rows else None,
        trade_off_columns=trade_off_columns,
        trade_off_rows=trade_off_rows,
        plot=PLOT_NAME if report and report.get("plot") else None,
        advice=advice,
        calibration_note=_calibration_note(
            exit_config.calibration, default_point, final, primary,
            f"GLUE {GLUE_TASKS[task].folder} {get_glue_task(task).validation_splits[0]}" if task in GLUE_TASKS
            else "the evaluation set",
        ),
        batch_size=(report or {}).get("batch_size"),
        oracle=((report or {}).get("oracle") or {}).get("agree_final"),
        training=training,
        train_runtime=(eval_results or report or {}).get("train_runtime"),
        strategies={name: list(cls.parameters) for name, cls in EXIT_STRATEGIES.items()},
    )


def save_model_card(model_dir: str | os.PathLike, repo_id: str, output: str | os.PathLike, **card_kwargs) -> str:
    """Writes the card `push_model` would publish to `output` (atomically), without uploading anything."""
    card = build_model_card(model_dir, repo_id, **card_kwargs)
    atomic_write_text(output, str(card))
    return os.fspath(output)


# ------------------------------------------------------------------------------------------------- the upload
def push_model(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    report: str | os.PathLike | None = None,
    eval_results: dict[str, Any] | None = None,
    method: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    endpoint: str | None = None,
    remove_stale: bool = False,
):
    """Uploads the multi-exit model saved in `model_dir` to the Hub model repo `repo_id` (created if needed, `private`
    when created) in one commit with its generated card; returns the `CommitInfo`.

    Everything local is checked and the card is built before anything is sent, and nothing is written locally. If
    the upload fails, a repo this call created is deleted again (or `PushError` says how to delete it, when the Hub
    cannot be reached for that either), and `PushError` says what the Hub answered, or that it gave no answer (a
    dropped connection: then a commit into an existing repo may have landed). `report`, `eval_results`, `method`,
    `base_model` and `license` are as for `build_model_card`.

    `remove_stale=True` also deletes, in the same commit, the repo's files that exist in `model_dir` but are not
    part of the model (what Trainer's checkpoint pushes upload from `output_dir`: `training_args.bin`, logs, stage
    checkpoints), so the repo ends as a plain push leaves it; files that never came from `model_dir` stay.
    """
    model_dir = os.fspath(model_dir)
    report_data = load_report(report) if report is not None else None
    card = build_model_card(model_dir, repo_id, report=report_data, eval_results=eval_results, method=method,
                            base_model=base_model, license=license)
    operations = [CommitOperationAdd(name, os.path.join(model_dir, name)) for name in files_to_upload(model_dir)]
    if report is not None:
        operations.append(CommitOperationAdd(REPORT_NAME, os.fspath(report)))
        if report_data.get("plot"):
            operations.append(CommitOperationAdd(PLOT_NAME, report_data["plot"]))
    operations.append(CommitOperationAdd("README.md", str(card).encode("utf-8")))

    api = HfApi(endpoint=endpoint, token=token)
    created = committing = False
    try:
        # Whether this push creates the repo decides what a failure cleans up (a repo it created must not stay).
        created = not api.repo_exists(repo_id, repo_type="model")
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        if remove_stale and not created:
            uploaded = {op.path_in_repo for op in operations}
            remote = api.list_repo_files(repo_id, revision=revision, repo_type="model")
            local = [name for name in remote if os.path.isfile(os.path.join(model_dir, name))]
            operations += [CommitOperationDelete(name) for name in local if name not in uploaded]
        committing = True
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload multi-exit model from {os.path.basename(os.path.abspath(model_dir))}",
            revision=revision,
            repo_type="model",
        )
    except Exception as err:  # whatever broke the upload, a repo this push created must not stay behind
        raise PushError(_push_failure(api, model_dir, repo_id, revision, err, created, committing)) from err


def _push_failure(api: HfApi, model_dir: str, repo_id: str, revision: str | None, err: Exception, created: bool,
                  committing: bool) -> str:
    """The message of a failed push, after deleting the repo the push created. An error status means the Hub refused
    (the token, the repo); any other error (a dropped connection, a timeout) means it gave no answer, and then a
    commit that was sent may have landed."""
    answered = isinstance(err, HfHubHTTPError)
    cleanup, deleted = "", False
    if created:
        try:
            api.delete_repo(repo_id, repo_type="model", missing_ok=True)
            cleanup, deleted = " The repo this push created was deleted again.", True
        except Exception as delete_err:  # the clean-up must not hide the push's own error, whatever stops it
            cleanup = (f" The repo this push created could not be deleted ({_describe(delete_err)}); delete it with "
                       f"`hf repos delete {repo_id}` or on {api.endpoint}/{repo_id}/settings.")
    certain = answered or deleted or not committing
    state = ", nothing was committed" if certain else ""
    unknown = "" if certain else (f" The Hub gave no answer to the commit, so it may have landed or not: see "
                                  f"{api.endpoint}/{repo_id}/commits/{revision or 'main'}.")
    fix = (f"Check the token's write access to {repo_id.split('/')[0]!r} (`hf auth login` or HF_TOKEN)" if answered
           else f"Check the network connection to {api.endpoint} (and any proxy)")
    return (f"Pushing {model_dir!r} to {repo_id!r} at {api.endpoint} failed{state}: {_describe(err)}.{unknown}"
            f"{cleanup} {fix}, then run the same push again.")


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).rstrip('.')}"


__all__ = ["PushError", "build_model_card", "check_model_folder", "check_repo_id", "load_report", "push_model",
           "save_model_card"]
