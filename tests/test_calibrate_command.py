"""`hf-multiexit calibrate` and calibration at the end of training, end to end on a tiny model and tiny files: the
saved exit rule and its record, the held-out split, refusals that write nothing."""

import json
import random
import shutil
from pathlib import Path

import pytest

from hf_multiexit import calibrate_model as calibrate_module
from hf_multiexit.calibration import STRATEGIES
from hf_multiexit.cli import main
from hf_multiexit.evaluation import all_exit_logits, simulate_exits
from hf_multiexit.models.multiexit_bert import ExitConfig, MultiExitBertForSequenceClassification
from test_modeling import tiny_config
from toy_training import toy_model

WORDS = ["fine", "dull", "good", "bad", "odd", "great", "poor", "film", "plot", "cast", "a", "the", "very", "not"]


def write_rows(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = ["sentence,label"]
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(3, 9))
        rows.append(f"{' '.join(words)},{int('good' in words or 'great' in words or 'fine' in words)}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, minilm_tokenizer):
    """A tiny model trained on 160 file rows with 50% held out and calibrated at the end of training."""
    root = tmp_path_factory.mktemp("calibrated")
    checkpoint = root / "tiny"
    config = tiny_config(vocab_size=minilm_tokenizer.vocab_size, max_position_embeddings=64, num_labels=2)
    toy_model(**config.to_diff_dict()).save_pretrained(checkpoint)
    minilm_tokenizer.save_pretrained(checkpoint)
    train, dev = write_rows(root / "train.csv", 160, 0), write_rows(root / "dev.csv", 40, 1)
    out = root / "out"
    argv = [
        "train", "--method", "deebert", "--model_name_or_path", str(checkpoint), "--train_file", str(train),
        "--validation_file", str(dev), "--max_length", "32", "--output_dir", str(out), "--report_to", "none",
        "--use_cpu", "true", "--save_strategy", "no", "--num_train_epochs", "2", "--learning_rate", "1e-3",
        "--per_device_train_batch_size", "16", "--disable_tqdm", "true", "--calibration_split", "0.5",
        "--calibrate_max_drop", "0.2", "--calibrate_delta", "0.1",
    ]
    assert main(argv) == 0
    return {"root": root, "out": out, "train": train, "dev": dev}


def copy_model(trained, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(trained["out"], folder)
    return folder


def test_training_holds_out_the_split_and_saves_the_calibrated_rule(trained):
    out = trained["out"]
    split = json.loads((out / "calibration_split.json").read_text())
    assert split["share"] == 0.5 and split["seed"] == 42 and split["num_train_examples"] == 160
    assert len(split["indices"]) == 80 == len(set(split["indices"])) and split["indices"] == sorted(split["indices"])
    assert split["data"]["train_file"] == str(trained["train"]) and split["data"]["task"] is None
    saved = json.loads((out / "exit_config.json").read_text())
    record = saved["calibration"]
    assert (record["criterion"], record["max_drop"], record["delta"], record["method"]) == ("agreement", 0.2, 0.1, "learn_then_test")
    assert record["n"] == 64 and record["grid"]["n"] == 16  # 80 held out: 20% place the grid, 80% are tested
    assert set(record["strategies"]) == {"entropy", "patience", "confidence"}
    assert record["layer_speedup"] == max(result["layer_speedup"] for result in record["strategies"].values())
    assert not record["fallback"], record  # 64 samples suffice to certify some early exit at max_drop 0.2
    best = record["strategies"][record["strategy"]]
    assert saved["exit_strategy"] == record["strategy"] and record["p_value"] == best["p_value"] <= 0.1
    assert {name: saved[name] for name in best["setting"]} == best["setting"] and record["layer_speedup"] > 1
    report = json.loads((out / "eval_results.json").read_text())
    assert report["calibration"] == record and report["exit_rule"]["exit_strategy"] == saved["exit_strategy"]
    assert ExitConfig.from_pretrained(out).calibration == record


def test_calibrate_command_on_the_recorded_split_repeats_the_training_run(trained, tmp_path, capsys):
    folder = copy_model(trained, tmp_path)
    (folder / "exit_config.json").write_text(ExitConfig().to_json_string())
    assert main(["calibrate", "--model", str(folder), "--max_drop", "0.2", "--seed", "42"]) == 0
    summary = json.loads(capsys.readouterr().out)
    saved = json.loads((folder / "exit_config.json").read_text())
    assert saved == json.loads((trained["out"] / "exit_config.json").read_text())
    assert summary["calibration"] == saved["calibration"] and summary["exit_rule"]["exit_strategy"] == saved["exit_strategy"]
    assert saved["calibration"]["data"]["source"] == "held-out training split"


def test_calibration_file_with_delta_zero_is_the_empirical_pick(trained, tmp_path, capsys):
    folder = copy_model(trained, tmp_path)
    calibration = write_rows(tmp_path / "calibration.csv", 300, 7)
    argv = ["calibrate", "--model", str(folder), "--calibration_file", str(calibration), "--max_drop", "0.05",
            "--delta", "0", "--grid_share", "0", "--strategies", "entropy,static", "--max_length", "32"]
    assert main(argv) == 0
    saved = json.loads((folder / "exit_config.json").read_text())
    record = saved["calibration"]
    assert record["method"] == "empirical" and record["n"] == 300 and record["data"]["source"] == "file"
    # Replayed independently: each strategy's pick is within the budget and the next candidate of its walk is not.
    model = MultiExitBertForSequenceClassification.from_pretrained(folder).eval()
    from transformers import AutoTokenizer

    from hf_multiexit.data import load_text_files, make_collator

    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = load_text_files(validation_file=calibration, label_names=["0", "1"], tokenizer=tokenizer, max_length=32)
    logits, _ = all_exit_logits(model, data["validation"], make_collator(tokenizer))
    final = logits[:, -1].argmax(-1)
    for name, result in record["strategies"].items():
        replay = simulate_exits(logits, model.config, ExitConfig().update(**result["setting"]))
        disagreement = float((replay.logits.argmax(-1) != final).mean())
        assert disagreement == pytest.approx(result["empirical_risk"]) and disagreement <= 0.05
        assert result["layer_speedup"] == pytest.approx(4 / replay.exit_layers.mean())
    assert record["strategies"]["static"]["num_candidates"] == 4
    assert record["layer_speedup"] == max(result["layer_speedup"] for result in record["strategies"].values())
    assert saved["exit_strategy"] == record["strategies"][record["strategy"]]["setting"]["exit_strategy"]


def test_metric_criterion_with_accuracy_records_the_drop(trained, tmp_path, capsys):
    folder = copy_model(trained, tmp_path)
    calibration = write_rows(tmp_path / "calibration.csv", 300, 8)
    argv = ["calibrate", "--model", str(folder), "--calibration_file", str(calibration), "--max_drop", "0.1",
            "--criterion", "metric", "--metric", "accuracy", "--max_length", "32"]
    assert main(argv) == 0
    record = json.loads((folder / "exit_config.json").read_text())["calibration"]
    assert (record["criterion"], record["metric"], record["n"]) == ("metric", "accuracy", 240)
    for result in record["strategies"].values():
        if not result["fallback"]:
            assert result["metric_drop"] <= result["empirical_risk"] + 1e-12


def refusal_cases(trained, tmp_path, glue_dir):
    calibration = write_rows(tmp_path / "calibration.csv", 50, 9)
    return [
        (["--max_drop", "0"], "--max_drop=0.0 is out of range: it must lie in (0, 1)"),
        (["--max_drop", "1.5"], "--max_drop=1.5 is out of range"),
        (["--max_drop", "0.1", "--delta", "1"], "--delta=1.0 is out of range: it must lie in [0, 1)"),
        (["--max_drop", "0.1", "--strategies", "entropy,skip"], f"['skip']; valid strategies are {list(STRATEGIES)}"),
        (["--max_drop", "0.1", "--criterion", "loss"], "--criterion='loss' is not one of ['agreement', 'metric']"),
        (["--max_drop", "0.1", "--metric", "auc"], "Unknown metric='auc'; valid metrics are"),
        (["--max_drop", "0.1", "--criterion", "metric", "--metric", "macro_f1"],
         "macro_f1 is not a mean of per-sample scores"),
        (["--max_drop", "0.1", "--calibration_file", str(glue_dir / "SST-2" / "dev.tsv")], "is a GLUE dev file"),
        (["--max_drop", "0.1", "--calibration_file", str(trained["dev"])],
         "is the validation file the model was evaluated on in training"),
        (["--max_drop", "0.1", "--task", "sst2", "--calibration_file", str(calibration)], "not both"),
        (["--max_drop", "0.1", "--task", "sst2"], "calibration split was held out of files"),
        (["--max_drop", "0.1", "--model", str(tmp_path / "missing")], "no such folder"),
    ]


def test_bad_values_are_refused_and_nothing_is_written(trained, tmp_path, glue_dir, capsys):
    folder = copy_model(trained, tmp_path)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    for extra, message in refusal_cases(trained, tmp_path, glue_dir):
        argv = ["calibrate", "--model", str(folder), *extra]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_without_a_recorded_split_the_dev_set_is_never_the_fallback(trained, tmp_path, capsys):
    folder = copy_model(trained, tmp_path)
    (folder / "calibration_split.json").unlink()
    assert main(["calibrate", "--model", str(folder), "--task", "sst2", "--max_drop", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "has no calibration_split.json" in err and "evaluation (dev) set is never used" in err
    assert "--calibration_file" in err


def test_a_failure_half_way_leaves_the_saved_rule_alone(trained, tmp_path, monkeypatch, capsys):
    folder = copy_model(trained, tmp_path)
    before = (folder / "exit_config.json").read_bytes()
    real = calibrate_module.calibrate_strategy
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:
            raise ValueError("simulated failure in the second strategy")
        return real(*args, **kwargs)

    monkeypatch.setattr(calibrate_module, "calibrate_strategy", fail_on_second)
    assert main(["calibrate", "--model", str(folder), "--max_drop", "0.2"]) == 2
    assert "simulated failure" in capsys.readouterr().err and calls == ["entropy", "patience"]
    assert (folder / "exit_config.json").read_bytes() == before
    assert not [path for path in folder.iterdir() if path.name.startswith(".")]


def test_training_refuses_calibration_without_a_held_out_split(tmp_path, capsys):
    assert main(["train", "--method", "pabee", "--model_name_or_path", str(tmp_path), "--output_dir",
                 str(tmp_path / "out"), "--calibrate_max_drop", "0.01"]) == 2
    assert "needs held-out training data to calibrate on" in capsys.readouterr().err
    assert main(["train", "--method", "pabee", "--model_name_or_path", str(tmp_path), "--output_dir",
                 str(tmp_path / "out"), "--calibration_split", "0.1", "--calibrate_max_drop", "0.01",
                 "--calibrate_strategies", "entropy,fastest"]) == 2
    assert "--calibrate_strategies='entropy,fastest'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_exit_config_keeps_the_record_only_for_the_rule_it_describes(tmp_path):
    record = {"criterion": "agreement", "max_drop": 0.01}
    config = ExitConfig(exit_strategy="entropy", entropy_threshold=0.2, calibration=record)
    assert ExitConfig.from_pretrained(Path(config.save_pretrained(tmp_path)).parent).calibration == record
    assert config.update(entropy_threshold=0.2).calibration == record  # unchanged rule
    assert config.update(entropy_threshold=0.5).calibration is None  # a changed rule is no longer calibrated
    assert config.update(patience=3, calibration={"n": 1}).calibration == {"n": 1}
    # Uncalibrated files are written as before, so earlier versions still read them.
    assert "calibration" not in json.loads(ExitConfig().to_json_string())
    with pytest.raises(ValueError, match="calibration='high' must be a dict"):
        ExitConfig(calibration="high")


def test_glue_task_split_recorded_in_training_then_calibrated_by_task(trained, glue_dir, tmp_path, capsys):
    out = tmp_path / "sst2"
    argv = [
        "train", "--method", "pabee", "--model_name_or_path", str(trained["out"]), "--task", "sst2", "--data_dir",
        str(glue_dir), "--max_train_samples", "80", "--max_eval_samples", "16", "--max_length", "32", "--output_dir",
        str(out), "--report_to", "none", "--use_cpu", "true", "--save_strategy", "no", "--num_train_epochs", "1",
        "--disable_tqdm", "true", "--calibration_split", "0.5",
    ]
    assert main(argv) == 0
    split = json.loads((out / "calibration_split.json").read_text())
    assert split["data"]["task"] == "sst2" and len(split["indices"]) == 40
    assert "calibration" not in json.loads((out / "exit_config.json").read_text())  # held out, not calibrated yet
    capsys.readouterr()
    assert main(["calibrate", "--model", str(out), "--task", "sst2", "--max_drop", "0.3", "--data_dir", str(glue_dir)]) == 0
    record = json.loads((out / "exit_config.json").read_text())["calibration"]
    assert record["n"] == 32 and record["data"]["task"] == "sst2" and record["data"]["max_train_samples"] == 80
    # Other training data than recorded: the indices would point at other sentences.
    split["fingerprint"] = "0" * 64
    (out / "calibration_split.json").write_text(json.dumps(split))
    assert main(["calibrate", "--model", str(out), "--task", "sst2", "--max_drop", "0.3", "--data_dir", str(glue_dir)]) == 2
    assert "differs from the data" in capsys.readouterr().err


def test_non_decomposable_metric_is_calibrated_empirically(trained, tmp_path):
    """--metric macro_f1 with --delta 0: each strategy's pick is the fixed-sequence walk on the macro-F1 drop."""
    folder = copy_model(trained, tmp_path)
    calibration = write_rows(tmp_path / "calibration.csv", 200, 10)
    argv = ["calibrate", "--model", str(folder), "--calibration_file", str(calibration), "--max_drop", "0.02",
            "--criterion", "metric", "--metric", "macro_f1", "--delta", "0", "--grid_share", "0",
            "--strategies", "static", "--max_length", "32"]
    assert main(argv) == 0
    record = json.loads((folder / "exit_config.json").read_text())["calibration"]
    assert (record["metric"], record["method"], record["p_value"]) == ("macro_f1", "empirical", None)
    static = record["strategies"]["static"]
    assert static["empirical_risk"] <= 0.02
    from sklearn.metrics import f1_score
    from transformers import AutoTokenizer

    from hf_multiexit.data import load_text_files, make_collator

    model = MultiExitBertForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = load_text_files(validation_file=calibration, label_names=["0", "1"], tokenizer=tokenizer, max_length=32)
    logits, labels = all_exit_logits(model, data["validation"], make_collator(tokenizer))
    layer = static["setting"].get("exit_layer", 4)
    drop = f1_score(labels, logits[:, -1].argmax(-1), average="macro") - f1_score(
        labels, logits[:, layer - 1].argmax(-1), average="macro")
    assert static["empirical_risk"] == pytest.approx(drop)
