"""Times run_inference of one code tree (argv[1], a checkout of this repo) on runs/demo-romebert-sst2 and the first
320 SST-2 dev sentences: fastest of 3 passes per (batch size, rule). Run it alternately on two trees to compare code
versions on one host (benchmarks/results/session6_ab_old_vs_new.md)."""
import sys, time, torch
sys.path.insert(0, sys.argv[1])
import hf_multiexit
assert hf_multiexit.__file__.startswith(sys.argv[1]), hf_multiexit.__file__
from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.data import load_glue, make_collator
from hf_multiexit.evaluation import run_inference
from transformers import AutoTokenizer
torch.set_num_threads(2)
m=MultiExitBertForSequenceClassification.from_pretrained("runs/demo-romebert-sst2").eval()
tok=AutoTokenizer.from_pretrained("runs/demo-romebert-sst2")
ds=load_glue("sst2", data_dir="/work/shared/data/glue", tokenizer=tok, max_length=64)["validation"].select(range(320))
col=make_collator(tok)
for bs in (1,32):
  for rule in ("none","entropy"):
    ts=[]
    for r in range(3):
        t=time.perf_counter(); run_inference(m, ds, col, batch_size=bs, exit_strategy=rule); ts.append(time.perf_counter()-t)
    print(sys.argv[1], bs, rule, round(min(ts),3), flush=True)
