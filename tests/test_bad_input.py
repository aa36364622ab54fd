"""Bad input to training, through the command line and the Python API: one clear error naming the file or value and
the fix, and nothing written to the output folder."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

import hf_multiexit.data
from hf_multiexit import PabeeConfig
from hf_multiexit.cli import main
from hf_multiexit.train import DataArguments, ModelArguments, run_training
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


def truncated_weights(tmp, checkpoint, monkeypatch):
    folder = Path(shutil.copytree(checkpoint, tmp / "truncated"))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return {"model_name_or_path": folder}, ValueError, r"truncated.* cannot be read \(.*\): a \.safetensors file there is truncated or corrupt.*again"


def newer_exit_config(tmp, checkpoint, monkeypatch):
    folder = Path(shutil.copytree(checkpoint, tmp / "newer"))
    exit_config = json.loads((folder / "exit_config.json").read_text())
    (folder / "exit_config.json").write_text(json.dumps({**exit_config, "format_version": 2, "exit_budget": 0.5}))
    return (
        {"model_name_or_path": folder},
        ValueError,
        r"newer/exit_config\.json has field\(s\) \['exit_budget'\] that this version does not know \(format_version 2.*Upgrade hf-multiexit",
    )


CASES = [missing_file, unreadable_file, wrong_columns, empty_split, unknown_label, nan_regression_label, non_utf8_bytes,
         max_length_above_positions, truncated_weights, newer_exit_config]


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
            argv += [f"--{name}", str(value)]
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
