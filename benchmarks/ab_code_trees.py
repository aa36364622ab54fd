"""Times run_inference of one code tree (argv[1], a checkout of this repo) on runs/demo-romebert-sst2 and the first
320 SST-2 dev sentences: fastest of 3 passes per (batch size, rule). Run it alternately on two trees to compare code
versions on one host (benchmarks/results/session6_ab_old_vs_new.md)."""
import sys

sys.path.insert(0, sys.argv[1])

import hf_multiexit  # noqa: E402
from harness import time_once  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from hf_multiexit import MultiExitBertForSequenceClassification  # noqa: E402
from hf_multiexit.data import load_glue, make_collator  # noqa: E402
from hf_multiexit.evaluation import run_inference  # noqa: E402

assert hf_multiexit.__file__.startswith(sys.argv[1]), hf_multiexit.__file__
model = MultiExitBertForSequenceClassification.from_pretrained("runs/demo-romebert-sst2").eval()
tokenizer = AutoTokenizer.from_pretrained("runs/demo-romebert-sst2")
data = load_glue("sst2", data_dir="/work/shared/data/glue", tokenizer=tokenizer, max_length=64)["validation"].select(range(320))
collator = make_collator(tokenizer)
for batch_size in (1, 32):
    for rule in ("none", "entropy"):
        seconds = min(time_once(lambda: run_inference(model, data, collator, batch_size=batch_size, exit_strategy=rule))
                      for _ in range(3))
        print(sys.argv[1], batch_size, rule, round(seconds, 3), flush=True)
