"""Trade-off evaluation: replayed sweeps equal real early-exit runs, FLOPs equal torch's counter, the oracle, the
report and its summary."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from hf_multiexit import evaluation
from hf_multiexit.evaluation import (
    TradeoffEvaluator,
    default_sweep_values,
    oracle_exits,
    plot_report,
    run_inference,
    simulate_exits,
    tradeoff_summary,
)
from hf_multiexit.flops import exit_head_flops, full_depth_flops, gate_flops, layer_flops, sample_flops
from test_modeling import between_values, padded_batch, tiny_model


def rows_of(ids, mask, labels):
    return [
        {"input_ids": ids[i, : int(mask[i].sum())], "labels": labels[i]}
        for i in range(ids.shape[0])
    ]


def collate(rows):
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r["input_ids"])] = r["input_ids"]
        mask[i, : len(r["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([r["labels"] for r in rows])}


def toy_set(count=40, regression=False, seed=3):
    ids, mask, _ = padded_batch(count, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.rand(count, generator=gen) if regression else torch.randint(0, 3, (count,), generator=gen)
    return rows_of(ids, mask, labels)


def cached_logits(model, data):
    inputs = {k: v for k, v in collate(data).items() if k != "labels"}
    return torch.stack(model(**inputs, output_all_exits=True, gate_mode="off").all_logits, 1)


def replay_cases(model, data):
    """Settings of every replayable strategy with thresholds far from any exit's value on this data."""
    with torch.no_grad():
        logits = cached_logits(model, data)
    if model.config.num_labels == 1:
        diffs = (logits[:, 1:] - logits[:, :-1]).abs()
        return [{"exit_strategy": "patience", "patience": t, "regression_threshold": between_values(diffs)} for t in (0, 1, 2)]
    probs = logits.softmax(-1)
    entropies = -(probs * probs.log()).sum(-1)
    return [
        {"exit_strategy": "none"},
        {"exit_strategy": "static", "exit_layer": 2},
        {"exit_strategy": "entropy", "entropy_threshold": between_values(entropies)},
        {"exit_strategy": "entropy", "entropy_threshold": between_values(entropies), "min_exit_layer": 3},
        {"exit_strategy": "confidence", "confidence_threshold": between_values(probs.amax(-1))},
        {"exit_strategy": "patience", "patience": 1},
        {"exit_strategy": "patience", "patience": 2},
    ]


@pytest.mark.parametrize("regression", [False, True])
@pytest.mark.parametrize("batch_size", [1, 7])
def test_replayed_exits_equal_real_early_exit_runs(regression, batch_size):
    model = tiny_model(num_labels=1 if regression else 3)
    data = toy_set(regression=regression)
    with torch.no_grad():
        all_logits = cached_logits(model, data).numpy()
    for case in replay_cases(model, data):
        real = run_inference(model, data, collate, batch_size, **case)
        replay = simulate_exits(all_logits, model.config, **case)
        np.testing.assert_array_equal(replay.exit_layers, real.exit_layers, err_msg=str(case))
        np.testing.assert_array_equal(replay.exit_checks, real.exit_checks, err_msg=str(case))
        np.testing.assert_allclose(replay.logits, real.logits, atol=1e-4, err_msg=str(case))
    assert len({tuple(simulate_exits(all_logits, model.config, **c).exit_layers) for c in replay_cases(model, data)}) > 2


@pytest.mark.slow
def test_evaluator_points_match_real_runs_and_report_fields(tmp_path):
    model = tiny_model()
    data = toy_set()
    evaluator = TradeoffEvaluator(model, data, collate, task="sst2", batch_size=8, progress=False)
    entropy_values = [0.3, 0.8, 1.05]
    points = evaluator.sweep({"entropy": entropy_values, "patience": [0, 1], "static": None}, wall_clock=True)
    assert [p["strategy"] for p in points] == ["entropy"] * 3 + ["patience"] * 2 + ["static"] * 4
    for point in points:
        kwargs = {"exit_strategy": point["strategy"], **point["params"]}
        real = run_inference(model, data, collate, 8, **kwargs)
        assert point["exit_agreement"] == 1.0
        assert point["avg_exit_layer"] == pytest.approx(real.avg_exit_layer)
        assert point["metrics"]["accuracy"] == pytest.approx(float((real.logits.argmax(-1) == real.labels).mean()))
        assert point["layer_speedup"] == pytest.approx(4 / real.avg_exit_layer)
        assert point["wall_speedup"] > 0 and point["seconds"] > 0
    report = evaluator.report(points)
    for key in ("num_layers", "full_depth", "per_exit", "points", "oracle"):
        assert key in report
    assert report["full_depth"]["metrics"] == report["per_exit"][-1]["metrics"]
    assert points[-1]["layer_speedup"] == pytest.approx(1.0)  # static at the last layer is full depth
    json.dumps(report)
    plot_report(report, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_evaluator_reports_a_chosen_metric():
    from sklearn.metrics import f1_score

    model, data = tiny_model(), toy_set()
    evaluator = TradeoffEvaluator(model, data, collate, batch_size=8, progress=False, metric="macro_f1")
    report = evaluator.report(evaluator.sweep({"static": [2]}, wall_clock=False))
    assert report["primary_metric"] == "macro_f1"
    labels = np.array([int(row["labels"]) for row in data])
    final = evaluator.all_logits[:, -1].argmax(-1)
    assert report["full_depth"]["metrics"]["macro_f1"] == pytest.approx(f1_score(labels, final, average="macro"))
    assert list(report["points"][0]["metrics"]) == ["macro_f1", "accuracy"]
    with pytest.raises(ValueError, match="metric='f1' does not fit classification with 3 classes"):
        TradeoffEvaluator(model, data, collate, batch_size=8, progress=False, metric="f1")


def test_wall_speedup_pairs_each_setting_with_full_depth_passes(monkeypatch):
    """Pass times are scripted: the machine is fast while the reference is first timed, then slower. A setting
    identical to full depth must still measure 1.0x, and one doing half the work 2.0x, against the full-depth passes
    timed in the same rounds; the report keeps the fastest full-depth pass seen."""
    model, data = tiny_model(), toy_set()
    machine_slowness = iter([1.0] * 3 + [2.0, 2.0, 3.0, 3.0] * 2)  # warm-up, 2 reference passes, 2 points x 2 rounds
    work = {"none": 1.0, "static": 0.5}
    real_run_inference = evaluation.run_inference

    def scripted_run_inference(*args, **exit_kwargs):
        result = real_run_inference(*args, **exit_kwargs)
        return dataclasses.replace(result, seconds=next(machine_slowness) * work[exit_kwargs["exit_strategy"]])

    monkeypatch.setattr(evaluation.tradeoff, "run_inference", scripted_run_inference)
    evaluator = TradeoffEvaluator(model, data, collate, task="sst2", batch_size=8, repeats=2, progress=False)
    same, half = evaluator.point("none"), evaluator.point("static", 2)
    assert (same["wall_speedup"], same["seconds"], same["full_seconds"]) == (1.0, 2.0, 2.0)
    assert (half["wall_speedup"], half["seconds"], half["full_seconds"]) == (2.0, 1.0, 2.0)
    report = evaluator.report([same, half])
    assert report["full_depth"]["seconds"] == 1.0
    assert [p["wall_speedup"] for p in report["points"]] == [1.0, 2.0]
    assert next(machine_slowness, None) is None


def test_replay_refuses_skip_and_evaluator_measures_it():
    # Gates that skip about half the layers: strategies other than skip must still be replayed without them.
    model = tiny_model(use_skip_gates=True, gate_mode="hard", gate_threshold=0.5)
    data = toy_set()
    evaluator = TradeoffEvaluator(model, data, collate, batch_size=8, progress=False)
    for point in evaluator.sweep({"entropy": [0.9], "patience": [1]}):
        assert point["exit_agreement"] == 1.0
    with torch.no_grad():
        all_logits = cached_logits(model, data).numpy()
    with pytest.raises(ValueError, match="cannot be replayed"):
        simulate_exits(all_logits, model.config, exit_strategy="skip", entropy_threshold=0.5)
    (point,) = evaluator.sweep({"skip": [0.9]}, wall_clock=False)
    real = run_inference(model, data, collate, 8, exit_strategy="skip", entropy_threshold=0.9)
    assert point["avg_exit_layer"] == pytest.approx(real.avg_exit_layer) and point["simulated"] is False
    expected = sample_flops(model.config, real.lengths, real.layers_run, real.exit_checks, real.exit_layers).mean()
    assert point["flops_per_sample"] == pytest.approx(expected)


def test_bad_sweeps():
    model = tiny_model()
    evaluator = TradeoffEvaluator(model, toy_set(8), collate, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="Unknown exit_strategy='fastest'"):
        evaluator.sweep({"fastest": None})
    with pytest.raises(ValueError, match="No values"):
        evaluator.sweep({"entropy": []})
    with pytest.raises(ValueError, match="entropy_threshold=-1"):
        evaluator.sweep({"entropy": [-1.0]})
    with pytest.raises(ValueError, match="empty"):
        TradeoffEvaluator(model, [], collate)
    assert default_sweep_values("patience", model.config, evaluator.all_logits) == [0, 1, 2, 3]


def test_default_sweep_places_thresholds_on_the_exit_statistics():
    """Default grids come from this data's exit scores: from full depth to every sample at its first exit, with
    layer speed-up steps of at most grid_step; static is swept at every exit."""
    model, data = tiny_model(), toy_set(200)
    evaluator = TradeoffEvaluator(model, data, collate, batch_size=50, progress=False)
    points = evaluator.sweep({"entropy": None, "confidence": None, "static": None}, wall_clock=False, grid_step=0.2)
    for strategy in ("entropy", "confidence"):
        speedups = [p["layer_speedup"] for p in points if p["strategy"] == strategy]
        assert speedups[0] == 1.0 and speedups[-1] == 4.0 and np.all(np.diff(speedups) > 0)
        assert np.diff(speedups).max() <= 0.2 + 1e-9 and len(speedups) >= 3 / 0.2
    assert [p["params"]["exit_layer"] for p in points if p["strategy"] == "static"] == [1, 2, 3, 4]
    from hf_multiexit.evaluation import EvaluateArguments

    assert EvaluateArguments.__dataclass_fields__["exit_strategy"].default == "entropy,static"


def test_oracle_on_a_hand_made_example():
    # 3 samples, exits at layers 2, 4, 6; predictions per exit: [0, 1, 1], [1, 1, 1], [0, 0, 1]; labels 0, 1, 0.
    predictions = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 1]])
    logits = np.eye(2)[predictions]  # (3, 3, 2) one-hot logits
    oracle = oracle_exits(logits, np.array([0, 1, 0]), [2, 4, 6], "single_label_classification")
    # agree with final: sample 0 at exit 2 (layer 4), sample 1 at layer 2, sample 2 at layer 6.
    assert oracle["agree_final"]["avg_exit_layer"] == pytest.approx((4 + 2 + 6) / 3)
    assert oracle["agree_final"]["layer_speedup"] == pytest.approx(6 / 4)
    assert oracle["agree_final"]["accuracy"] == pytest.approx(1 / 3)
    # first correct: sample 0 at layer 2, sample 1 at layer 2, sample 2 at layer 2.
    assert oracle["first_correct"] == {"avg_exit_layer": 2.0, "layer_speedup": 3.0, "accuracy": 1.0}
    # Never correct: the sample stays to the final exit.
    never = oracle_exits(logits[:1], np.array([2]), [2, 4, 6], "single_label_classification")
    assert never["first_correct"]["avg_exit_layer"] == 6.0
    assert oracle_exits(logits[:, :, :1], None, [2, 4, 6], "regression") is None


def test_tradeoff_summary_interpolates_on_a_hand_made_curve():
    def point(speedup, accuracy):
        return {"strategy": "entropy", "layer_speedup": speedup, "metrics": {"accuracy": accuracy}}

    report = {
        "primary_metric": "accuracy",
        "full_depth": {"metrics": {"accuracy": 0.90}},
        "points": [point(1.2, 0.90), point(1.8, 0.895), point(2.4, 0.85), {"strategy": "static", "layer_speedup": 3.0, "metrics": {"accuracy": 0.5}}],
    }
    summary = tradeoff_summary(report, "entropy", speedups=(1.5, 2.0, 3.0))
    assert summary["at_speedup"]["1.5"] == pytest.approx(0.8975)
    assert summary["at_speedup"]["2.0"] == pytest.approx(0.895 - 0.045 / 3)
    assert summary["at_speedup"]["3.0"] is None
    assert summary["speedup_within_tolerance"] == 1.8
    only_full_depth = {**report, "points": [point(1.5, 0.80)]}
    assert tradeoff_summary(only_full_depth, "entropy")["speedup_within_tolerance"] == 1.0
    below = tradeoff_summary(report, "entropy", reference=0.95)
    assert below["speedup_within_tolerance"] is None and below["operating_point"] is None
    with pytest.raises(ValueError, match="no points for exit_strategy='patience'"):
        tradeoff_summary(report, "patience")


def test_sweep_measures_the_saved_rule():
    from hf_multiexit.models.multiexit_bert import ExitConfig

    model, data = tiny_model(), toy_set()
    model.exit_config = ExitConfig(exit_strategy="entropy", entropy_threshold=0.77)
    evaluator = TradeoffEvaluator(model, data, collate, batch_size=8, progress=False)
    points = evaluator.sweep({"entropy": [0.3], "patience": [1]}, wall_clock=False)
    assert [(p["strategy"], p["params"]) for p in points] == [
        ("entropy", {"entropy_threshold": 0.3}), ("entropy", {"entropy_threshold": 0.77}), ("patience", {"patience": 1})]
    assert len(evaluator.sweep({"entropy": [0.77]}, wall_clock=False)) == 1


def test_tradeoff_summary_finds_the_fastest_point_within_half_one_and_two_points():
    def point(speedup, accuracy, wall=None):
        return {"strategy": "entropy", "layer_speedup": speedup, "wall_speedup": wall, "params": {"entropy_threshold": speedup / 10},
                "metrics": {"accuracy": accuracy}}

    report = {"primary_metric": "accuracy", "full_depth": {"metrics": {"accuracy": 0.90}},
              "points": [point(1.5, 0.897, 1.4), point(2.0, 0.893), point(2.6, 0.885), point(3.5, 0.87)]}
    within = tradeoff_summary(report, "entropy")["fastest_within"]
    assert within["0.5"] == {"layer_speedup": 1.5, "wall_speedup": 1.4, "params": {"entropy_threshold": 0.15}, "metric": 0.897}
    assert within["1"]["layer_speedup"] == 2.0 and within["2"]["layer_speedup"] == 2.6
    only_full = tradeoff_summary({**report, "points": [point(2.0, 0.80)]}, "entropy")["fastest_within"]
    assert only_full["0.5"] == {"layer_speedup": 1.0, "wall_speedup": None, "params": None, "metric": 0.90}
    assert tradeoff_summary(report, "entropy", reference=0.95)["fastest_within"]["2"] is None


def counted_flops(fn) -> int:
    """`torch.utils.flop_counter` total, with CPU's fused attention kernel counted like the CUDA ones."""
    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu

    def sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)  # the counter passes shapes

    mapping = {cpu_sdpa: sdpa_cpu}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("head", ["pooler", "linear", "attention"])
def test_flops_formulas_match_torch_flop_counter(head):
    model = tiny_model(exit_head=head, use_skip_gates=True)
    config = model.config
    ids = torch.randint(1, 99, (1, 11))
    hidden = torch.randn(1, 11, config.hidden_size)
    mask = torch.ones(1, 11, dtype=torch.long)
    bert = model.bert
    assert counted_flops(lambda: bert.encoder.layer[0](hidden)) == layer_flops(config, 11)
    assert counted_flops(lambda: bert.exit_logits(1, hidden, mask)) == exit_head_flops(config, 11)
    assert counted_flops(lambda: bert.skip_gates[0](hidden, mask)) == gate_flops(config, 11)
    assert counted_flops(lambda: model(ids, exit_strategy="none")) == full_depth_flops(config, [11])[0]
    out = model(ids, exit_strategy="static", exit_layer=2)
    expected = sample_flops(config, [11], out.layers_run, out.exit_checks)[0]
    assert counted_flops(lambda: model(ids, exit_strategy="static", exit_layer=2)) == expected
    out = model(ids, exit_strategy="skip", entropy_threshold=0.5, gate_threshold=0.5)
    expected = sample_flops(config, [11], out.layers_run, out.exit_checks, out.exit_layers)[0]
    assert counted_flops(lambda: model(ids, exit_strategy="skip", entropy_threshold=0.5, gate_threshold=0.5)) == expected


def test_flops_of_the_real_minilm_match_the_counter(minilm_path, minilm_tokenizer, sst2_dev_sentences):
    from hf_multiexit import MultiExitBertForSequenceClassification

    model = MultiExitBertForSequenceClassification.from_pretrained(minilm_path, num_labels=2).eval()
    batch = minilm_tokenizer(sst2_dev_sentences[0], return_tensors="pt")
    length = batch["input_ids"].shape[1]
    assert counted_flops(lambda: model(**batch, exit_strategy="none")) == pytest.approx(full_depth_flops(model.config, [length])[0])
    # MiniLM-L6 on a 20-token sentence: about 6 * 20 * 2 * 22M parameters' worth of multiply-adds.
    assert 1e8 < full_depth_flops(model.config, [20])[0] < 1e9


@pytest.fixture(scope="module")
def minilm_folder(tmp_path_factory, minilm_path, minilm_tokenizer):
    from hf_multiexit import MultiExitBertForSequenceClassification

    folder = tmp_path_factory.mktemp("minilm-exits")
    model = MultiExitBertForSequenceClassification.from_pretrained(minilm_path, num_labels=2, exit_pooling="mean")
    model.save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return str(folder)


def test_evaluate_cli_on_real_minilm_and_sst2(minilm_folder, glue_dir, tmp_path, capsys):
    from hf_multiexit.cli import main

    report_path, plot_path = tmp_path / "out" / "report.json", tmp_path / "out" / "curve.png"
    argv = [
        "evaluate", "--model", minilm_folder, "--task", "sst2", "--data_dir", str(glue_dir), "--max_eval_samples", "48",
        "--max_length", "64", "--batch_size", "16", "--exit_strategy", "entropy,patience,static", "--thresholds",
        "0.3,0.69", "--patience", "1,2", "--exit_layers", "3", "--output", str(report_path), "--plot", str(plot_path),
    ]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["num_layers"] == 6 and report["num_samples"] == 48 and len(report["per_exit"]) == 6
    assert [(p["strategy"], p["params"]) for p in report["points"]] == [
        ("entropy", {"entropy_threshold": 0.3}), ("entropy", {"entropy_threshold": 0.69}),
        ("patience", {"patience": 1}), ("patience", {"patience": 2}), ("static", {"exit_layer": 3}),
    ]
    for point in report["points"]:
        assert set(point) >= {"metrics", "avg_exit_layer", "layer_speedup", "flops_speedup", "wall_speedup", "seconds"}
        assert point["exit_agreement"] == 1.0
    static = report["points"][-1]
    assert static["layer_speedup"] == 2.0 and 1.9 < static["flops_speedup"] < 2.0  # the exit heads cost a little
    assert plot_path.exists() and '"summary"' in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--exit_strategy": "fastest"}, "Unknown exit_strategy='fastest'; valid strategies are"),
        ({"--thresholds": "low,high"}, "--thresholds='low,high' must be a comma-separated list"),
        ({"--model": "/nonexistent/model"}, "/nonexistent/model"),
        ({"--task": "sst3"}, "sst3"),
    ],
)
def test_evaluate_cli_bad_input(minilm_folder, glue_dir, tmp_path, capsys, change, message):
    from hf_multiexit.cli import main

    args = {"--model": minilm_folder, "--task": "sst2", "--data_dir": str(glue_dir), "--exit_strategy": "entropy",
            "--thresholds": "0.3", "--max_eval_samples": "8", "--output": str(tmp_path / "report.json")}
    args.update(change)
    assert main(["evaluate", *[item for pair in args.items() for item in pair]]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()
