"""`benchmarks/ablations.py` runs for hours: every arm's command line must parse before the first one trains."""

import sys
from pathlib import Path

import pytest

from hf_multiexit.cli import train_argument_parser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ablations  # noqa: E402
from training_runs import COMMON  # noqa: E402


@pytest.mark.parametrize("name", list(ablations.ARMS))
def test_every_arm_parses_with_its_options(name, tmp_path):
    # The tasks' flags differ only in values no arm sets, so one task stands for both.
    arm, task = ablations.ARMS[name], "stsb"
    parser = train_argument_parser(arm.method)

    def parsed(argv: list[str]) -> dict:
        required = ["--model_name_or_path", "unused", "--task", task, "--output_dir", str(tmp_path)]
        groups = parser.parse_args_into_dataclasses(args=[*required, *argv])
        return {key: value for group in groups for key, value in vars(group).items()}

    with_budget, alone = parsed([*COMMON, *ablations.arm_args(task, arm)]), parsed(list(arm.options))
    # The arm's own flags win over the budget's, whatever the budget sets.
    for flag in (token for token in arm.options if token.startswith("--")):
        assert with_budget[flag[2:]] == alone[flag[2:]]


def test_results_merge_by_task_and_arm_in_table_order():
    """A new row replaces the committed row of its task and arm; rows follow `TASKS` then `ARMS`; a row of an arm
    no longer in `ARMS` is dropped (its command is gone)."""
    committed = [{"task": "stsb", "arm": "pabee", "full_depth": 0.1}, {"task": "sst2", "arm": "romebert"},
                 {"task": "sst2", "arm": "removed-arm"}]
    rows = ablations.merged(committed, {"task": "stsb", "arm": "pabee", "full_depth": 0.2})
    rows = ablations.merged(rows, {"task": "sst2", "arm": "deebert"})
    assert [(r["task"], r["arm"]) for r in rows] == [("sst2", "deebert"), ("sst2", "romebert"), ("stsb", "pabee")]
    assert rows[-1]["full_depth"] == 0.2
