#!/usr/bin/env python
"""Issue 19's ablations: one run per changed default, against the method's default run, same budget and seed.

    .venv/bin/python benchmarks/ablations.py                          # every arm on SST-2 and STS-B: hours
    .venv/bin/python benchmarks/ablations.py --tasks sst2 --arms leebert,leebert-all   # a part of it
    .venv/bin/python benchmarks/ablations.py --list                   # the arms and what each one tests

Each arm is `hf-multiexit train` of one method with the shared budget below plus the arm's options (the default arm
of a method: none), trained into `runs/ablations/<task>-<arm>/` and skipped when its `eval_results.json` exists, so
an interrupted run resumes. DeeBERT's final exit (plain fine-tuning: its first stage trains the backbone and the final
classifier alone) is the reference every method's full depth is read against. For SmartBERT on a classification
task, the saved rule (skip gates on, then entropy exit) is also measured on dev: metric and layer speed-up, replayed
from one all-exits pass.

The second task is STS-B: the joint methods' final exit fell furthest below plain fine-tuning there in
`benchmarks/run_all.py` (RomeBERT 0.809, LeeBERT 0.759 against 0.838 Pearson), and it is a regression task, so a
default that only helps classification shows. One run each, seed 42 (the `-seed-43` arms show the spread): SST-2's
dev set (872 sentences) has a standard error of about 1.2 points of accuracy, so a difference below ~2 points is
within noise, and the table says so. CoLA (not in `MAIN_TASKS`) only has the reference, PABEE and LeeBERT.

Results: `benchmarks/results/ablations.json` and `ablations.md` (every command). An invocation adds its rows to the
rows already there and skips an arm whose committed row ran the arm's current flags (`--rerun` trains it again and
replaces the row: needed after a method's default changed). The run folders do not travel with the repository, so the
committed file is the record, and a later invocation completes it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from harness import rows_by_task
from harness import write_results as write_benchmark_results
from training_runs import DEFAULT_GLUE_DIR, ROOT, train_run

from hf_multiexit.io import atomic_write_json

TASKS = {"sst2": ["--max_train_samples", "2048", "--max_length", "64"],
         "stsb": ["--max_train_samples", "2048", "--max_length", "128"],
         "cola": ["--max_train_samples", "4096", "--max_length", "64"]}
MAIN_TASKS = ("sst2", "stsb")
"""The tasks of every arm. CoLA only checks the final exits issue 19 names there (PABEE 0.169 and LeeBERT 0.018
against 0.186 in `benchmarks/run_all.py`, with the defaults before it), on run_all's 4096 examples: on 2048 plain
fine-tuning's final exit stayed at MCC 0.047, too close to 0 to tell methods apart."""
BUDGET = ["--num_train_epochs", "2", "--learning_rate", "1e-4", "--exit_learning_rate", "1e-3", "--warmup_steps", "0.1",
          "--exit_pooling", "mean"]
"""run_all.py's budget on half its training examples: 2 epochs, lr 1e-4 (exits 1e-3), 10% warm-up, mean-pooled
exits, seed 42, batch 32; SmartBERT's second stage gets the same 2 epochs."""


@dataclass(frozen=True)
class Arm:
    method: str
    options: tuple[str, ...] = ()
    """Flags added to the budget; a flag the budget already sets takes the arm's value instead."""
    tests: str = "the method's defaults"
    tasks: tuple[str, ...] = MAIN_TASKS
    """The tasks where the arm changes something (an option for classification only does nothing on STS-B)."""


def variants(method: str, default_tasks: tuple[str, ...] = MAIN_TASKS, **arms: tuple[str, ...]) -> dict[str, Arm]:
    """The method's default arm (on `default_tasks`), then one arm per factor: `name=(options, what it tests[, its
    tasks...])`, named `<method>-<name>` with `_` written `-`."""
    return {method: Arm(method, tasks=default_tasks),
            **{f"{method}-{name.replace('_', '-')}": Arm(method, tuple(options.split()), tests, tuple(only) or MAIN_TASKS)
               for name, (options, tests, *only) in arms.items()}}


ARMS = {
    "deebert": Arm("deebert", tests="the reference: plain fine-tuning's final exit", tasks=tuple(TASKS)),
    # The run-to-run spread at this budget, here and in PABEE's seed-43 arm: another seed changes the exits'
    # initialisation, the dropout masks and the data order.
    "deebert-seed-43": Arm("deebert", ("--seed", "43"), "the reference with seed 43 (spread)"),
    # Not a change of issue 19: plain fine-tuning with SmartBERT's exit head, to measure how much of SmartBERT's
    # final-exit gap the attention head alone accounts for (SmartBERT refuses other heads, so this is the one way).
    "deebert-attention-head": Arm("deebert", ("--exit_head", "attention"),
                                  "plain fine-tuning with SmartBERT's attention exit head (diagnostic)"),
    # The joint methods' final exit (issue 19's last point): one factor each.
    **variants("pabee", tuple(TASKS), seed_43=("--seed 43", "PABEE's defaults with seed 43 (spread)"),
               exit_lr_backbone=("--exit_learning_rate 1e-4", "exit learning rate: the backbone's instead of 10x"),
               final_heavy=("--exit_loss_weights 1 2 3 4 5 15",
                            "loss weights: the final exit half of the total (PABEE's j-weights give it 0.29)"),
               cls_pooling=("--exit_pooling cls", "exit pooling: the [CLS] token instead of the token mean")),
    **variants("romebert", t1=("--temperature 1", "distillation temperature 1 instead of 3 (classification only: "
                               "no temperature on regression)", "sst2"),
               regression_distillation=("--regression_distillation true", "the exits distil the final exit's value by "
                                        "squared error (regression only; earlier)", "stsb"),
               seed_43=("--seed 43", "RomeBERT's defaults with seed 43 (spread)"),
               regression_distillation_seed_43=("--regression_distillation true --seed 43",
                                                "regression distillation with seed 43 (spread)", "stsb"),
               swap_groups=("--gp_swap_groups true", "gradient projection: the exits' gradient projected off the "
                            "final exit's, not the final exit's off the exits'"),
               # Not changes of issue 19: which of RomeBERT's terms costs its final exit on STS-B.
               no_projection=("--gradient_regularization none", "no gradient projection: the summed gradients "
                              "(diagnostic)"),
               labels_only=("--gamma 0", "the exits learn from the labels alone, no self-distillation (diagnostic)")),
    **variants("leebert", tuple(TASKS), all=("--weight_scheme all", "one softmax over all 36 terms (earlier weights)"),
               sgd=("--unroll_step sgd", "DARTS' plain SGD virtual step (earlier unroll)"),
               # Not a change of issue 19: what the distillation terms cost the final exit (then PABEE's label
               # weights with a held-out fifth of the data).
               no_distillation=("--distillation_weight 0", "label terms alone, no distillation (diagnostic)"),
               small_holdout=("--bilevel_split 0.05", "a twentieth held out for the cross-level step instead of a "
                              "fifth (diagnostic: what training on 80% of the data costs)"),
               single_level=("--clo_mix 1", "single-level weight learning: no hold-out, the model trains on all "
                             "the data (diagnostic)", *TASKS),
               single_level_no_distillation=("--clo_mix 1 --distillation_weight 0", "neither hold-out nor "
                                             "distillation: PABEE's objective on all the data (diagnostic)"),
               seed_43=("--seed 43", "LeeBERT's defaults with seed 43 (spread)"),
               single_level_seed_43=("--clo_mix 1 --seed 43", "single-level with seed 43 (spread)")),
    **variants("curriculum",
               independent=("--curriculum_sampling independent", "each step draws from the pool on its own (earlier "
                            "sampler)"),
               loss=("--difficulty_scorer loss", "difficulty = plain mean of the exits' losses (earlier scorer)"),
               restart=("--shared_schedule false", "optimizer and schedule restart at the curriculum stage (earlier)")),
    **variants("smartbert",
               unscaled_reward=("--skip_reward_reference_layers 6",
                                "the released skip reward, unscaled (reference depth = MiniLM's 6 layers)"),
               gate_lr_backbone=("--gate_learning_rate 1e-4", "gates at the backbone's rate (earlier), not the released "
                                 "2e-5"),
               seed_43=("--seed 43", "SmartBERT's defaults with seed 43 (spread)"),
               gate_lr_backbone_seed_43=("--gate_learning_rate 1e-4 --seed 43", "gates at the backbone's rate with "
                                         "seed 43 (spread)"),
               no_min_hard=("--min_hard_gate_epochs 0", "soft_gate_fraction alone (0.8 of 2 epochs soft; earlier)"),
               selection=("--selection_split 0.1", "best epoch per stage on a tenth of the training data"),
               # Not changes of issue 19: what in stage 1 costs the final exit its accuracy against plain fine-tuning.
               no_contrastive=("--stage1_contrastive_weight 0", "stage 1 without its InfoNCE term (eta1 = 0)"),
               no_reward=("--skip_lambda 0", "stage 1 without the skip reward (gates trained by the task loss alone)")),
}
METHOD_ARGS = {"smartbert": ["--stage2_num_train_epochs", "2"]}
RESULTS = ROOT / "benchmarks" / "results" / "ablations"


def arm_args(task: str, arm: Arm) -> list[str]:
    """The task's and the budget's flags, then the method's and the arm's; a flag given twice keeps its last value."""
    flags: dict[str, list[str]] = {}
    for argv in (TASKS[task], BUDGET, METHOD_ARGS.get(arm.method, []), arm.options):
        for token in argv:
            if token.startswith("--"):
                flags[token] = values = []
            else:
                values.append(token)
    return [token for flag, values in flags.items() for token in (flag, *values)]


def smartbert_gates_on(out: Path, task: str, glue_dir: str) -> dict | None:
    """The saved rule (skip gates on, then entropy exit) on dev, replayed from one all-exits pass and kept in
    `out/gates_on.json`, so a resumed run does not score every finished arm again."""
    cached = out / "gates_on.json"
    if cached.exists():
        return json.loads(cached.read_text())
    result = _smartbert_gates_on(out, task, glue_dir)
    atomic_write_json(cached, result)
    return result


def _smartbert_gates_on(out: Path, task: str, glue_dir: str) -> dict | None:
    from transformers import AutoTokenizer

    from hf_multiexit import MultiExitBertForSequenceClassification
    from hf_multiexit.data import get_glue_task, load_glue, make_collator
    from hf_multiexit.evaluation import TradeoffEvaluator

    model = MultiExitBertForSequenceClassification.from_pretrained(out).eval()
    rule = model.exit_config
    if rule.exit_strategy != "skip":  # regression: the saved rule fell back to patience
        return None
    tokenizer = AutoTokenizer.from_pretrained(out)
    split = get_glue_task(task).validation_splits[0]
    max_length = int(TASKS[task][TASKS[task].index("--max_length") + 1])
    data = load_glue(task, data_dir=glue_dir, tokenizer=tokenizer, max_length=max_length, splits=split)[split]
    evaluator = TradeoffEvaluator(model, data, make_collator(tokenizer), task=task, batch_size=32)
    point = evaluator.point("skip", rule.entropy_threshold, wall_clock=False)
    return {"metrics": point["metrics"], "layer_speedup": point["layer_speedup"], "rule": rule.to_dict()}


def merged(earlier: list[dict], row: dict) -> list[dict]:
    """`earlier` with `row` in place of the row of the same task and arm, rows in the order of `TASKS` and `ARMS`
    (a row of an arm since removed from `ARMS` is dropped: its command no longer exists)."""
    rows = {(r["task"], r["arm"]): r for r in earlier if r["task"] in TASKS and r["arm"] in ARMS}
    rows[row["task"], row["arm"]] = row
    return [rows[key] for key in ((task, arm) for task in TASKS for arm in ARMS) if key in rows]


def write_results(rows: list[dict]) -> None:
    lines = ["# Issue 19 ablations (`benchmarks/ablations.py`)",
             "MiniLM-L6, one run per arm, seed 42 (43 in the `-seed-43` arms), batch 32, budget `" + " ".join(BUDGET)
             + "` on 2048 training examples. Full depth = the final exit's dev metric; reference = DeeBERT's final "
             "exit (plain fine-tuning). One seed per arm: on SST-2 dev a difference under ~2 points of accuracy is "
             "within noise; the `-seed-43` arms show the spread between training runs. `train s` "
             "is each run's wall-clock as it happened, other jobs on the machine included: not a cost comparison.", ""]
    for task, task_rows in rows_by_task(rows, TASKS):
        reference = next((r["full_depth"] for r in task_rows if r["arm"] == "deebert"), None)
        lines += [f"## {task} ({task_rows[0]['metric']})", "",
                  "| arm | tests | full depth | vs reference | mean of exits | SmartBERT gates on: metric, layer speed-up | train s |",
                  "|---|---|---:|---:|---:|---|---:|"]
        for r in task_rows:
            gap = "–" if reference is None else f"{r['full_depth'] - reference:+.3f}"
            gates = r.get("gates_on")
            gates_text = "–" if not gates else f"{gates['metrics'][r['metric']]:.3f}, {gates['layer_speedup']:.2f}x"
            lines.append(f"| {r['arm']} | {ARMS[r['arm']].tests} | {r['full_depth']:.3f} | {gap} | "
                         f"{r['mean_of_exits']:.3f} | {gates_text} | {r['train_runtime']:.0f} |")
        missing = [name for name, arm in ARMS.items() if task in arm.tasks and name not in {r["arm"] for r in task_rows}]
        lines += ["", *([f"Not run on {task}: {', '.join(missing)}.", ""] if missing else []),
                  "Commands:", "", *[f"- `{r['command']}`" for r in task_rows], ""]
    write_benchmark_results(RESULTS, {"budget": BUDGET, "tasks": TASKS, "results": rows}, lines)
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"Comma-separated, from {list(TASKS)}.")
    parser.add_argument("--arms", default=",".join(ARMS), help="Comma-separated arm names (--list shows them).")
    parser.add_argument("--list", action="store_true", help="Print the arms and exit.")
    parser.add_argument("--rerun", action="store_true",
                        help="Train the arms again even where the committed results hold a row with the same flags.")
    parser.add_argument("--glue_dir", default=DEFAULT_GLUE_DIR)
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / "ablations"))
    args = parser.parse_args()
    if args.list:
        for name, arm in ARMS.items():
            print(f"{name:34s} {arm.method:11s} {' '.join(arm.options) or '(defaults)':45s} {arm.tests}")
        return
    tasks, arms = args.tasks.split(","), args.arms.split(",")
    unknown = [t for t in tasks if t not in TASKS] + [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown task(s) or arm(s) {unknown}; tasks: {list(TASKS)}, arms: {list(ARMS)}")
    committed = Path(f"{RESULTS}.json")
    rows = json.loads(committed.read_text())["results"] if committed.exists() else []
    for task in tasks:
        for name in arms:
            arm, out = ARMS[name], Path(args.runs_dir) / f"{task}-{name}"
            if task not in arm.tasks:
                print(f"{name}: not applicable to {task}", flush=True)
                continue
            if args.rerun:
                shutil.rmtree(out, ignore_errors=True)  # train_run would reuse a finished run's report
            elif any(r["task"] == task and r["arm"] == name and r["command"].endswith(" ".join(arm_args(task, arm)))
                     for r in rows):
                continue
            report, command = train_run(arm.method, task, out, arm_args(task, arm), args.glue_dir)
            metric = report["primary_metric"]
            per_exit = [entry["metrics"][metric] for entry in report["per_exit"]]
            rows = merged(rows, {
                "task": task, "arm": name, "method": arm.method, "metric": metric, "full_depth": per_exit[-1],
                "mean_of_exits": float(np.mean(per_exit)), "per_exit": per_exit, "train_runtime": report["train_runtime"],
                "command": command,
                "gates_on": smartbert_gates_on(out, task, args.glue_dir) if arm.method == "smartbert" else None})
            write_results(rows)


if __name__ == "__main__":
    main()
