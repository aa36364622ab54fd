#!/usr/bin/env python
"""Fine-tune a multi-exit BERT on a GLUE task (or CSV/JSON files), in the pattern of transformers' `run_glue.py`.

    python examples/run_glue_multiexit.py --method romebert --model_name_or_path bert-base-uncased \
        --task sst2 --data_dir glue_data --output_dir out/romebert-sst2 --do_train --do_eval \
        --per_device_train_batch_size 32 --learning_rate 2e-5 --num_train_epochs 3

    accelerate launch --num_processes 2 examples/run_glue_multiexit.py --method pabee ...   # several processes
    ... --push_to_hub --hub_model_id org/pabee-sst2                                           # Trainer's upload

Arguments: `ModelArguments` and `DataArguments` from `hf_multiexit.train` and the method's config (`PabeeConfig`,
`RomeBertConfig`, ...: every `TrainingArguments` field plus the method's hyper-parameters).
"""

import json
import logging
import os
import sys

from transformers import AutoTokenizer, HfArgumentParser

from hf_multiexit.data import make_collator
from hf_multiexit.io import atomic_save_pretrained, atomic_write_json
from hf_multiexit.trainers import get_method
from hf_multiexit.train import DataArguments, ModelArguments, build_model, eval_report, load_datasets

logger = logging.getLogger(__name__)


def main():
    if "--method" not in sys.argv:
        sys.exit("usage: run_glue_multiexit.py --method METHOD [model, data and training arguments]")
    position = sys.argv.index("--method")
    method = sys.argv[position + 1]
    argv = sys.argv[1:position] + sys.argv[position + 2 :]
    config_class, trainer_class = get_method(method)
    parser = HfArgumentParser((ModelArguments, DataArguments, config_class))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)

    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    train, validation, label_names = load_datasets(data_args, training_args.task, tokenizer)
    model = build_model(model_args, method, label_names)
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=train if training_args.do_train else None,
        eval_dataset=validation,
        data_collator=make_collator(tokenizer),
        processing_class=tokenizer,
    )
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.log_metrics("train", result.metrics)
        if trainer.is_world_process_zero():
            atomic_save_pretrained(training_args.output_dir, trainer.accelerator.unwrap_model(trainer.model), tokenizer)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        report = eval_report(metrics, list(model.config.exit_layers), training_args.task, label_names is None)
        if trainer.is_world_process_zero():
            atomic_write_json(os.path.join(training_args.output_dir, "eval_results.json"), report)
            logger.info("per-exit metrics: %s", json.dumps(report["per_exit"]))
    if training_args.push_to_hub:
        trainer.push_to_hub()


if __name__ == "__main__":
    main()
