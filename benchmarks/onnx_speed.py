"""ONNX Runtime deployment benchmark: does early exit in ONNX Runtime beat the stock ONNX Runtime model on CPU?

What it measures
----------------
A trained multi-exit model (``--model``, e.g. ``benchmarks/run_all.py --tasks sst2 --methods deebert``'s) on the
872 SST-2 dev sentences (file order, max 64 tokens, padded per batch beforehand), at batch sizes 1 and 32, as
sentences per second of:

* ``a_stock_torch``   stock transformers full depth: the backbone's own ``<Arch>ForSequenceClassification`` holding
                      the model's backbone weights (its stock head is not the trained exit, so only its speed counts);
* ``b_stock_ort``     the same stock model exported whole with ``torch.onnx.export(dynamo=True)``, run by ONNX Runtime
                      (all graph optimisations, default threads);
* ``c_ort_exit``      this project's export (``hf-multiexit export``) in ``ORTMultiExitModelForSequenceClassification``
                      at the operating point: the fastest entropy threshold whose dev accuracy is within 1 point of
                      full depth (replayed on the all-exits logits, as ``hf-multiexit evaluate`` finds it);
* ``c_saved_rule``    the same at the model's saved (calibrated) exit rule, which was chosen without the dev set;
* ``d_int8_exit``     the ``--quantize int8`` export at the operating point;
* ``ort_loop_full``   the export at full depth (``exit_strategy="none"``): against ``b_stock_ort`` it is the cost of
                      running the host loop over per-segment graphs instead of one graph.

The stock session runs with ONNX Runtime's defaults (its pool's threads spin between calls), the segments with
`session_options()` (spinning off: with one pool per segment session, spinning threads of the last segment would take
the cores from the next; in a trial on 200 sentences, spinning on made the loop 6x slower at batch 1).

Time: the whole dev set per pass, ``--repeats`` interleaved rounds in rotating order (`benchmarks/harness.py`) after
an untimed pass; ratios per round with their median, minimum and maximum. Exactness: for entropy (the operating
point), patience 2 and static (layer L/2) at each batch size, every sample's exit layer from ONNX Runtime equals
PyTorch's and the logits agree within 1e-4. int8: its accuracy at full depth and at the saved rule next to fp32's.

Targets (issue 21): ``c_ort_exit`` >= 1.8x ``b_stock_ort`` at batch 32 and >= 1.6x at batch 1; ``d`` is reported
against ``b`` with its accuracy.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/onnx_speed.py --model runs/run_all/sst2-deebert [--repeats 3]
        [--batch_sizes 1,32] [--export_dir DIR] [--glue_dir DIR] [--max_samples N]

About 15 minutes alone on this project's 2-core host (the exports take 2-3 of them). Results:
``benchmarks/results/onnx_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from harness import ROOT, environment, interleaved_times, machine_share, ratio_summary, timing_setup, write_results
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from hf_multiexit.data import load_glue, make_collator
from hf_multiexit.evaluation import all_exit_logits, run_inference, simulate_exits
from hf_multiexit.models.multiexit_bert import AUTO_FAMILIES
from hf_multiexit.models.multiexit_bert.exit_strategies import entropy
from hf_multiexit.onnx import MANIFEST_NAME, ORTMultiExitModelForSequenceClassification, export_model

DEFAULT_GLUE_DIR = Path(os.environ.get("GLUE_DIR", ROOT.parent / "shared" / "data" / "glue"))
MAX_LENGTH, LOGIT_TOLERANCE, MAX_DROP = 64, 1e-4, 0.01
SPEED_TARGETS = {32: 1.8, 1: 1.6}  # batch size -> minimum c_ort_exit / b_stock_ort throughput ratio


def exported(model_path: str, folder: Path, quantize: str | None) -> tuple[str, float | None]:
    """An export of the model in `folder` (made now unless a finished one is there) and the seconds it took."""
    if (folder / MANIFEST_NAME).is_file():
        return str(folder), None
    start = time.perf_counter()
    export_model(model_path, str(folder), quantize=quantize)
    return str(folder), time.perf_counter() - start


def stock_models(model, batch: dict, folder: Path):
    """The backbone's stock sequence classifier with the model's backbone weights, and its ONNX Runtime session."""
    values = model.config.backbone_config.to_dict()
    values.pop("model_type")
    model_type = model.config.backbone_adapter.model_type  # "bert" for the flat multiexit_bert family too
    for key in ("id2label", "label2id", "architectures", "auto_map"):
        values.pop(key, None)
    config = AutoConfig.for_model(model_type, **values, num_labels=model.config.num_labels)
    torch.manual_seed(0)
    stock = AutoModelForSequenceClassification.from_config(config).eval()
    base = model.base_model
    source = base.backbone.state_dict() if base.backbone is not base else {
        key: value for key, value in base.state_dict().items() if not key.startswith("exits.")}
    missing, unexpected = stock.base_model.load_state_dict(source, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"the stock model did not take the backbone weights: missing {missing}, unexpected {unexpected}")
    path = folder / "stock.onnx"
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}
    with torch.no_grad():
        torch.onnx.export(stock, (), kwargs=inputs, dynamic_shapes={key: dims for key in inputs}, dynamo=True,
                          external_data=False, input_names=list(inputs), output_names=["logits"]).save(str(path))
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {item.name for item in session.get_inputs()}
    with torch.no_grad():
        expected = stock(**inputs).logits.numpy()
    actual = session.run(None, {key: value.numpy() for key, value in inputs.items() if key in names})[0]
    assert np.abs(actual - expected).max() <= LOGIT_TOLERANCE, "the stock ONNX graph does not reproduce the stock model"
    return stock, session, names


def operating_point(all_logits: np.ndarray, labels: np.ndarray, model_config) -> dict:
    """The fastest entropy threshold whose replayed dev accuracy is within `MAX_DROP` of full depth (candidates:
    midpoints between consecutive distinct intermediate-exit entropies, thinned to 400)."""
    full = float((all_logits[:, -1].argmax(-1) == labels).mean())
    values = np.unique(entropy(torch.as_tensor(all_logits[:, :-1])).numpy())
    midpoints = (values[1:] + values[:-1]) / 2
    candidates = midpoints[np.linspace(0, len(midpoints) - 1, min(400, len(midpoints))).astype(int)]
    best = {"entropy_threshold": 0.0, "avg_exit_layer": float(model_config.num_hidden_layers), "accuracy": full}
    for threshold in candidates:
        replay = simulate_exits(all_logits, model_config, exit_strategy="entropy", entropy_threshold=float(threshold))
        accuracy = float((replay.logits.argmax(-1) == labels).mean())
        if accuracy >= full - MAX_DROP - 1e-12 and replay.exit_layers.mean() < best["avg_exit_layer"]:
            best = {"entropy_threshold": float(threshold), "avg_exit_layer": float(replay.exit_layers.mean()), "accuracy": accuracy}
    return {"full_depth_accuracy": full, **best}


def exactness(torch_model, ort_model, dev, collator, batch_sizes, cases: dict) -> dict:
    checks = {}
    for batch_size in batch_sizes:
        for name, kwargs in cases.items():
            expected = run_inference(torch_model, dev, collator, batch_size, **kwargs)
            actual = run_inference(ort_model, dev, collator, batch_size, **kwargs)
            mismatches = int((expected.exit_layers != actual.exit_layers).sum())
            difference = float(np.abs(expected.logits - actual.logits).max())
            checks[f"batch {batch_size} / {name}"] = {
                "exit_kwargs": kwargs, "exit_layer_mismatches": mismatches, "max_abs_logit_diff": difference,
                "avg_exit_layer": float(actual.exit_layers.mean()),
                "pass": mismatches == 0 and difference <= LOGIT_TOLERANCE}
    return {"logit_tolerance": LOGIT_TOLERANCE, "checks": checks, "pass": all(c["pass"] for c in checks.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained multi-exit model folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_sizes", default="1,32")
    parser.add_argument("--export_dir", type=Path, help="keep the exports here (reused when already there)")
    parser.add_argument("--glue_dir", type=Path, default=DEFAULT_GLUE_DIR)
    parser.add_argument("--max_samples", type=int, help="only the first N dev sentences (a quick check)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "onnx_speed"))
    args = parser.parse_args()
    batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
    env = environment()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    dev = load_glue("sst2", args.glue_dir, tokenizer=tokenizer, max_length=MAX_LENGTH, splits=["validation"])["validation"]
    if args.max_samples:
        dev = dev.select(range(min(args.max_samples, len(dev))))
    collator, labels = make_collator(tokenizer), np.asarray(dev["label"])
    config = AutoConfig.from_pretrained(args.model)
    torch_model = AUTO_FAMILIES[type(config)][1].from_pretrained(args.model, config=config).eval()

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.export_dir or Path(scratch)
        fp32_path, fp32_seconds = exported(args.model, folder / "fp32", None)
        int8_path, int8_seconds = exported(args.model, folder / "int8", "int8")
        ort_model = ORTMultiExitModelForSequenceClassification.from_pretrained(fp32_path)
        int8_model = ORTMultiExitModelForSequenceClassification.from_pretrained(int8_path)
        columns = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in dev.column_names]
        example = collator([{key: dev[i][key] for key in columns} for i in range(4)])
        stock, stock_session, stock_inputs = stock_models(torch_model, example, Path(scratch))

        all_logits, _ = all_exit_logits(ort_model, dev, collator, batch_size=32)
        point = operating_point(all_logits, labels, config)
        at_point = {"exit_strategy": "entropy", "entropy_threshold": point["entropy_threshold"]}
        saved_rule = ort_model.exit_config.to_dict()
        saved_rule = {key: saved_rule[key] for key in ("exit_strategy", "entropy_threshold", "confidence_threshold",
                                                       "patience", "min_exit_layer")}
        cases = {"entropy (operating point)": at_point, "patience 2": {"exit_strategy": "patience", "patience": 2},
                 "static L/2": {"exit_strategy": "static", "exit_layer": config.num_hidden_layers // 2}}
        exact = exactness(torch_model, ort_model, dev, collator, batch_sizes, cases)

        quality = {}
        for name, runner, kwargs in (("fp32 full depth", ort_model, {"exit_strategy": "none"}),
                                     ("fp32 operating point", ort_model, at_point),
                                     ("fp32 saved rule", ort_model, {}),
                                     ("int8 full depth", int8_model, {"exit_strategy": "none"}),
                                     ("int8 operating point", int8_model, at_point),
                                     ("int8 saved rule", int8_model, {})):
            out = run_inference(runner, dev, collator, 32, **kwargs)
            quality[name] = {"accuracy": float((out.logits.argmax(-1) == labels).mean()),
                             "avg_exit_layer": float(out.exit_layers.mean())}

        results, share = {}, {}
        for batch_size in batch_sizes:
            batches = [collator([{key: dev[i][key] for key in columns} for i in range(start, min(start + batch_size, len(dev)))])
                       for start in range(0, len(dev), batch_size)]
            arrays = [{key: value.numpy() for key, value in batch.items() if key in stock_inputs} for batch in batches]
            tensors = [{key: value for key, value in batch.items() if key in columns} for batch in batches]

            def passes(call, inputs):
                def one_pass():
                    with torch.inference_mode():
                        for item in inputs:
                            call(item)
                return one_pass

            variants = {
                "a_stock_torch": passes(lambda x: stock(**x), tensors),
                "b_stock_ort": passes(lambda x: stock_session.run(None, x), arrays),
                "c_ort_exit": passes(lambda x: ort_model(**x, **at_point), tensors),
                "c_saved_rule": passes(lambda x: ort_model(**x), tensors),
                "d_int8_exit": passes(lambda x: int8_model(**x, **at_point), tensors),
                "ort_loop_full": passes(lambda x: ort_model(**x, exit_strategy="none"), tensors),
            }
            for warm_up in variants.values():
                warm_up()
            with machine_share() as share[batch_size]:
                times = interleaved_times(variants, args.repeats)
            results[batch_size] = {
                "seconds": times,
                "sentences_per_second": {name: len(dev) / statistics.median(t) for name, t in times.items()},
                "vs_b_stock_ort": {name: ratio_summary(times["b_stock_ort"], t) for name, t in times.items()},
            }

    targets = []
    for batch_size, minimum in SPEED_TARGETS.items():
        if batch_size in results:
            ratio = results[batch_size]["vs_b_stock_ort"]["c_ort_exit"]
            targets.append({"name": f"c_ort_exit / b_stock_ort @ batch {batch_size}", "median": ratio["median"],
                            "min": ratio["min"], "max": ratio["max"], "target": f">= {minimum}",
                            "pass": ratio["median"] >= minimum})
    targets.append({"name": "exactness vs PyTorch (exit layers equal, logits within 1e-4)", "pass": exact["pass"]})
    report = {"model": args.model, "num_dev": len(dev), "repeats": args.repeats, "export_seconds": {"fp32": fp32_seconds, "int8": int8_seconds},
              "operating_point": point, "saved_rule": saved_rule, "quality": quality, "exactness": exact,
              "results": results, "cpu_share_while_timing": share, "targets": targets,
              "ort_version": onnxruntime.__version__}
    write_results(args.output, report, markdown(report, env))


def markdown(report: dict, env: dict) -> list[str]:
    point, quality = report["operating_point"], report["quality"]
    lines = [
        "# Early exit in ONNX Runtime vs the stock ONNX Runtime model (CPU)",
        f"Model: `{report['model']}`. Data: SST-2 dev, {report['num_dev']} sentences, max {MAX_LENGTH} tokens, padded "
        f"per batch. {timing_setup(env, report['repeats'], 'ONNX Runtime ' + report['ort_version'])}; "
        f"speed-ups are per-round ratios (median, min..max). Exports took {report['export_seconds']['fp32'] or 0:.0f} s "
        f"(fp32) and {report['export_seconds']['int8'] or 0:.0f} s (int8) (0: reused).", "",
        f"Operating point (fastest entropy threshold within {MAX_DROP:.0%} of full-depth dev accuracy): S = "
        f"{point['entropy_threshold']:.4f}, average exit layer {point['avg_exit_layer']:.3f}, accuracy "
        f"{point['accuracy']:.4f} vs {point['full_depth_accuracy']:.4f} at full depth. Saved rule: "
        f"`{report['saved_rule']}`.", "",
        "| runtime / rule | accuracy | avg exit layer |", "|---|---:|---:|",
        *[f"| {name} | {q['accuracy']:.4f} | {q['avg_exit_layer']:.3f} |" for name, q in quality.items()], "",
    ]
    for batch_size, result in report["results"].items():
        share = report["cpu_share_while_timing"].get(batch_size, {})
        lines += [f"## Batch size {batch_size}", "",
                  f"Other processes took {share.get('other_processes_cpu_fraction', float('nan')):.1%} of the CPUs while timing.", "",
                  "| variant | sentences/s | vs b_stock_ort (median, min..max) |", "|---|---:|---|"]
        for name, rate in result["sentences_per_second"].items():
            ratio = result["vs_b_stock_ort"][name]
            lines.append(f"| {name} | {rate:.1f} | {ratio['median']:.3f}x ({ratio['min']:.3f}..{ratio['max']:.3f}) |")
        lines.append("")
    lines += ["## Exactness (ONNX Runtime vs PyTorch)", "", "| check | exit-layer mismatches | max abs logit diff | pass |",
              "|---|---:|---:|---|",
              *[f"| {key} | {c['exit_layer_mismatches']} | {c['max_abs_logit_diff']:.2e} | {'PASS' if c['pass'] else 'FAIL'} |"
                for key, c in report["exactness"]["checks"].items()], "",
              "## Targets", "", "| target | value | required | result |", "|---|---|---|---|"]
    for target in report["targets"]:
        value = f"{target['median']:.3f}x ({target['min']:.3f}..{target['max']:.3f})" if "median" in target else ""
        lines.append(f"| {target['name']} | {value} | {target.get('target', 'all equal')} | {'PASS' if target['pass'] else 'FAIL'} |")
    return lines


if __name__ == "__main__":
    main()
