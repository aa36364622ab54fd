"""The `hf-multiexit` command line.

    hf-multiexit train --method {deebert,pabee,romebert,...} --model_name_or_path P --task T [--data_dir D]
        --output_dir O [--max_train_samples N] [any TrainingArguments / method option]
    hf-multiexit evaluate --model O --task T [--data_dir D] --exit_strategy S[,S2] [--thresholds a,b,c |
        --patience 1,2,3] [--batch_size B] --output report.json [--plot curve.png]
    hf-multiexit calibrate --model O [--task T [--data_dir D] | --calibration_file F] --max_drop 0.01 [--delta 0.1]
        [--criterion agreement|metric] [--strategies entropy,patience,confidence] [--metric M]
    hf-multiexit export --model O --output OUT [--quantize int8] [--opset N]
    hf-multiexit push --model O --repo_id org/name [--private] [--report report.json] [--card_only README.md]
        [--method M] [--base_model ID] [--license L]
    hf-multiexit serve --model O [--host 127.0.0.1] [--port 8000] [--mode continuous|static] [--max_batch_tokens N]
        [--runtime torch|onnx] [--ray [--num_replicas R]]

Arguments are parsed with `HfArgumentParser` from `ModelArguments`, `DataArguments` and the method's config
dataclass, so every `TrainingArguments` field and method option is a flag (`hf-multiexit train --method romebert
--help` lists them).
"""

from __future__ import annotations

import argparse
import json
import sys

from transformers import HfArgumentParser

from .trainers import METHODS, get_method


def train_argument_parser(method: str) -> HfArgumentParser:
    """The options of `hf-multiexit train --method <method>`: model, data, calibration and the method's config."""
    from .train import CalibrationArguments, DataArguments, ModelArguments

    config_class, _ = get_method(method)
    return HfArgumentParser(
        (ModelArguments, DataArguments, CalibrationArguments, config_class), prog=f"hf-multiexit train --method {method}"
    )


def _train(argv: list[str]) -> int:
    from .train import run_training

    pre = argparse.ArgumentParser(prog="hf-multiexit train", add_help=False)
    pre.add_argument("--method", required="-h" not in argv and "--help" not in argv, help=f"One of {sorted(METHODS)}.")
    known, rest = pre.parse_known_args(argv)
    if known.method is None:
        print(f"usage: hf-multiexit train --method {{{','.join(sorted(METHODS))}}} [options]; add --method M --help "
              "for the options of method M.")
        return 0
    parser = train_argument_parser(known.method)
    model_args, data_args, calibration_args, training_args = parser.parse_args_into_dataclasses(args=rest)
    report = run_training(model_args, data_args, training_args, known.method, calibration_args)
    print(json.dumps({"final": report["final"], "per_exit": report["per_exit"]}, indent=2))
    return 0


def _evaluate(argv: list[str]) -> int:
    from .evaluation import EvaluateArguments, run_evaluation, tradeoff_summary

    (args,) = HfArgumentParser(EvaluateArguments, prog="hf-multiexit evaluate").parse_args_into_dataclasses(args=argv)
    report = run_evaluation(args)
    summary = {name: tradeoff_summary(report, name) for name in args.strategies}
    for item in summary.values():
        item.pop("operating_point")
    print(json.dumps({"full_depth": report["full_depth"], "oracle": report["oracle"], "summary": summary}, indent=2))
    print(f"report: {args.output}" + (f", plot: {args.plot}" if args.plot else ""))
    return 0


def _calibrate(argv: list[str]) -> int:
    from .calibrate_model import CalibrateArguments, run_calibration

    (args,) = HfArgumentParser(CalibrateArguments, prog="hf-multiexit calibrate").parse_args_into_dataclasses(args=argv)
    print(json.dumps(run_calibration(args), indent=2))
    return 0


def _export(argv: list[str]) -> int:
    from .onnx import ExportArguments, export_model

    (args,) = HfArgumentParser(ExportArguments, prog="hf-multiexit export").parse_args_into_dataclasses(args=argv)
    manifest = export_model(args.model, args.output, quantize=args.quantize, opset=args.opset)
    graphs = 1 + len(set(manifest["layers"])) + len(manifest["exits"]) + len(manifest["gates"] or ())
    print(f"exported {graphs} graphs ({manifest['quantization'] or 'fp32'}, opset {manifest['opset']}) to {args.output}")
    return 0


def _push(argv: list[str]) -> int:
    from .hub import PushArguments, PushError, push_model, save_model_card

    (args,) = HfArgumentParser(PushArguments, prog="hf-multiexit push").parse_args_into_dataclasses(args=argv)
    if args.card_only:
        print(save_model_card(args.model, args.repo_id, args.card_only, **args.card_kwargs))
        return 0
    try:
        commit = push_model(args.model, args.repo_id, private=args.private or None, revision=args.revision, **args.card_kwargs)
    except PushError as err:
        print(f"hf-multiexit push: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"repo_id": args.repo_id, "commit": commit.oid, "commit_url": commit.commit_url}, indent=2))
    return 0


def _serve(argv: list[str]) -> int:
    from .serving.server import ServeArguments, serve

    (args,) = HfArgumentParser(ServeArguments, prog="hf-multiexit serve").parse_args_into_dataclasses(args=argv)
    serve(args)
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "calibrate": _calibrate, "export": _export, "push": _push,
            "serve": _serve}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        message = f"usage: hf-multiexit {{{','.join(COMMANDS)}}} [options]"
        if argv and argv[0] not in ("-h", "--help"):
            print(f"hf-multiexit: unknown command {argv[0]!r}; valid commands are {list(COMMANDS)}.\n{message}", file=sys.stderr)
            return 2
        print(message)
        return 0
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (ValueError, OSError) as err:  # OSError: missing files and models (FileNotFoundError is one)
        print(f"hf-multiexit {argv[0]}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
