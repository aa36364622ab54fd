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
import sys

from transformers import HfArgumentParser

from hf_multiexit.trainers import get_method
from hf_multiexit.train import DataArguments, ModelArguments, build_trainer, eval_report, save_results

logger = logging.getLogger(__name__)


def main():
    if "--method" not in sys.argv:
        sys.exit("usage: run_glue_multiexit.py --method METHOD [model, data and training arguments]")
    position = sys.argv.index("--method")
    method = sys.argv[position + 1]
    argv = sys.argv[1:position] + sys.argv[position + 2 :]
    config_class, _ = get_method(method)
    parser = HfArgumentParser((ModelArguments, DataArguments, config_class))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)

    trainer, tokenizer, label_names, _ = build_trainer(model_args, data_args, training_args, method)
    report = {"method": method}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.log_metrics("train", result.metrics)
        report["train_runtime"] = result.metrics.get("train_runtime")
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        report.update(eval_report(metrics, list(trainer.model.config.exit_layers), training_args.task, label_names is None))
        logger.info("per-exit metrics: %s", json.dumps(report["per_exit"]))
    save_results(trainer, tokenizer, report)
    if training_args.push_to_hub:
        trainer.push_to_hub()


if __name__ == "__main__":
    main()
