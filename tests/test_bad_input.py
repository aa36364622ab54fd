"""Bad input to training and to `hf-multiexit evaluate`, through the command line and the Python API: one clear
error naming the file or value and the fix, and nothing written to the output folder; and what a killed save leaves."""

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from transformers import AutoConfig, BertConfig, BertForSequenceClassification

import hf_multiexit.data
from hf_multiexit import MultiExitBertForSequenceClassification, PabeeConfig
from hf_multiexit.cli import main
from hf_multiexit.io import atomic_save_pretrained
from hf_multiexit.train import DataArguments, ModelArguments, run_training
from test_checkpoints import BLOCK_HF_MULTIEXIT
from test_modeling import tiny_config
from toy_training import toy_model

MAX_POSITIONS = 64


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, minilm_tokenizer) -> Path:
    """A tiny multi-exit model with MiniLM's tokenizer (which allows 512 tokens) but only 64 positions."""
    folder = tmp_path_factory.mktemp("tiny")
    config = tiny_config(vocab_size=minilm_tokenizer.vocab_size, max_position_embeddings=MAX_POSITIONS, num_labels=2)
    toy_model(**config.to_diff_dict()).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return folder


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


GOOD_CSV = "sentence,label\na fine film,1\na dull film,0\n"
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"


def missing_file(tmp, checkpoint, monkeypatch):
    return {"train_file": tmp / "missing.csv"}, FileNotFoundError, r"missing\.csv does not exist"


def unreadable_file(tmp, checkpoint, monkeypatch):
    locked = write(tmp / "locked.csv", GOOD_CSV)

    def denied(file, *args, **kwargs):  # tests run as root here, where chmod 000 does not stop reading
        if Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr(hf_multiexit.data, "open", denied, raising=False)
    return {"train_file": locked}, PermissionError, r"locked\.csv cannot be read: permission denied\. Make it readable \(`chmod a\+r"


def wrong_columns(tmp, checkpoint, monkeypatch):
    path = write(tmp / "columns.csv", "text,label\na fine film,1\n")
    return {"train_file": path}, ValueError, r"columns\.csv, line 2: missing column\(s\) \['sentence'\].*\(set text_columns= and label_column=\), found \['text', 'label'\]"


def empty_split(tmp, checkpoint, monkeypatch):
    path = write(tmp / "empty_dev.csv", "sentence,label\n")
    return {"validation_file": path}, ValueError, r"empty_dev\.csv has no data rows"


def unknown_label(tmp, checkpoint, monkeypatch):
    rows = "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tEntailment\n"
    write(tmp / "glue" / "RTE" / "train.tsv", rows)
    write(tmp / "glue" / "RTE" / "dev.tsv", rows)
    return (
        {"task": "rte", "data_dir": tmp / "glue", "train_file": None, "validation_file": None},
        ValueError,
        r"RTE/train\.tsv, line 3: unknown label 'Entailment' for RTE; valid labels: entailment, not_entailment",
    )


def nan_regression_label(tmp, checkpoint, monkeypatch):
    row = "0\tg\tf\t2012\t0\tnone\tnone\ta\tb\t{}\n"
    write(tmp / "glue" / "STS-B" / "train.tsv", STSB_HEADER + row.format("1.5") + row.format("nan"))
    write(tmp / "glue" / "STS-B" / "dev.tsv", STSB_HEADER + row.format("1.5"))
    return (
        {"task": "stsb", "data_dir": tmp / "glue", "train_file": None, "validation_file": None},
        ValueError,
        r"STS-B/train\.tsv, line 3: regression label 'nan' is not a finite number",
    )


def non_utf8_bytes(tmp, checkpoint, monkeypatch):
    path = write(tmp / "latin1.csv", b"sentence,label\ncaf\xe9 noir,1\n")
    return {"train_file": path}, ValueError, r"latin1\.csv is not valid UTF-8: byte 0xe9 at byte offset 18 \(line 2\).*iconv"


def max_length_above_positions(tmp, checkpoint, monkeypatch):
    return (
        {"max_length": 128},
        ValueError,
        rf"max_length=128 is above the {MAX_POSITIONS} positions of .*; pass --max_length {MAX_POSITIONS} or less",
    )


def truncate_weights(checkpoint: Path, folder: Path) -> Path:
    """A copy of `checkpoint` whose `model.safetensors` lost its second half, as an interrupted copy leaves it."""
    shutil.copytree(checkpoint, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return weights


TRUNCATED = r"truncated/model\.safetensors is truncated or corrupt \(\d+ bytes where its header describes \d+\).*save it again.*download it again"


def truncated_weights(tmp, checkpoint, monkeypatch):
    truncate_weights(checkpoint, tmp / "truncated")
    return {"model_name_or_path": tmp / "truncated"}, OSError, TRUNCATED


def newer_exit_config(tmp, checkpoint, monkeypatch):
    folder = Path(shutil.copytree(checkpoint, tmp / "newer"))
    exit_config = json.loads((folder / "exit_config.json").read_text())
    (folder / "exit_config.json").write_text(json.dumps({**exit_config, "format_version": 2, "exit_budget": 0.5}))
    return (
        {"model_name_or_path": folder},
        ValueError,
        r"newer/exit_config\.json has field\(s\) \['exit_budget'\] that this version does not know \(format_version 2.*Upgrade hf-multiexit",
    )


def missing_model_folder(tmp, checkpoint, monkeypatch):
    monkeypatch.chdir(tmp)  # a relative path, which transformers would take for a malformed Hub repo id
    return (
        {"model_name_or_path": "./runs/pabee"},
        FileNotFoundError,
        r"--model_name_or_path './runs/pabee': no such folder \(.*/runs/pabee\); pass a BERT or multi-exit checkpoint",
    )


def duplicated_column(tmp, checkpoint, monkeypatch):
    path = write(tmp / "dup.csv", "sentence,label,sentence\na fine film,1,a dull film\n")
    return {"train_file": path}, ValueError, r"dup\.csv, line 1: column 'sentence' appears 2 times in the header"


def label_only_in_validation(tmp, checkpoint, monkeypatch):
    path = write(tmp / "dev3.csv", GOOD_CSV + "an odd film,2\n")
    return (
        {"validation_file": path},
        ValueError,
        r"dev3\.csv, line 4: label '2' does not occur in the training file .*train\.csv.*labels seen in training: \['0', '1'\]",
    )


def string_labels(tmp, checkpoint, monkeypatch):
    words = "sentence,label\na fine film,good\na dull film,bad\n"
    return (
        {"train_file": write(tmp / "words.csv", words), "validation_file": write(tmp / "words_dev.csv", words)},
        ValueError,
        r"words\.csv, line 2: label 'good' is not a number.*--class_names bad good on the command line",
    )


def class_names_with_glue_task(tmp, checkpoint, monkeypatch):
    return (
        {"task": "sst2", "train_file": None, "validation_file": None, "class_names": ["bad", "good"]},
        ValueError,
        r"--class_names \['bad', 'good'\] names the classes of --train_file/--validation_file labels; a GLUE --task "
        r"has its own",
    )


def unknown_metric(tmp, checkpoint, monkeypatch):
    return {"metric": "auc"}, ValueError, r"Unknown metric='auc'; valid metrics are \['accuracy', 'f1', 'macro_f1'"


def metric_not_fitting_the_classes(tmp, checkpoint, monkeypatch):
    return {"metric": "pearson"}, ValueError, r"metric='pearson' does not fit classification with 2 classes"


CASES = [unknown_metric, metric_not_fitting_the_classes, missing_file, unreadable_file, wrong_columns, empty_split, unknown_label, nan_regression_label, non_utf8_bytes,
         max_length_above_positions, truncated_weights, newer_exit_config, missing_model_folder, duplicated_column,
         label_only_in_validation, string_labels, class_names_with_glue_task]


def training_options(tmp_path, checkpoint):
    return {
        "model_name_or_path": checkpoint, "train_file": write(tmp_path / "train.csv", GOOD_CSV),
        "validation_file": write(tmp_path / "dev.csv", GOOD_CSV), "max_length": 32, "output_dir": tmp_path / "out",
        "report_to": "none", "use_cpu": True, "save_strategy": "no", "num_train_epochs": 1,
    }


def run_cli(options, capsys):
    argv = ["train", "--method", "pabee"]
    for name, value in options.items():
        if value is not None:
            argv += [f"--{name}", *map(str, value if isinstance(value, list) else [value])]
    assert main(argv) == 2
    return capsys.readouterr().err


def run_api(options):
    values = {name: str(value) if isinstance(value, Path) else value for name, value in options.items()}

    def pick(cls):
        return {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values}

    run_training(ModelArguments(**pick(ModelArguments)), DataArguments(**pick(DataArguments)), PabeeConfig(**pick(PabeeConfig)), "pabee")


@pytest.mark.parametrize("interface", ["cli", "api"])
@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_bad_input_gives_one_clear_error_and_writes_nothing(tmp_path, tiny_checkpoint, monkeypatch, capsys, case, interface):
    options = training_options(tmp_path, tiny_checkpoint)
    changes, error, message = case(tmp_path, tiny_checkpoint, monkeypatch)
    options.update(changes)
    if interface == "cli":
        err = run_cli(options, capsys)  # progress bars may come before the error
        assert "Traceback" not in err and err.count("error: ") == 1
        assert err.splitlines()[-1].startswith("hf-multiexit train: error: ") and re.search(message, err), err
    else:
        with pytest.raises(error, match=message):
            run_api(options)
    assert not (tmp_path / "out").exists()


def test_good_input_trains(tmp_path, tiny_checkpoint):
    """The baseline the cases change one thing of: it trains and saves."""
    run_api(training_options(tmp_path, tiny_checkpoint))
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "eval_results.json").is_file()


def test_metric_for_a_custom_file(tmp_path, tiny_checkpoint):
    """`--metric macro_f1` on a file: every exit reports it first, and it is the primary metric."""
    options = training_options(tmp_path, tiny_checkpoint)
    argv = ["train", "--method", "pabee", "--metric", "macro_f1"]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert report["primary_metric"] == "macro_f1"
    assert [set(entry["metrics"]) for entry in report["per_exit"]] == [{"macro_f1", "accuracy"}] * 4
    assert "eval_exit_1_macro_f1" in report["raw"]


def test_class_names_from_the_command_line(tmp_path, tiny_checkpoint):
    """What the string-label error suggests works: `--class_names` gives the classes of word labels, in id order."""
    words = "sentence,label\na fine film,good\na dull film,bad\n"
    options = training_options(tmp_path, tiny_checkpoint)
    options.update(train_file=write(tmp_path / "words.csv", words), validation_file=write(tmp_path / "words_dev.csv", words))
    argv = ["train", "--method", "pabee", "--class_names", "bad", "good"]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    assert main(argv) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "bad", "1": "good"}


# ------------------------------------------------------------------------------------------------- evaluate
def plain_bert(tmp, checkpoint):
    """A plain BERT checkpoint with the same tokenizer: `from_pretrained` would give it random exits."""
    vocab_size = json.loads((checkpoint / "config.json").read_text())["vocab_size"]
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=MAX_POSITIONS, num_labels=2)
    folder = tmp / "bert"
    BertForSequenceClassification(config).save_pretrained(folder)
    for path in checkpoint.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy(path, folder / path.name)
    return {"--model": folder}, r"--model '.*bert' is a plain 'bert' checkpoint, not a multi-exit one: its exits were never trained"


def truncated_evaluate_weights(tmp, checkpoint):
    truncate_weights(checkpoint, tmp / "truncated")
    return {"--model": tmp / "truncated"}, TRUNCATED


def missing_evaluate_model(tmp, checkpoint):
    return {"--model": tmp / "runs" / "pabee"}, r"--model '.*runs/pabee': no such folder"


def never_loaded(monkeypatch):
    """Values that are wrong whatever the model must fail before anything is read: loading raises here."""

    def refuse(*args, **kwargs):
        raise AssertionError("loaded a model before checking the arguments")

    monkeypatch.setattr(AutoConfig, "from_pretrained", refuse)
    monkeypatch.setattr(MultiExitBertForSequenceClassification, "from_pretrained", refuse)


def negative_patience(tmp, checkpoint, monkeypatch):
    never_loaded(monkeypatch)
    return {"--exit_strategy": "patience", "--patience": "2,-1"}, (
        r"--patience='2,-1': patience=-1 is out of range: it must be an integer >= 0")


def confidence_above_one(tmp, checkpoint, monkeypatch):
    never_loaded(monkeypatch)
    return {"--exit_strategy": "confidence", "--thresholds": "0.9,1.5"}, (
        r"--thresholds='0.9,1.5': confidence_threshold=1.5 is out of range: it must be a number in \[0.0, 1.0\]")


def unused_patience(tmp, checkpoint, monkeypatch):
    never_loaded(monkeypatch)
    return {"--exit_strategy": "entropy", "--patience": "1,2"}, (
        r"--patience is given, but no strategy in --exit_strategy='entropy' reads it; add patience to --exit_strategy "
        r"or leave --patience out")


def exit_layer_not_in_model(tmp, checkpoint, monkeypatch):
    # Which layers have exits depends on the model: checked on its config.json, before the weights are read.
    monkeypatch.setattr(MultiExitBertForSequenceClassification, "from_pretrained",
                        lambda *a, **k: pytest.fail("loaded the weights before checking --exit_layers"))
    return {"--exit_strategy": "static", "--exit_layers": "2,9"}, (
        r"--exit_layers='2,9': exit_layer=9 is not an exit of this model; valid exit layers are \[1, 2, 3, 4\]")


EVALUATE_CASES = [plain_bert, truncated_evaluate_weights, missing_evaluate_model]
EARLY_CASES = [negative_patience, confidence_above_one, unused_patience, exit_layer_not_in_model]


def evaluate_cli(tmp_path, checkpoint, changes, capsys):
    args = {"--model": checkpoint, "--validation_file": write(tmp_path / "dev.csv", GOOD_CSV), "--max_length": 32,
            "--exit_strategy": "entropy", "--wall_clock": "false", "--output": tmp_path / "out" / "report.json",
            **changes}
    code = main(["evaluate", *[str(item) for pair in args.items() for item in pair]])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("error: ") == 1, err
    assert not (tmp_path / "out").exists()
    return err.splitlines()[-1]


@pytest.mark.parametrize("case", EVALUATE_CASES, ids=[case.__name__ for case in EVALUATE_CASES])
def test_evaluate_refuses_bad_models_and_writes_no_report(tmp_path, tiny_checkpoint, capsys, case):
    changes, message = case(tmp_path, tiny_checkpoint)
    line = evaluate_cli(tmp_path, tiny_checkpoint, changes, capsys)
    assert line.startswith("hf-multiexit evaluate: error: ") and re.search(message, line), line


@pytest.mark.parametrize("case", EARLY_CASES, ids=[case.__name__ for case in EARLY_CASES])
def test_evaluate_checks_sweep_values_before_loading_the_model(tmp_path, tiny_checkpoint, monkeypatch, capsys, case):
    changes, message = case(tmp_path, tiny_checkpoint, monkeypatch)
    line = evaluate_cli(tmp_path, tiny_checkpoint, changes, capsys)
    assert re.search(message, line), line


def test_evaluate_still_runs_a_multi_exit_checkpoint(tmp_path, tiny_checkpoint):
    """The baseline the evaluate cases change one thing of."""
    args = ["evaluate", "--model", str(tiny_checkpoint), "--validation_file", str(write(tmp_path / "dev.csv", GOOD_CSV)),
            "--max_length", "32", "--exit_strategy", "patience,static", "--patience", "1", "--exit_layers", "2",
            "--wall_clock", "false", "--output", str(tmp_path / "report.json")]
    assert main(args) == 0
    assert [point["params"] for point in json.loads((tmp_path / "report.json").read_text())["points"]] == [
        {"patience": 1}, {"exit_layer": 2}]


# ------------------------------------------------------------------------------------------------- truncated weights
REMOTE_LOAD = BLOCK_HF_MULTIEXIT + textwrap.dedent(
    """
    from transformers import AutoModelForSequenceClassification

    try:
        AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True)
    except OSError as err:
        print(type(err).__name__, err)
    """
)


def test_truncated_weights_name_the_file_in_python_and_through_remote_code(tmp_path, tiny_checkpoint):
    weights = truncate_weights(tiny_checkpoint, tmp_path / "truncated")
    with pytest.raises(OSError, match=TRUNCATED):
        MultiExitBertForSequenceClassification.from_pretrained(weights.parent)
    # Without hf-multiexit, the checkpoint's own copy of the modeling file loads it (trust_remote_code=True).
    script = tmp_path / "load.py"
    script.write_text(REMOTE_LOAD)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    proc = subprocess.run([sys.executable, str(script), str(weights.parent)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search("OSError .*" + TRUNCATED, proc.stdout), proc.stdout + proc.stderr[-3000:]


# ------------------------------------------------------------------------------------------------- killed saves
def test_a_save_removes_the_temporary_folders_of_dead_saves_only(tmp_path):
    """A save killed mid-way leaves `.saving-<host>-<pid>-*` with a copy of the model; the next save into the folder
    removes it when its process is gone (or, where the pid cannot be checked, when it is a day old), and leaves the
    folders of saves still running alone."""
    folder = tmp_path / "out"
    host = socket.gethostname()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid names no running process now
    stale = {
        f".saving-{host}-{finished.pid}-k1ll3d": 0,  # this host, process gone
        ".saving-oldname1": 2 * 86400,  # named without a pid by an older version, two days old
        ".saving-otherhost-1-x7": 2 * 86400,  # another host's, two days old
    }
    live = {
        f".saving-{host}-{os.getpid()}-runs": 0,  # a save still running (this very process)
        ".saving-otherhost-1-y8": 60,  # another host's, one minute old: its process cannot be checked from here
        ".saving-oldname2": 60,
    }
    for name, age in {**stale, **live}.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "model.safetensors").write_bytes(b"0" * 1024)
        os.utime(folder / name, (time.time() - age, time.time() - age))
    model = toy_model(seed=1)
    atomic_save_pretrained(folder, model)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == sorted(live)
    assert (folder / "model.safetensors").stat().st_size > 1024


def test_a_trainer_start_removes_a_dead_final_save(tmp_path):
    """A run killed while saving its final model leaves `.saving-*` in output_dir; the next trainer there removes it."""
    from hf_multiexit import PabeeTrainer

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    stale = tmp_path / f".saving-{socket.gethostname()}-{finished.pid}-k1ll3d"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"0" * 1024)
    PabeeTrainer(model=toy_model(seed=1), args=PabeeConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    assert not stale.exists()
