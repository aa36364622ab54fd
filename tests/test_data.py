"""Tests for hf_multiexit.data: GLUE TSV loading, custom text files, tokenisation, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from hf_multiexit.data import (
    GLUE_TASKS,
    get_glue_task,
    load_glue,
    load_text_files,
    make_collator,
    tokenize_dataset,
)


@pytest.fixture
def tokenizer(minilm_tokenizer):
    """The real MiniLM-L6 BERT tokenizer (model_max_length 512), from conftest."""
    return minilm_tokenizer


def write_tsv(path: Path, rows: list[list[str]], bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join("\t".join(row) + "\n" for row in rows)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------


def test_registry_covers_the_nine_glue_tasks():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte",
                                "wnli"]
    expected_columns = {
        "cola": ("sentence",), "sst2": ("sentence",),
        "mrpc": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2"),
        "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
        "qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"),
        "qnli": ("question", "sentence"),
    }
    expected_labels = {
        "cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
        "mrpc": ("not_equivalent", "equivalent"), "qqp": ("not_duplicate", "duplicate"),
        "mnli": ("entailment", "neutral", "contradiction"),
        "qnli": ("entailment", "not_entailment"), "rte": ("entailment", "not_entailment"),
        "wnli": ("not_entailment", "entailment"), "stsb": (),
    }
    folders = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
               "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
    for name, spec in GLUE_TASKS.items():
        assert spec.text_columns == expected_columns[name]
        assert spec.label_names == expected_labels[name]
        assert spec.folder == folders[name]
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["mnli"].num_labels == 3
    assert GLUE_TASKS["mnli"].splits == ("train", "validation_matched", "validation_mismatched")
    assert GLUE_TASKS["rte"].splits == ("train", "validation")


def test_registry_entries_are_frozen():
    with pytest.raises(AttributeError):
        GLUE_TASKS["rte"].folder = "X"  # type: ignore[misc]


@pytest.mark.parametrize("alias,name", [("SST-2", "sst2"), ("STS_B", "stsb"), ("RTE", "rte"),
                                        ("mnli_mismatched", "mnli"), ("mnli-mm", "mnli")])
def test_task_aliases(alias, name):
    assert get_glue_task(alias).name == name


def test_unknown_task_lists_the_nine_tasks(glue_dir):
    with pytest.raises(ValueError) as info:
        load_glue("sst5", glue_dir)
    message = str(info.value)
    assert "'sst5'" in message
    for name in GLUE_TASKS:
        assert name in message


# ------------------------------------------------------------------------------------------
# Real GLUE files
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task,n_train,n_dev",
    [("sst2", 67349, 872), ("rte", 2490, 277), ("cola", 8551, 1043), ("stsb", 5749, 1500),
     ("wnli", 635, 71)],
)
def test_real_row_counts(glue_dir, task, n_train, n_dev):
    data = load_glue(task, glue_dir)
    assert list(data) == ["train", "validation"]
    assert data["train"].num_rows == n_train
    assert data["validation"].num_rows == n_dev
    spec = GLUE_TASKS[task]
    assert data["train"].column_names == [*spec.text_columns, "label", "idx"]
    assert data["validation"]["idx"] == list(range(n_dev))


# Values read off the first data line of each file.
FIRST_ROWS = {
    ("sst2", "train"): (("hide new secretions from the parental units ",), 0),
    ("sst2", "validation"): (("it 's a charming and often affecting journey . ",), 1),
    ("cola", "train"): (("Our friends won't buy this analysis, let alone the next one we "
                         "propose.",), 1),
    ("cola", "validation"): (("The sailors rode the breeze clear of the rocks.",), 1),
    ("rte", "train"): (("No Weapons of Mass Destruction Found in Iraq Yet.",
                        "Weapons of Mass Destruction Found in Iraq."), 1),
    ("rte", "validation"): (("Dana Reeve, the widow of the actor Christopher Reeve, has died of "
                             "lung cancer at age 44, according to the Christopher Reeve "
                             "Foundation.", "Christopher Reeve had an accident."), 1),
    ("stsb", "train"): (("A plane is taking off.", "An air plane is taking off."), 5.0),
    ("stsb", "validation"): (("A man with a hard hat is dancing.",
                              "A man wearing a hard hat is dancing."), 5.0),
    ("wnli", "train"): (("I stuck a pin through a carrot. When I pulled the pin out, it had a "
                         "hole.", "The carrot had a hole."), 1),
    ("wnli", "validation"): (("The drain is clogged with hair. It has to be cleaned.",
                              "The hair has to be cleaned."), 0),
}


@pytest.mark.parametrize("task", ["sst2", "cola", "rte", "stsb", "wnli"])
def test_real_first_rows(glue_dir, task):
    spec = GLUE_TASKS[task]
    data = load_glue(task, glue_dir, splits=["validation", "train"])
    assert list(data) == ["train", "validation"]  # registry order, whatever was asked
    for split in ("train", "validation"):
        texts, label = FIRST_ROWS[task, split]
        row = data[split][0]
        assert tuple(row[name] for name in spec.text_columns) == texts
        assert row["label"] == pytest.approx(label)
        assert row["idx"] == 0


def test_real_second_rows_and_stsb_float_labels(glue_dir):
    stsb = load_glue("stsb", glue_dir, splits="train")["train"]
    assert stsb.features["label"].dtype == "float32"
    assert stsb[1]["label"] == pytest.approx(3.8)
    assert stsb[1]["sentence2"] == "A man is playing a flute."
    cola = load_glue("cola", glue_dir, splits="validation")["validation"]
    assert cola[-1]["sentence"] == "John talked to Bill about himself."  # no final newline


def test_rte_label_strings_map_to_datasets_ids(glue_dir):
    data = load_glue("rte", glue_dir, splits="validation")["validation"]
    feature = data.features["label"]
    assert feature.names == ["entailment", "not_entailment"]
    assert feature.str2int("entailment") == 0
    counts = Counter(data["label"])
    assert counts == {0: 146, 1: 131}  # 146 "entailment", 131 "not_entailment" lines
    assert data[1]["label"] == 0  # dev line 2 says "entailment"


def test_wnli_one_means_entailment(glue_dir):
    data = load_glue("wnli", glue_dir, splits="validation")["validation"]
    assert data.features["label"].int2str(data[1]["label"]) == "entailment"
    assert Counter(data["label"]) == {0: 40, 1: 31}


def test_task_folder_itself_as_data_dir(glue_dir):
    data = load_glue("RTE", glue_dir / "RTE", splits="validation")
    assert data["validation"].num_rows == 277


def test_other_tasks_folder_is_refused(glue_dir):
    with pytest.raises(ValueError, match=r"looks like the GLUE RTE folder.*task is cola"):
        load_glue("cola", glue_dir / "RTE")


def test_without_data_dir_uses_the_hub_dataset(monkeypatch):
    # No network here: stand in for datasets.load_dataset and check what load_glue asks for.
    import datasets

    calls = []

    def fake_load_dataset(path, name):
        calls.append((path, name))
        split = datasets.Dataset.from_dict(
            {"sentence1": ["a"], "sentence2": ["b"], "label": [0], "idx": [0]})
        return datasets.DatasetDict({"train": split, "validation": split, "test": split})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_glue("RTE")
    assert calls == [("nyu-mll/glue", "rte")]
    assert list(data) == ["train", "validation"]
    assert data["validation"].column_names == ["sentence1", "sentence2", "label", "idx"]


# ------------------------------------------------------------------------------------------
# MRPC / QQP / MNLI / QNLI fixtures in the official format
# ------------------------------------------------------------------------------------------


def test_mrpc_fixture_with_byte_order_mark(tmp_path):
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    for name, label in (("train.tsv", "1"), ("dev.tsv", "0")):
        # download_glue_data.py copies the header of Microsoft's file, BOM included.
        write_tsv(tmp_path / "MRPC" / name,
                  [header, [label, "702876", "702977", 'He said "yes".', "He agreed."],
                   ["0", "1", "2", "A dog.", "A cat."]], bom=True)
    data = load_glue("mrpc", tmp_path)
    assert data["train"].column_names == ["sentence1", "sentence2", "label", "idx"]
    assert data["train"][0] == {"sentence1": 'He said "yes".', "sentence2": "He agreed.",
                                "label": 1, "idx": 0}
    assert data["validation"]["label"] == [0, 0]
    assert data["train"].features["label"].names == ["not_equivalent", "equivalent"]


def test_qqp_fixture_keeps_quote_characters(tmp_path):
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    rows = [header,
            ["0", "1", "2", 'What is "AI?', "What's AI?", "1"],  # an unbalanced quote
            ["1", "3", "4", "Why?", 'He said "why"', "0"]]
    write_tsv(tmp_path / "QQP" / "train.tsv", rows)
    write_tsv(tmp_path / "QQP" / "dev.tsv", rows)
    data = load_glue("qqp", tmp_path)
    train = data["train"]
    assert train.num_rows == 2  # a quoting reader would have merged the rows
    assert train["question1"] == ['What is "AI?', "Why?"]
    assert train["question2"] == ["What's AI?", 'He said "why"']
    assert train["label"] == [1, 0]
    assert train.features["label"].names == ["not_duplicate", "duplicate"]


MNLI_COMMON = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
               "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
               "sentence2"]


def mnli_row(index: int, premise: str, hypothesis: str, labels: list[str]) -> list[str]:
    return [str(index), "31193", "31193n", "government", "( ( x ) )", "( ( y ) )", "(ROOT x)",
            "(ROOT y)", premise, hypothesis, *labels]


@pytest.fixture
def mnli_dir(tmp_path) -> Path:
    folder = tmp_path / "MNLI"
    write_tsv(folder / "train.tsv", [
        MNLI_COMMON + ["label1", "gold_label"],
        mnli_row(0, "It rains.", "It is wet.", ["entailment", "entailment"]),
        mnli_row(1, "It rains.", "It is dry.", ["contradiction", "contradiction"]),
        mnli_row(2, "It rains.", "It is May.", ["neutral", "neutral"]),
    ])
    dev_header = MNLI_COMMON + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
    write_tsv(folder / "dev_matched.tsv", [
        dev_header, mnli_row(0, "A.", "B.", ["neutral"] * 5 + ["neutral"])])
    write_tsv(folder / "dev_mismatched.tsv", [
        dev_header,
        mnli_row(0, "C.", "D.", ["contradiction", "neutral", "contradiction", "contradiction",
                                 "contradiction", "contradiction"]),
        mnli_row(1, "E.", "F.", ["entailment"] * 6),
    ])
    return tmp_path


def test_mnli_fixture_gives_two_validation_splits(mnli_dir):
    data = load_glue("mnli", mnli_dir)
    assert list(data) == ["train", "validation_matched", "validation_mismatched"]
    assert data["train"].column_names == ["premise", "hypothesis", "label", "idx"]
    assert data["train"]["label"] == [0, 2, 1]  # entailment, contradiction, neutral
    assert data["train"][1]["hypothesis"] == "It is dry."
    assert data["validation_matched"]["label"] == [1]
    assert data["validation_mismatched"]["premise"] == ["C.", "E."]
    assert data["validation_mismatched"]["label"] == [2, 0]
    only_mm = load_glue("mnli", mnli_dir / "MNLI", splits="validation_mismatched")
    assert list(only_mm) == ["validation_mismatched"]


def test_mnli_plain_validation_split_is_explained(mnli_dir):
    with pytest.raises(ValueError, match="validation_matched.*validation_mismatched"):
        load_glue("mnli", mnli_dir, splits="validation")


def test_qnli_fixture(tmp_path):
    rows = [["index", "question", "sentence", "label"],
            ["0", "Who?", "Him.", "entailment"],
            ["1", "Where?", "Nowhere in particular.", "not_entailment"]]
    write_tsv(tmp_path / "QNLI" / "train.tsv", rows)
    write_tsv(tmp_path / "QNLI" / "dev.tsv", rows[:2])
    data = load_glue("qnli", tmp_path)
    assert data["train"].column_names == ["question", "sentence", "label", "idx"]
    assert data["train"]["label"] == [0, 1]
    assert data["validation"]["question"] == ["Who?"]


# ------------------------------------------------------------------------------------------
# Tokenisation and collation
# ------------------------------------------------------------------------------------------


def test_tokenised_single_sentences(glue_dir, tokenizer):
    data = load_glue("sst2", glue_dir, tokenizer=tokenizer, splits="validation")
    valid = data["validation"]
    assert set(valid.column_names) == {"input_ids", "token_type_ids", "attention_mask", "label"}
    assert valid.num_rows == 872
    first = valid[0]
    assert first["label"] == 1
    assert tokenizer.decode(first["input_ids"], skip_special_tokens=True) == \
        "it ' s a charming and often affecting journey."
    lengths = {len(ids) for ids in valid["input_ids"]}
    assert len(lengths) > 1  # not padded


def test_tokenised_pairs_and_truncation(glue_dir, tokenizer):
    data = load_glue("rte", glue_dir, tokenizer=tokenizer, max_length=32, splits="validation")
    valid = data["validation"]
    assert max(len(ids) for ids in valid["input_ids"]) == 32
    first = valid[0]
    assert first["input_ids"].count(tokenizer.sep_token_id) == 2
    assert set(first["token_type_ids"]) == {0, 1}


def test_collator_pads_dynamically(glue_dir, tokenizer):
    raw = load_glue("sst2", glue_dir, splits="validation")["validation"].select(range(8))
    data = tokenize_dataset(raw, tokenizer, ["sentence"], max_length=64)
    rows = [data[i] for i in range(4)]
    longest = max(len(row["input_ids"]) for row in rows)
    assert longest < 64
    batch = make_collator(tokenizer)(rows)
    assert batch["input_ids"].shape == (4, longest)
    assert batch["attention_mask"].sum(dim=1).tolist() == [len(r["input_ids"]) for r in rows]
    assert batch["labels"].tolist() == [row["label"] for row in rows]
    assert batch["input_ids"].dtype == torch.long


def test_max_length_above_model_limit(glue_dir, tokenizer):
    with pytest.raises(ValueError, match=r"max_length=1024.*model_max_length=512.*<= 512"):
        load_glue("sst2", glue_dir, tokenizer=tokenizer, max_length=1024)
    with pytest.raises(ValueError, match="positive integer"):
        load_glue("sst2", glue_dir, tokenizer=tokenizer, max_length=0)


# ------------------------------------------------------------------------------------------
# GLUE errors
# ------------------------------------------------------------------------------------------


def test_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist.*data_dir=None"):
        load_glue("rte", tmp_path / "nowhere")


def test_data_dir_without_task_folder(tmp_path):
    (tmp_path / "SST-2").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no RTE/ folder.*SST-2"):
        load_glue("rte", tmp_path)


def test_missing_split_file(tmp_path):
    write_tsv(tmp_path / "RTE" / "train.tsv",
              [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entailment"]])
    with pytest.raises(FileNotFoundError, match=r"dev\.tsv not found.*'validation'.*train\.tsv"):
        load_glue("rte", tmp_path)
    assert load_glue("rte", tmp_path, splits="train")["train"].num_rows == 1


def test_unknown_split(glue_dir):
    with pytest.raises(ValueError, match=r"unknown split 'test'.*train, validation"):
        load_glue("rte", glue_dir, splits=["test"])


def test_empty_file(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"train\.tsv is empty"):
        load_glue("sst2", tmp_path, splits="train")
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "dev.tsv").write_bytes(b"\n\n")
    with pytest.raises(ValueError, match=r"dev\.tsv is empty.*4 tab-separated fields"):
        load_glue("cola", tmp_path, splits="validation")


def test_header_only_file(tmp_path):
    write_tsv(tmp_path / "SST-2" / "dev.tsv", [["sentence", "label"]])
    with pytest.raises(ValueError, match=r"dev\.tsv has a header but no data rows"):
        load_glue("sst2", tmp_path, splits="validation")


def test_wrong_header_names_expected_and_found(tmp_path):
    write_tsv(tmp_path / "RTE" / "dev.tsv",
              [["index", "premise", "hypothesis", "label"], ["0", "a", "b", "entailment"]])
    with pytest.raises(ValueError) as info:
        load_glue("rte", tmp_path, splits="validation")
    message = str(info.value)
    assert "dev.tsv" in message and "['sentence1', 'sentence2']" in message
    assert "expected columns ['index', 'sentence1', 'sentence2', 'label']" in message
    assert "found ['index', 'premise', 'hypothesis', 'label']" in message


def test_wrong_field_count_names_the_line(tmp_path):
    write_tsv(tmp_path / "RTE" / "dev.tsv",
              [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entailment"],
               ["1", "a\tstray tab", "b", "entailment"]])
    with pytest.raises(ValueError, match=r"dev\.tsv, line 3: found 5 tab-separated fields"):
        load_glue("rte", tmp_path, splits="validation")
    write_tsv(tmp_path / "CoLA" / "dev.tsv", [["gj04", "1", "", "Fine."], ["gj04", "1"]])
    with pytest.raises(ValueError, match=r"line 2: found 2 .*expected 4 .*no header"):
        load_glue("cola", tmp_path, splits="validation")


def test_unknown_label_string(tmp_path):
    write_tsv(tmp_path / "RTE" / "dev.tsv",
              [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entailment"],
               ["1", "a", "b", "Entailment"]])
    with pytest.raises(ValueError) as info:
        load_glue("rte", tmp_path, splits="validation")
    message = str(info.value)
    assert "dev.tsv, line 3" in message and "'Entailment'" in message
    assert "entailment, not_entailment" in message


def test_integer_label_out_of_range(tmp_path):
    write_tsv(tmp_path / "WNLI" / "train.tsv",
              [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "2"]])
    with pytest.raises(ValueError,
                       match=r"line 2: unknown label '2'.*0 \(not_entailment\), 1 \(entailment\)"):
        load_glue("wnli", tmp_path, splits="train")


@pytest.mark.parametrize("score", ["nan", "high", ""])
def test_bad_regression_label(tmp_path, score):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
              "sentence1", "sentence2", "score"]
    write_tsv(tmp_path / "STS-B" / "dev.tsv",
              [header, ["0", "g", "f", "2012", "0", "none", "none", "a", "b", "1.5"],
               ["1", "g", "f", "2012", "1", "none", "none", "a", "b", score]])
    with pytest.raises(ValueError, match=rf"line 3: regression label '{score}' is not a finite"):
        load_glue("stsb", tmp_path, splits="validation")


def test_non_utf8_bytes_name_file_and_offset(tmp_path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    content = "sentence\tlabel\ngood\t1\n".encode() + b"caf\xe9\t1\n"
    (folder / "dev.tsv").write_bytes(content)
    offset = content.index(b"\xe9")
    with pytest.raises(ValueError,
                       match=rf"dev\.tsv is not valid UTF-8: byte 0xe9 at byte offset {offset} "
                             r"\(line 3\)"):
        load_glue("sst2", tmp_path, splits="validation")


# ------------------------------------------------------------------------------------------
# load_text_files
# ------------------------------------------------------------------------------------------


def test_csv_with_label_names(tmp_path, tokenizer):
    train = tmp_path / "train.csv"
    train.write_text('text,label\n"Hello, world",pos\nBad day,neg\n"multi\nline",1\n',
                     encoding="utf-8")
    data = load_text_files(train, text_columns="text", label_names=["neg", "pos"])
    assert list(data) == ["train"]
    assert data["train"]["text"] == ["Hello, world", "Bad day", "multi\nline"]
    assert data["train"]["label"] == [1, 0, 1]  # names, or ids below len(label_names)
    assert data["train"]["idx"] == [0, 1, 2]
    assert data["train"].features["label"].names == ["neg", "pos"]

    tokenised = load_text_files(train, text_columns="text", label_names=["neg", "pos"],
                                tokenizer=tokenizer, max_length=8)
    assert set(tokenised["train"].column_names) == {"input_ids", "token_type_ids",
                                                    "attention_mask", "label"}


def test_integer_labels_become_sorted_classes(tmp_path):
    train = write_tsv(tmp_path / "train.tsv",
                      [["premise", "hypothesis", "y"], ["a", "b", "5"], ["c", "d", "-1"],
                       ["e", "f", "2"]])
    valid = write_tsv(tmp_path / "dev.tsv",
                      [["premise", "hypothesis", "y"], ['x "q', "y", "2"]])
    data = load_text_files(train, valid, text_columns=["premise", "hypothesis"],
                           label_column="y")
    assert data["train"].features["label"].names == ["-1", "2", "5"]
    assert data["train"]["label"] == [2, 0, 1]
    assert data["validation"]["label"] == [1]
    assert data["validation"]["premise"] == ['x "q']  # TSV is unquoted


def test_jsonl_regression_and_json_array(tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text(json.dumps({"s1": "a", "s2": "b", "score": 0.5}) + "\n\n"
                     + json.dumps({"s1": "c\u2028d", "s2": "e", "score": 3}) + "\n",
                     encoding="utf-8")
    array = tmp_path / "dev.json"
    array.write_text(json.dumps([{"s1": "x", "s2": "y", "score": "4.25"}]), encoding="utf-8")
    data = load_text_files(jsonl, array, text_columns=("s1", "s2"), label_column="score")
    assert data["train"].features["label"].dtype == "float32"
    assert data["train"]["label"] == pytest.approx([0.5, 3.0])
    assert data["train"]["s1"] == ["a", "c\u2028d"]
    assert data["validation"]["label"] == pytest.approx([4.25])


def test_json_lines_in_a_json_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"sentence": "a", "label": 0}\n{"sentence": "b", "label": 1}\n',
                    encoding="utf-8")
    data = load_text_files(path)
    assert data["train"]["label"] == [0, 1]
    assert data["train"].features["label"].names == ["0", "1"]


def test_text_file_errors(tmp_path, tokenizer):
    good = tmp_path / "train.csv"
    good.write_text("sentence,label\nok,0\n", encoding="utf-8")

    with pytest.raises(ValueError, match="no data files given"):
        load_text_files()
    with pytest.raises(FileNotFoundError, match="missing.csv does not exist"):
        load_text_files(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'.*\.csv, \.tsv"):
        load_text_files(tmp_path / "train.txt")
    with pytest.raises(ValueError, match="one column or two different columns"):
        load_text_files(good, text_columns=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"max_length=600.*model_max_length=512"):
        load_text_files(good, tokenizer=tokenizer, max_length=600)

    empty = tmp_path / "empty.jsonl"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.jsonl is empty"):
        load_text_files(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("sentence,label\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header.csv has no data rows"):
        load_text_files(header_only)

    with pytest.raises(ValueError) as info:
        load_text_files(good, text_columns="text")
    message = str(info.value)
    assert "missing column(s) ['text']" in message
    assert "expected columns ['text', 'label']" in message
    assert "found ['sentence', 'label']" in message

    cased = tmp_path / "cased.csv"
    cased.write_text("sentence,label\nok,neg\nfine,Pos\n", encoding="utf-8")
    with pytest.raises(ValueError,
                       match=r"cased\.csv, line 3: unknown label 'Pos'.*0 \(neg\), 1 \(pos\)"):
        load_text_files(cased, label_names=["neg", "pos"])

    words = tmp_path / "words.csv"
    words.write_text("sentence,label\na,good\nb,bad\n", encoding="utf-8")
    with pytest.raises(ValueError,
                       match=r"line 2: label 'good' is not a number.*--class_names bad good on the "
                             r"command line, label_names=\['bad', 'good'\] in Python"):
        load_text_files(words)

    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"sentence": "a", "label": 0.5}\n{"sentence": "b", "label": NaN}\n',
                   encoding="utf-8")
    with pytest.raises(ValueError, match=r"nan\.jsonl, line 2: regression label nan"):
        load_text_files(nan)

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("sentence,label\nHello, world,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: found 3 fields, expected 2.*quote"):
        load_text_files(ragged)

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"sentence,label\nna\xefve,1\n")
    with pytest.raises(ValueError, match=r"latin1\.csv is not valid UTF-8: byte 0xef at byte "
                                         r"offset 17 \(line 2\)"):
        load_text_files(latin1)

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"sentence": "a", "label": 1}\n{"sentence": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl, line 2: invalid JSON"):
        load_text_files(broken)


def test_field_over_the_csv_limit_names_file_line_and_fix(tmp_path):
    # An unclosed quote on line 3 reads the rest of the file as one field, past the csv module's 128 KiB limit.
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text('sentence,label\nfine,1\n"a quote never closed,0\n' + "more text,1\n" * 20000,
                        encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_text_files(unclosed)
    message = str(info.value)
    assert "unclosed.csv, line 3: a field is longer than 131072 characters" in message
    assert 'a quote (") opened in this record is never closed' in message and ".jsonl" in message
    long_line = tmp_path / "long.tsv"
    long_line.write_text("sentence\tlabel\nfine\t1\n" + "word " * 40000 + "\t0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"long\.tsv, line 3: a field is longer than 131072 characters.*"
                                         r"shorten the text.*JSON Lines \(\.jsonl\)"):
        load_text_files(long_line)


@pytest.mark.parametrize("suffix, separator", [(".csv", ","), (".tsv", "\t")])
def test_duplicated_column_names_are_refused(tmp_path, suffix, separator):
    path = tmp_path / f"dup{suffix}"
    path.write_text(separator.join(["sentence", "label", "sentence"]) + "\n"
                    + separator.join(["first", "1", "second"]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"dup\{suffix}, line 1: column 'sentence' appears 2 times in the "
                                         r"header \['sentence', 'label', 'sentence'\]; rename or remove"):
        load_text_files(path)


def test_label_seen_only_in_validation_is_refused(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("sentence,label\na,0\nb,1\n", encoding="utf-8")
    dev = tmp_path / "dev.csv"
    dev.write_text("sentence,label\nc,1\nd,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dev\.csv, line 3: label '2' does not occur in the training file "
                                         rf"{train}.*labels seen in training: \['0', '1'\].*--class_names"):
        load_text_files(train, dev)
    # Declared classes are the user's choice: a class without training examples is then allowed.
    data = load_text_files(train, dev, label_names=["0", "1", "2"])
    assert data["validation"]["label"] == [1, 2]
