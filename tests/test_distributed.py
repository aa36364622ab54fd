"""Every trainer on two processes (torch DDP over gloo): two processes with per-device batch b end with the weights
of one process with batch 2b.

The processes are started as `accelerate launch --multi_gpu --num_processes 2` with `use_cpu=True` in the training
arguments: `accelerate launch --cpu --num_processes 2` starts a single process unless MPI is set up (`--cpu` uses
`mpirun` for more than one process, and only with `--mpirun_hostfile`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_multiexit.trainers import METHODS
from toy_training import CASES, DDP_CASES, build_trainer, final_weights

BATCH = 4
WORKER = Path(__file__).with_name("toy_training.py")


@pytest.fixture(scope="module")
def two_process_weights(tmp_path_factory) -> Path:
    """One `accelerate launch` trains every DDP case (the interpreter start-up is the slow part)."""
    output_dir = tmp_path_factory.mktemp("ddp")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(WORKER), "ddp", str(output_dir), str(BATCH),
    ]
    # One thread per process: the two processes share this machine's cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return output_dir


def test_every_method_has_a_ddp_case():
    assert set(METHODS) <= {CASES[case][0] for case in DDP_CASES}


@pytest.mark.slow
@pytest.mark.parametrize("case", DDP_CASES)
def test_two_processes_match_one_process_with_doubled_batch(two_process_weights, tmp_path, case):
    trainer = build_trainer(case, tmp_path, batch=2 * BATCH)
    initial = final_weights(trainer.model)
    trainer.train()
    single = final_weights(trainer.model)
    saved = torch.load(two_process_weights / f"{case}.pt")
    assert saved["world_size"] == 2
    ddp = saved["weights"]
    assert ddp.keys() == single.keys()
    assert any(not torch.equal(single[name], initial[name]) for name in single)  # it trained
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, atol=1e-5, rtol=1e-4, msg=name)
