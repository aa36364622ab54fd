#!/usr/bin/env python
"""DeeBERT (Xin et al., ACL 2020) end to end: stage 1 fine-tunes backbone and final classifier, stage 2 (in the
same `train()` call) trains the intermediate exits on the frozen backbone; then entropy-based exit.

    python examples/deebert_sst2.py --output_dir out/deebert-sst2
"""

from example_utils import parse_args, reload_and_infer, sst2

from hf_multiexit import DeeBertConfig, DeeBertTrainer, MultiExitBertForSequenceClassification

args = parse_args(__doc__)
tokenizer, train, validation, collator = sst2(args)
model = MultiExitBertForSequenceClassification.from_pretrained(args.model, num_labels=2, exit_head="pooler")
config = DeeBertConfig(
    output_dir=args.output_dir, num_train_epochs=args.epochs, learning_rate=2e-4, per_device_train_batch_size=32,
    task="sst2", entropy_threshold=0.3, report_to=[], save_strategy="no",
)
trainer = DeeBertTrainer(model=model, args=config, train_dataset=train, eval_dataset=validation, data_collator=collator)
trainer.train()  # both stages
print({k: round(v, 3) for k, v in trainer.evaluate().items() if k.endswith("accuracy")})
trainer.save_model(args.output_dir)
reload_and_infer(args.output_dir, validation, collator, [{}, {"exit_strategy": "confidence", "confidence_threshold": 0.9}])
