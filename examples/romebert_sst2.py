#!/usr/bin/env python
"""RomeBERT (Gao et al., 2021) end to end: self-distillation from the final exit with gradient projection, then
entropy-based exit.

    python examples/romebert_sst2.py --output_dir out/romebert-sst2
"""

from example_utils import parse_args, reload_and_infer, sst2

from hf_multiexit import MultiExitBertForSequenceClassification, RomeBertConfig, RomeBertTrainer

args = parse_args(__doc__)
tokenizer, train, validation, collator = sst2(args)
model = MultiExitBertForSequenceClassification.from_pretrained(args.model, num_labels=2, exit_head="pooler")
config = RomeBertConfig(
    output_dir=args.output_dir, num_train_epochs=args.epochs, learning_rate=2e-4, per_device_train_batch_size=32,
    task="sst2", gamma=0.9, temperature=3.0, gradient_regularization="gp", report_to=[], save_strategy="no",
)
trainer = RomeBertTrainer(model=model, args=config, train_dataset=train, eval_dataset=validation, data_collator=collator)
trainer.train()
print({k: round(v, 3) for k, v in trainer.evaluate().items() if k.endswith("accuracy")})
trainer.save_model(args.output_dir)
reload_and_infer(args.output_dir, validation, collator, [{"entropy_threshold": 0.2}, {"exit_strategy": "static", "exit_layer": 3}])
