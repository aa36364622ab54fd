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
