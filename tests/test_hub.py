"""Publishing: the generated model card, `hf-multiexit push`, Trainer's `push_to_hub`, the pipeline, bad input, and an
end-to-end round trip through a Hub served on 127.0.0.1 by `fake_hub.FakeHub` with the real `huggingface_hub` client."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.errors import RepositoryNotFoundError
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer, pipeline

from fake_hub import TOKEN, FakeHub
from hf_multiexit import (
    ExitConfig,
    MultiExitBertForSequenceClassification,
    MultiExitTextClassificationPipeline,
    PabeeConfig,
    PabeeTrainer,
)
from hf_multiexit.cli import main
from hf_multiexit.hub import PushError, build_model_card, check_repo_id, push_model
from test_checkpoints import REMOTE_SCRIPT
from test_modeling import padded_batch
from test_trainers import ToyTask, toy_args, toy_model

ENTROPY = 0.9
LABELS = ["sad", "neutral", "happy"]
EVAL_RESULTS = {
    "primary_metric": "accuracy",
    "method": "romebert",
    "final": {"accuracy": 0.8},
    "per_exit": [{"layer": layer, "metrics": {"accuracy": round(0.5 + 0.075 * layer, 4)}} for layer in range(1, 5)],
    "config": {"task": "sst2", "gamma": 0.9, "temperature": 3.0},
    "train_runtime": 12.5,
}


def save_tokenizer(folder):
    vocab = folder / "vocab.txt"
    folder.mkdir(parents=True, exist_ok=True)
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]) + "\n")
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(folder)
    vocab.unlink()


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """A tiny multi-exit model trained for a few steps, saved as `hf-multiexit train` leaves it: weights, entropy
    exit rule, tokenizer, `eval_results.json` and Trainer's `training_args.bin` (not published)."""
    tmp = tmp_path_factory.mktemp("trained")
    model = toy_model(num_labels=3, id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)})
    model.exit_config = ExitConfig(exit_strategy="entropy", entropy_threshold=ENTROPY)
    trainer = PabeeTrainer(model=model, args=toy_args(PabeeConfig, tmp, num_train_epochs=1), train_dataset=ToyTask(16))
    trainer.train()
    folder = tmp / "out"
    trainer.save_model(folder)
    save_tokenizer(folder)
    (folder / "eval_results.json").write_text(json.dumps(EVAL_RESULTS))
    assert (folder / "training_args.bin").is_file()
    return folder


@pytest.fixture
def model_folder(trained_folder, tmp_path):
    """A copy of the trained model that a test may change."""
    return shutil.copytree(trained_folder, tmp_path / "model")


def point(strategy, params, accuracy, avg_exit_layer):
    return {"strategy": strategy, "params": params, "metrics": {"accuracy": accuracy}, "avg_exit_layer": avg_exit_layer,
            "layer_speedup": 4 / avg_exit_layer, "flops_speedup": 3.9 / avg_exit_layer, "wall_speedup": 3.5 / avg_exit_layer,
            "seconds": 0.5 * avg_exit_layer}


@pytest.fixture
def report_file(tmp_path):
    """A report as `hf-multiexit evaluate` writes it, with a plot beside it named by a relative path."""
    report = {
        "task": "sst2",
        "model": "model",
        "num_layers": 4,
        "full_depth": {"metrics": {"accuracy": 0.81}, "seconds": 2.0},
        "per_exit": [{"layer": layer, "metrics": {"accuracy": 0.6 + 0.05 * layer}} for layer in range(1, 5)],
        "points": [
            point("entropy", {"entropy_threshold": 0.3}, 0.805, 3.2),
            point("entropy", {"entropy_threshold": ENTROPY}, 0.79, 2.0),
            point("patience", {"patience": 1}, 0.80, 2.5),
        ],
        "plot": "curve.png",
    }
    (tmp_path / "curve.png").write_bytes(b"\x89PNG\r\n\x1a\n fake plot bytes")
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return path


# ------------------------------------------------------------------------------------------------- the card
def test_card_from_eval_results_has_metadata_and_per_exit_table(model_folder):
    card = build_model_card(model_folder, "org/tiny-romebert", base_model="sentence-transformers/all-MiniLM-L6-v2",
                            license="apache-2.0")
    parsed = ModelCard(str(card))
    data = parsed.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert {"multi-exit", "early-exit", "romebert"} <= set(data.tags)
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and data.license == "apache-2.0"
    assert data.datasets == ["nyu-mll/glue"]
    [final] = data.eval_results  # no report: the final exit only
    assert (final.dataset_type, final.dataset_config, final.dataset_split) == ("nyu-mll/glue", "sst2", "validation")
    assert final.metric_type == "accuracy" and final.metric_value == 0.8 and "final exit" in final.metric_name
    text = parsed.text
    assert "| exit layer | accuracy |" in text and "| 3 | 0.725 |" in text
    assert "RomeBERT" in text and "https://arxiv.org/abs/2101.09755" in text
    assert 'from_pretrained(repo, trust_remote_code=True)' in text and 'repo = "org/tiny-romebert"' in text
    assert f"`entropy_threshold={ENTROPY}`" in text and 'exit_strategy="patience", patience=2' in text
    assert "trade-off" not in text and "![" not in text


def test_card_names_only_the_arguments_the_saved_rule_reads_for_the_problem_type(model_folder):
    ExitConfig(exit_strategy="patience", patience=3).save_pretrained(model_folder)
    text = ModelCard(str(build_model_card(model_folder, "org/tiny-pabee"))).text
    assert "is `exit_strategy=patience`, `patience=3`. Any call" in text  # regression_threshold is for regression only


def test_card_with_report_has_trade_off_table_plot_and_default_exit_result(model_folder, report_file):
    card = build_model_card(model_folder, "org/tiny-romebert", report=report_file)
    data, text = card.data, card.text
    results = {r.metric_name: r.metric_value for r in data.eval_results}
    assert results["accuracy (final exit, all 4 layers)"] == 0.81  # the report's full depth, not eval_results.json
    default = [name for name in results if "default exit: entropy entropy_threshold=0.9" in name]
    assert len(default) == 1 and results[default[0]] == 0.79 and "2.00x fewer layers" in default[0]
    assert "| none (full depth) | - | 0.810 | 4 | 1.00x | 1.00x | 1.00x |" in text
    assert "| entropy (saved default) | `entropy_threshold=0.9` | 0.790 | 2.00 | 2.00x | 1.95x | 1.75x |" in text
    assert "| patience | `patience=1` | 0.800 | 2.50 | 1.60x | 1.56x | 1.40x |" in text
    assert "![Quality against speed-up for each exit strategy](trade_off.png)" in text
    assert "| 2 | 0.700 |" in text  # per-exit table from the report
    # Within 1 point of 0.81: 0.805 (1.25x) and 0.80 (1.60x); the advice names the faster one.
    assert 'within 1 point of full depth is `exit_strategy="patience"` with `patience=1`' in text


def test_card_states_the_saved_rules_calibration_next_to_its_measured_numbers(model_folder, report_file):
    record = {"method": "learn_then_test", "criterion": "agreement", "metric": None, "max_drop": 0.01, "delta": 0.1,
              "n": 5388, "fallback": False, "empirical_risk": 0.0061, "layer_speedup": 2.41, "strategy": "entropy",
              "data": {"source": "held-out training split"}, "strategies": {"entropy": {}, "patience": {}}}
    ExitConfig(exit_strategy="entropy", entropy_threshold=ENTROPY, calibration=record).save_pretrained(model_folder)
    text = build_model_card(model_folder, "org/tiny-romebert", report=report_file).text
    assert (
        f"is `exit_strategy=entropy`, `entropy_threshold={ENTROPY}`, `normalize_entropy=False`. It was chosen by `hf-multiexit calibrate` on 5388 "
        "training examples held out before training, as the fastest of entropy, patience for which its disagreement "
        "with full depth on new data of the same distribution is at most 0.01 with probability at least 0.9 "
        "(Learn-then-Test, Angelopoulos et al. 2021, as in CALM, Schuster et al. 2022); there it had a disagreement "
        "with full depth of 0.0061 and 2.41x fewer layers. Measured on GLUE SST-2 validation: accuracy 0.790 vs. "
        "0.810 at full depth, 2.00x fewer layers, 1.75x wall-clock. Any call"
    ) in text
    fallback = {**record, "fallback": True, "method": "empirical", "criterion": "metric", "metric": "accuracy"}
    ExitConfig(exit_strategy="none", calibration=fallback).save_pretrained(model_folder)
    text = build_model_card(model_folder, "org/tiny-romebert").text
    assert ("certified no early-exit setting on 5388 training examples held out before training within a budget of "
            "0.01 (accuracy drop), so the saved rule is full depth.") in text
    ExitConfig(exit_strategy="entropy", entropy_threshold=ENTROPY).save_pretrained(model_folder)
    assert "calibrate" not in build_model_card(model_folder, "org/tiny-romebert").text


def test_card_only_writes_readme_and_uploads_nothing(model_folder, report_file, tmp_path, capsys):
    out = tmp_path / "cards" / "README.md"
    before = sorted(os.listdir(model_folder))
    assert main(["push", "--model", str(model_folder), "--repo_id", "org/tiny", "--report", str(report_file),
                 "--card_only", str(out)]) == 0
    assert ModelCard.load(out).data.model_name == "tiny"
    assert sorted(os.listdir(model_folder)) == before and os.listdir(out.parent) == ["README.md"]


def test_installed_pipeline_class_takes_exit_arguments(model_folder):
    classify = pipeline("text-classification", model=str(model_folder), pipeline_class=MultiExitTextClassificationPipeline)
    [static] = classify("w1 w2 w3", exit_strategy="static", exit_layer=3)
    assert static["exit_layer"] == 3 and static["label"] in LABELS
    assert {r["exit_layer"] for r in classify(["w4", "w5 w6"], exit_strategy="none")} == {4}
    with pytest.raises(ValueError, match="exit_layer=9 is not an exit of this model"):
        classify("w1", exit_strategy="static", exit_layer=9)


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("repo_id", ["no-namespace", "org/has space", "org//x", "org/x/y", "org/-x", "org/a--b", "org/x.git", ""])
def test_malformed_repo_id_is_rejected_before_anything_happens(model_folder, tmp_path, capsys, repo_id):
    out = tmp_path / "README.md"
    assert main(["push", "--model", str(model_folder), "--repo_id", repo_id, "--card_only", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"repo_id={repo_id!r}" in err and "'org/name'" in err
    assert not out.exists()


def test_good_repo_ids_pass():
    for repo_id in ("org/romebert-minilm-l6-sst2", "User_1/model.v2", "a/b"):
        assert check_repo_id(repo_id) == repo_id


@pytest.mark.parametrize("name", ["nothing-here", "org/x"])  # also where a Hub id would look the same
def test_missing_model_folder(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert main(["push", "--model", name, "--repo_id", "org/x", "--card_only", str(tmp_path / "c.md")]) == 2
    err = capsys.readouterr().err
    assert f"Model folder {name!r}: no such folder ({tmp_path / name})" in err
    assert "--output_dir of `hf-multiexit train`" in err
    assert not (tmp_path / "c.md").exists()


def test_folder_that_is_not_a_multi_exit_model(tmp_path, capsys):
    plain = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37)).save_pretrained(plain)
    assert main(["push", "--model", str(plain), "--repo_id", "org/x", "--card_only", str(tmp_path / "c.md")]) == 2
    err = capsys.readouterr().err
    assert "model_type='bert'" in err and "MultiExitBertForSequenceClassification.from_pretrained" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["push", "--model", str(empty), "--repo_id", "org/x"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "c.md").exists()


def test_incomplete_multi_exit_folder_names_the_missing_files(model_folder, capsys):
    (model_folder / "exit_config.json").unlink()
    (model_folder / "tokenizer.json").unlink()
    (model_folder / "tokenizer_config.json").unlink()
    assert main(["push", "--model", str(model_folder), "--repo_id", "org/x"]) == 2
    err = capsys.readouterr().err
    assert "exit_config.json" in err and "tokenizer files" in err


def test_report_that_is_not_an_evaluate_report(model_folder, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"num_layers": 4, "points": []}))
    assert main(["push", "--model", str(model_folder), "--repo_id", "org/x", "--report", str(bad)]) == 2
    assert "lacks ['full_depth', 'per_exit']" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- against the fake Hub
@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


@pytest.fixture
def online(hub, monkeypatch, tmp_path):
    """This process's `huggingface_hub` pointed at `hub` (the test session is offline otherwise)."""
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # Trainer's shared client, built with the endpoint
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return hub


def tree(folder):
    """Every file under `folder` with its size and modification time."""
    paths = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    return {os.path.relpath(path, folder): (os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in paths}


@pytest.mark.parametrize("route, status", [("lfs_upload", 507), ("commit", 500)])
def test_server_error_mid_upload_leaves_nothing_behind(online, model_folder, tmp_path, route, status):
    hub, hf_home = online, tmp_path / "hf_home"
    before = tree(model_folder)
    hub.fail(route, status)
    with pytest.raises(PushError) as info:
        push_model(model_folder, "org/broken", token=TOKEN)
    message = str(info.value)
    assert "'org/broken'" in message and "nothing was committed" in message and "deleted again" in message
    assert "run the same push again" in message
    assert "org/broken" not in hub.repos  # the repo this push created is gone again
    assert tree(model_folder) == before
    assert not hf_home.exists() or tree(hf_home) == {}
    hub.heal(route)
    commit = push_model(model_folder, "org/broken", token=TOKEN)
    assert hub.repos["org/broken"].head == commit.oid and "model.safetensors" in hub.files("org/broken")


def test_push_command_reports_a_failed_upload(online, model_folder, capsys):
    online.fail("preupload", 403)
    assert main(["push", "--model", str(model_folder), "--repo_id", "org/denied"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hf-multiexit push: error: Pushing") and "403" in err and "'org/denied'" in err
    assert "org/denied" not in online.repos


def test_dropped_connection_mid_upload_deletes_the_created_repo(online, model_folder, capsys):
    """The server closes the connection on the commit, the last step of an upload, without an answer."""
    hub = online
    hub.drop("commit")
    with pytest.raises(PushError) as info:
        push_model(model_folder, "org/dropped", token=TOKEN)
    message = str(info.value)
    assert "'org/dropped'" in message and "RemoteProtocolError: Server disconnected without sending a response" in message
    assert "The repo this push created was deleted again" in message and "org/dropped" not in hub.repos
    assert f"Check the network connection to {hub.endpoint}" in message and "run the same push again" in message
    # The server gone altogether: the clean-up cannot reach it either, and says what is left and how to remove it.
    hub.drop("delete")
    assert main(["push", "--model", str(model_folder), "--repo_id", "org/gone"]) == 1
    err = capsys.readouterr().err  # the upload's progress bars come first
    assert "Traceback" not in err, err
    assert err.count("error: ") == 1 and err.splitlines()[-1].startswith("hf-multiexit push: error: Pushing")
    assert "The repo this push created could not be deleted (RemoteProtocolError: Server disconnected" in err
    assert "delete it with `hf repos delete org/gone`" in err and "org/gone" in hub.repos


def test_dropped_connection_into_an_existing_repo_says_the_commit_may_have_landed(online, model_folder):
    hub = online
    push_model(model_folder, "org/kept", token=TOKEN)
    hub.drop("commit")
    with pytest.raises(PushError) as info:
        push_model(model_folder, "org/kept", token=TOKEN, license="mit")  # a changed card: not an empty commit
    message = str(info.value)
    assert "nothing was committed" not in message and "org/kept" in hub.repos
    assert "failed: RemoteProtocolError: Server disconnected without sending a response." in message
    assert f"The Hub gave no answer to the commit, so it may have landed or not: see {hub.endpoint}/org/kept/commits/main." in message


def test_server_error_into_an_existing_repo_keeps_it_unchanged(online, model_folder):
    hub = online
    push_model(model_folder, "org/kept", token=TOKEN)
    head, files = hub.repos["org/kept"].head, hub.files("org/kept")
    hub.fail("commit", 500)
    with pytest.raises(PushError, match="nothing was committed"):
        push_model(model_folder, "org/kept", token=TOKEN, license="mit")
    assert hub.repos["org/kept"].head == head and hub.files("org/kept") == files


def test_trainer_push_to_hub_publishes_the_same_files_and_card_as_push(online, tmp_path):
    hub = online
    # Checkpoint pushes during training too (hub_strategy every_save): they upload output_dir as it stands.
    args = toy_args(PabeeConfig, tmp_path, num_train_epochs=1, push_to_hub=True, hub_model_id="org/trainer-push",
                    hub_token=TOKEN, save_strategy="steps", save_steps=1, hub_strategy="every_save")
    trainer = PabeeTrainer(model=toy_model(), args=args, train_dataset=ToyTask(16), eval_dataset=ToyTask(8, seed=1))
    save_tokenizer(tmp_path / "out")
    trainer.processing_class = AutoTokenizer.from_pretrained(tmp_path / "out")
    trainer.train()
    (tmp_path / "out" / "eval_results.json").write_text(json.dumps({**EVAL_RESULTS, "method": "pabee"}))
    trainer.push_to_hub()
    push_model(tmp_path / "out", "org/cli-push", token=TOKEN)
    by_trainer, by_push = hub.files("org/trainer-push"), hub.files("org/cli-push")
    during_training = [files for _, files in hub.repos["org/trainer-push"].commits[:-1]]
    assert any("training_args.bin" in files for files in during_training)
    assert set(by_trainer) == set(by_push) and "training_args.bin" not in by_trainer
    assert {"model.safetensors", "exit_config.json", "modeling_multiexit_bert.py", "tokenizer.json"} <= set(by_trainer)
    for name in by_trainer:
        if name != "README.md":
            assert by_trainer[name] == by_push[name], name
    card = by_trainer["README.md"].decode()
    assert card.replace("trainer-push", "cli-push") == by_push["README.md"].decode()
    assert "PABEE" in card and "pabee" in ModelCard(card).data.tags
    assert "generated automatically according to the information the Trainer" not in card  # Trainer's own card


PUSHED_SCRIPT = REMOTE_SCRIPT + textwrap.dedent(
    """
    # Still without hf_multiexit: the card parses and validates on the Hub, the pipeline takes exit arguments.
    import json
    from huggingface_hub import ModelCard
    from transformers import pipeline

    card = ModelCard.load(folder)
    card.validate()
    classify = pipeline("text-classification", model=folder, trust_remote_code=True)
    json.dump({
        "pipeline_module": type(classify).__module__,
        "default": classify("w1 w2 w3 w4 w5"),
        "static": classify(["w1 w2 w3", "w9"], exit_strategy="static", exit_layer=2),
        "top_k": classify("w1 w2", top_k=None, exit_strategy="none"),
        "card": card.data.to_dict(),
        "results": [[r.metric_name, r.metric_value] for r in card.data.eval_results or []],
    }, open(sys.argv[4], "w"))
    """
)
"""The checkpoint test's script (blocks `import hf_multiexit`, loads by `AutoModel*`, runs two exit rules), then the
card and the pipeline in the same process."""


def run_client(hub, tmp_path, args):
    """Runs `args` in a fresh Python process pointed at `hub`, with its own empty HF_HOME."""
    env = hub.env(tmp_path / "client_home")
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return proc


@pytest.mark.slow
def test_push_then_load_by_repo_id_without_hf_multiexit(online, model_folder, report_file, tmp_path):
    """The must-show round trip: `hf-multiexit push` in one process, then `from_pretrained(repo_id,
    trust_remote_code=True)` in a process where hf_multiexit cannot be imported, identical outputs; the card's
    metadata parses and passes the Hub's YAML check; the pipeline takes exit arguments per call."""
    hub = online
    push = run_client(hub, tmp_path, ["-m", "hf_multiexit.cli", "push", "--model", str(model_folder), "--repo_id",
                                      "org/tiny-romebert", "--private", "--report", str(report_file), "--base_model",
                                      "sentence-transformers/all-MiniLM-L6-v2", "--license", "apache-2.0"])
    assert push.returncode == 0, push.stderr[-3000:]
    assert json.loads(push.stdout)["commit"] == hub.repos["org/tiny-romebert"].head
    repo = hub.repos["org/tiny-romebert"]
    assert repo.private
    files = hub.files("org/tiny-romebert")
    assert set(files) == {
        ".gitattributes", "README.md", "config.json", "model.safetensors", "exit_config.json", "eval_results.json",
        "configuration_multiexit_bert.py", "modeling_multiexit_bert.py", "exit_configuration.py", "exit_strategies.py", "backbones.py",
        "tokenizer.json", "tokenizer_config.json", "report.json", "trade_off.png",
    }
    assert files["model.safetensors"] == (model_folder / "model.safetensors").read_bytes()
    assert {"model.safetensors", "trade_off.png"} <= repo.lfs_paths  # went through LFS, not the commit body
    upload_routes = [name for name, _, _ in hub.requests]
    for route in ("create", "validate_yaml", "preupload", "lfs_batch", "lfs_upload", "lfs_verify", "commit"):
        assert route in upload_routes, route
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_multiexit_bert.")
    assert json.loads(files["exit_config.json"])["entropy_threshold"] == ENTROPY

    # A fresh process that cannot import hf_multiexit loads the model by repo id (the checkpoint test's script).
    hub.requests.clear()
    (tmp_path / "remote.py").write_text(PUSHED_SCRIPT)
    ids, mask, _ = padded_batch(6)
    torch.save({"ids": ids, "mask": mask}, tmp_path / "inputs.pt")
    load = run_client(hub, tmp_path, ["remote.py", "org/tiny-romebert", "inputs.pt", "out.pt", "pushed.json"])
    assert load.returncode == 0, load.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt")
    assert result["blocked"]
    model = MultiExitBertForSequenceClassification.from_pretrained(model_folder).eval()
    with torch.no_grad():
        outputs = [model(ids, mask), model(ids, mask, exit_strategy="patience", patience=1)]
    expected = [tensor for out in outputs for tensor in (out.logits, out.exit_layers)]
    for name in ("cls", "base"):  # AutoModelForSequenceClassification, AutoModel
        assert all(map(torch.equal, result[name], expected)), name
    # transformers resolves `main` to the head commit through the model info route, then HEADs and GETs each file
    # at that commit (LFS files: HEAD, then GET from the storage it redirects to, without the token); the tokenizer
    # lists the repo tree (for chat templates); no route the server lacks was asked for.
    assert hub.requests[0][:2] == ("info", "GET")
    config_calls = [method for name, method, path in hub.requests if path == f"/org/tiny-romebert/resolve/{repo.head}/config.json"]
    assert config_calls == ["HEAD", "GET"]
    weights = f"/org/tiny-romebert/resolve/{repo.head}/model.safetensors"
    assert [method for _, method, path in hub.requests if path == weights] == ["HEAD"]  # then storage, no auth
    assert [method for name, method, _ in hub.requests if name == "storage"] == ["GET"] and hub.storage_auth == [None]
    assert {name for name, _, _ in hub.requests} == {"info", "resolve", "storage", "tree", "validate_yaml"}

    # The card parses and validates on the Hub; the pipeline forwards exit arguments given to the call.
    pushed = json.loads((tmp_path / "pushed.json").read_text())
    assert "transformers_modules" in pushed["pipeline_module"]
    assert pushed["card"]["library_name"] == "transformers" and pushed["card"]["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert ["accuracy (final exit, all 4 layers)", 0.81] in pushed["results"]
    assert [r for r in pushed["results"] if "default exit" in r[0]] != []
    assert [r["exit_layer"] for r in pushed["static"]] == [2, 2]
    assert {r["exit_layer"] for r in pushed["top_k"]} == {4} and [r["label"] for r in pushed["top_k"]] != []
    [default] = pushed["default"]
    tokens = AutoTokenizer.from_pretrained(model_folder)("w1 w2 w3 w4 w5", return_tensors="pt")
    with torch.no_grad():
        local = model(**tokens)
    assert default["exit_layer"] == int(local.exit_layers[0]) and default["label"] == LABELS[int(local.logits.argmax())]
    # Private: without a token the repo is not visible.
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("org/tiny-romebert")


@pytest.mark.slow
def test_real_minilm_push_and_load_back(online, minilm_path, minilm_tokenizer, tmp_path):
    """Real weights: a plain `from_pretrained` of MiniLM-L6 with exits, published, loaded back by repo id in a process
    without hf_multiexit, with identical outputs."""
    hub = online
    torch.manual_seed(0)
    model = MultiExitBertForSequenceClassification.from_pretrained(minilm_path, num_labels=2, exit_pooling="mean").eval()
    model.exit_config = ExitConfig(exit_strategy="patience", patience=1)
    folder = tmp_path / "minilm"
    model.save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    push_model(folder, "org/minilm-multiexit", base_model="sentence-transformers/all-MiniLM-L6-v2")
    assert hub.files("org/minilm-multiexit")["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    (tmp_path / "remote.py").write_text(PUSHED_SCRIPT)
    batch = minilm_tokenizer(["a gorgeous, witty film", "dull and overlong", "fine"], padding=True, return_tensors="pt")
    torch.save({"ids": batch["input_ids"], "mask": batch["attention_mask"]}, tmp_path / "inputs.pt")
    load = run_client(hub, tmp_path, ["remote.py", "org/minilm-multiexit", "inputs.pt", "out.pt", "pushed.json"])
    assert load.returncode == 0, load.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        expected = model(batch["input_ids"], batch["attention_mask"])
    # Same code, another process: CPU kernels may round differently from one process to the next (9e-9 measured
    # with transformers 5.24, where the same folder loaded by hf_multiexit in the client gives the remote bits
    # exactly), so the logits are compared to 1e-6 and the exit layers exactly.
    assert result["blocked"]
    torch.testing.assert_close(result["cls"][0], expected.logits, rtol=0, atol=1e-6)
    assert torch.equal(result["cls"][1], expected.exit_layers)
    pushed = json.loads((tmp_path / "pushed.json").read_text())
    assert [r["exit_layer"] for r in pushed["static"]] == [2, 2] and pushed["card"]["library_name"] == "transformers"
