#!/usr/bin/env python
"""PABEE (Zhou et al., NeurIPS 2020) end to end: weighted joint loss over all exits, then patience-based exit.

    python examples/pabee_sst2.py --output_dir out/pabee-sst2
"""

from example_utils import parse_args, reload_and_infer, sst2

from hf_multiexit import MultiExitBertForSequenceClassification, PabeeConfig, PabeeTrainer

args = parse_args(__doc__)
tokenizer, train, validation, collator = sst2(args)
# PABEE's head style: the pretrained pooler shared by all exits, one linear classifier per layer.
model = MultiExitBertForSequenceClassification.from_pretrained(args.model, num_labels=2, exit_head="linear")
config = PabeeConfig(
    output_dir=args.output_dir, num_train_epochs=args.epochs, learning_rate=2e-4, per_device_train_batch_size=32,
    task="sst2", patience=2, report_to=[], save_strategy="no", eval_strategy="no",
)
trainer = PabeeTrainer(model=model, args=config, train_dataset=train, eval_dataset=validation, data_collator=collator)
trainer.train()
print({k: round(v, 3) for k, v in trainer.evaluate().items() if k.endswith("accuracy")})
trainer.save_model(args.output_dir)
reload_and_infer(args.output_dir, validation, collator, [{}, {"exit_strategy": "patience", "patience": 1}])
