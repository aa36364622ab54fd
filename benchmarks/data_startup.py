#!/usr/bin/env python
"""Start-up cost of reading and tokenising a GLUE task, first run against a second one (issue 20).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/data_startup.py [--task sst2] [--rounds 3]

`hf_multiexit.data.load_glue` reads the files with `datasets.load_dataset` after its validation pass and tokenises
with `Dataset.map`; both results are cached (Arrow files under the datasets cache), so a second run with the same
files, tokenizer and max_length reads the cache instead of parsing and tokenising. Each round runs `load_glue(task,
tokenizer=MiniLM's, max_length=64)` in a fresh Python process twice on a new, empty cache folder: the first run
("cold") fills it, the second ("warm") reads it; only the call is timed, in the child (imports and the tokenizer's
loading are the same in both and left out). Rounds are sequential and nothing else may run meanwhile.

Results: `benchmarks/results/data_startup.json` and `.md`, with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from harness import write_results
from training_runs import DEFAULT_GLUE_DIR, ROOT, backbone_path

CHILD = """
import json, sys, time
from transformers import AutoTokenizer
from hf_multiexit.data import load_glue
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
start = time.perf_counter()
data = load_glue(sys.argv[2], sys.argv[3], tokenizer=tokenizer, max_length=64)
print(json.dumps({"seconds": time.perf_counter() - start, "rows": {k: len(v) for k, v in data.items()}}))
"""


def timed_load(task: str, glue_dir: str, cache: str) -> dict:
    env = dict(os.environ, HF_DATASETS_CACHE=cache, HF_HUB_OFFLINE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    result = subprocess.run([sys.executable, "-c", CHILD, backbone_path(), task, glue_dir], env=env, check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--glue_dir", default=DEFAULT_GLUE_DIR)
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as cache:
            first, second = timed_load(args.task, args.glue_dir, cache), timed_load(args.task, args.glue_dir, cache)
        cold.append(first["seconds"])
        warm.append(second["seconds"])
    ratios = np.array(cold) / np.array(warm)
    result = {"task": args.task, "rows": first["rows"], "cold_seconds": cold, "warm_seconds": warm,
              "cold_over_warm": ratios.tolist()}
    lines = [
        f"# Reading and tokenising {args.task}: first run against a second one",
        f"`load_glue({args.task!r}, tokenizer=MiniLM-L6's, max_length=64)`, {first['rows']} rows, each run in a fresh "
        "process on one new cache folder per round (2 CPU cores, alone on the machine).", "",
        "| run | seconds, median (min-max) |", "|---|---:|",
        f"| first (parse, validate, tokenise; fills the cache) | {np.median(cold):.2f} ({min(cold):.2f}-{max(cold):.2f}) |",
        f"| second (validation pass, then the cache) | {np.median(warm):.2f} ({min(warm):.2f}-{max(warm):.2f}) |",
        "", f"First / second: {np.median(ratios):.1f}x (rounds: {', '.join(f'{r:.1f}x' for r in ratios)}).",
    ]
    write_results(ROOT / "benchmarks" / "results" / "data_startup", result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
