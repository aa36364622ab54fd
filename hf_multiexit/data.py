"""GLUE and custom text-classification data loading.

Two entry points build a :class:`datasets.DatasetDict` with the same layout the Hub's GLUE
builder uses (``datasets.load_dataset("nyu-mll/glue", task)``): the task's text column(s),
``label`` (a :class:`datasets.ClassLabel`, or ``float32`` for the regression task STS-B) and
``idx`` (``int32``, the 0-based data-row number in the file).

* :func:`load_glue` reads the official GLUE release files written by ``download_glue_data.py``
  (one folder per task: ``SST-2/train.tsv``, ``SST-2/dev.tsv``, ...), or downloads the task from
  the Hub when no ``data_dir`` is given. GLUE itself is described in Wang et al., 2019,
  "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding"
  (ICLR 2019).
* :func:`load_text_files` reads CSV, TSV, JSON or JSON Lines files with named columns, for any
  other sentence or sentence-pair task.

Given a tokenizer, both tokenise the text (pairs for two-sentence tasks) with truncation and no
padding, and return only the tokenizer's columns plus ``label``, so that a batch built by
:func:`make_collator` (dynamic padding) can be passed straight to ``model(**batch)``.

Bad input fails early with a ``ValueError`` or ``FileNotFoundError`` whose message names the
file (and line or byte offset), the bad value and the valid choices or the fix.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from .tasks import GLUE_TASKS, GlueTask, TsvLayout, get_glue_task, normalize_task_name

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict, Features
    from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

__all__ = [
    "GLUE_TASKS",
    "GlueTask",
    "TsvLayout",
    "get_glue_task",
    "load_glue",
    "load_text_files",
    "make_collator",
    "tokenize_dataset",
]

# Hub id of the GLUE dataset; "glue" is the legacy alias that the Hub redirects to this repo.
HUB_GLUE_ID = "nyu-mll/glue"

# Tokenizers without a known limit report a huge sentinel (int(1e30)) as model_max_length.
_SANE_MODEL_MAX_LENGTH = 1_000_000

_INT_RE = re.compile(r"[+-]?\d+")




# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------
#
# The data is read by `datasets.load_dataset` ("csv", "json"): Arrow, memory-mapped and cached by file and options,
# so that a second run parses nothing and finds its tokenisation cached (`tokenize_dataset` maps over it). Those
# readers cannot be the check, though: pandas pads a row with too few fields with empty strings, and with one field
# too many on the first data row takes the first field as the row index or drops the last (both seen with pandas
# 3.1), and neither reader says on which file line a value is wrong. So a validation pass streams each file through
# the csv or json module first (0.13 s for SST-2's 67k lines): encoding, header, the shape of every record, JSON
# syntax and the required fields; it keeps where each record is, which the label checks name in their errors.


@dataclass(frozen=True)
class _CheckedFile:
    """A file that passed the validation pass.

    Attributes:
        path: the file.
        columns: its column names (a header-less GLUE file's are its field positions, "0", "1", ...).
        where: where each data record is, ``"line N"`` (``"record N"`` in a JSON array), for later errors.
        labels: each record's raw label, for deciding the label space before any file is converted.
        records: a JSON file's parsed records (see :func:`_load_json`); ``None`` for CSV/TSV.
    """

    path: Path
    columns: list[str]
    where: list[str]
    labels: list[Any]
    records: list[dict[str, Any]] | None = None


def _raise_for_bad_utf8(path: Path, exc: UnicodeDecodeError) -> NoReturn:
    # The text-mode decoder reports positions inside its read buffer, not the file, so find
    # the real offset by decoding the raw bytes once more; this only runs on the failure path.
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as raw_exc:
        offset = raw_exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise ValueError(
            f"{path} is not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} "
            f"(line {line}). Files must be UTF-8 encoded; re-download the file or convert it, "
            f"e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed_{path.name}`."
        ) from None
    raise ValueError(f"{path} is not valid UTF-8: {exc}") from None


def _open_text(path: Path) -> TextIO:
    try:
        # utf-8-sig drops a byte-order mark: MRPC's files start with one (the official script
        # copies the header of Microsoft's file verbatim), and so do many spreadsheet exports.
        return open(path, encoding="utf-8-sig", newline="")  # csv wants newline=""
    except PermissionError:
        raise PermissionError(
            f"{path} cannot be read: permission denied. Make it readable (`chmod a+r {path}`) or pass a copy you "
            "can read."
        ) from None


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} is not a file")


def _delimited_rows(path: Path, delimiter: str, quoting: int) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` for each non-blank record of a CSV/TSV file.

    GLUE's files are unquoted: QQP and MNLI contain stray ``"`` characters that a quoting
    reader would treat as the start of a multi-line field, silently merging rows. Hence
    ``QUOTE_NONE`` for tab-separated files, as the Hub's GLUE builder does.
    """
    with _open_text(path) as file:
        reader = csv.reader(file, delimiter=delimiter, quoting=quoting)
        while True:
            start = reader.line_num + 1  # a quoted field may span lines: errors name the line its record starts on
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                _raise_for_csv_error(path, start, quoting, exc)
            except UnicodeDecodeError as exc:
                _raise_for_bad_utf8(path, exc)
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank lines (e.g. a trailing one) carry no example; pandas skips them too
            yield reader.line_num, fields


def _rows_of_width(rows: Iterator[tuple[int, list[str]]], width: int, path: Path, unit: str, expected: str
                   ) -> Iterator[tuple[int, list[str]]]:
    """The rows, failing at the first whose number of fields is not `width` (a truncated file, another task's file,
    or a delimiter inside an unquoted field), where the reader would otherwise shift or drop fields."""
    for line, fields in rows:
        if len(fields) != width:
            raise ValueError(f"{path}, line {line}: found {len(fields)} {unit}, expected {expected}")
        yield line, fields


def _raise_for_csv_error(path: Path, line: int, quoting: int, exc: csv.Error) -> NoReturn:
    # The csv module's field size limit stays as it is: it is process-wide state, which a library should not change
    # under its caller, and in a CSV file a field that long is far more often an unclosed quote swallowing the rest of
    # the file than a real text. Texts are cut to max_length tokens anyway, and JSON Lines has no such limit.
    limit = csv.field_size_limit()
    if "field limit" not in str(exc):  # e.g. NUL bytes, which Python before 3.11 refuses
        raise ValueError(
            f"{path}, line {line}: cannot be parsed ({exc}); is it a UTF-8 text file? Export the data again as "
            "text, or as JSON Lines (.jsonl)"
        ) from None
    cause = (
        ' Most likely a quote (") opened in this record is never closed, so the lines after it were read into '
        'one field: close it, or double the quotes inside a quoted field ("").'
        if quoting != csv.QUOTE_NONE else ""
    )
    raise ValueError(
        f"{path}, line {line}: a field is longer than {limit} characters, the limit of Python's csv module.{cause} "
        "If the text really is this long, shorten the text (only the first max_length tokens are used), or write "
        "the data as JSON Lines (.jsonl), which has no such limit."
    ) from None


def _load_csv(checked: _CheckedFile, delimiter: str, quoting: int, has_header: bool) -> Dataset:
    """Read a validated CSV/TSV file with ``load_dataset("csv")``, every column as text."""
    from datasets import Features, Value, load_dataset

    dataset = load_dataset(
        "csv", data_files=str(checked.path), split="train", sep=delimiter, quoting=quoting,
        header=0 if has_header else None, column_names=None if has_header else checked.columns,
        features=Features({name: Value("string") for name in checked.columns}),
        keep_default_na=False,  # a text such as "NA", "null" or "nan" is text, not a missing value
        encoding="utf-8-sig",
    )
    return _same_rows(dataset, checked)


def _same_rows(dataset: Dataset, checked: _CheckedFile) -> Dataset:
    # A guard on the reader: the rows datasets read are the records the validation pass checked.
    if len(dataset) != len(checked.where):
        raise ValueError(
            f"{checked.path}: datasets read {len(dataset)} rows but the file has {len(checked.where)} records. "
            "Please report this file to hf-multiexit; meanwhile convert it to JSON Lines (.jsonl)."
        )
    return dataset


def _with_labels(dataset: Dataset, checked: _CheckedFile, text_sources: dict[str, str],
                 to_label: Callable[[Any, Path, str], int | float], features: Features) -> Dataset:
    """The output layout: text columns (``name`` read from column ``text_sources[name]``), ``label`` (the validated
    raw labels through ``to_label``, which raises naming ``checked.where[row]``) and ``idx``; a `Dataset.map`, so
    cached like the read."""
    path, where, labels = checked.path, checked.where, checked.labels

    def convert(batch: dict[str, list[Any]], rows: list[int]) -> dict[str, list[Any]]:
        out = {name: batch[source] for name, source in text_sources.items()}
        out["label"] = [to_label(labels[row], path, where[row]) for row in rows]
        out["idx"] = rows
        return out

    return dataset.map(convert, batched=True, with_indices=True, remove_columns=dataset.column_names,
                       features=features, desc=f"Reading labels of {path.name}")


def _parse_glue_label(spec: GlueTask, raw: str, path: Path, where: str) -> int | float:
    fmt = spec.tsv.label_format
    if fmt == "float":
        try:
            value = float(raw)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise ValueError(
                f"{path}, {where}: regression label {raw!r} is not a finite number; "
                f"{spec.folder} scores must be numbers such as 3.800"
            )
        return value
    if fmt == "name":
        if raw in spec.label_names:
            return spec.label_names.index(raw)
        valid = ", ".join(spec.label_names)
    else:
        ids = [str(i) for i in range(len(spec.label_names))]
        if raw in ids:
            return int(raw)
        valid = ", ".join(f"{i} ({name})" for i, name in zip(ids, spec.label_names))
    raise ValueError(
        f"{path}, {where}: unknown label {raw!r} for {spec.folder}; valid labels: {valid}"
    )


def _check_glue_tsv(spec: GlueTask, path: Path) -> tuple[_CheckedFile, dict[str, str]]:
    """The validation pass over one official GLUE ``.tsv`` file; returns it with the column
    that holds each text column."""
    _check_file(path, f"GLUE {spec.folder} file")
    layout = spec.tsv
    rows = _delimited_rows(path, "\t", csv.QUOTE_NONE)

    if layout.header is None:
        columns = [str(i) for i in range(layout.num_fields)]
        shape_hint = f"{layout.num_fields} tab-separated fields and no header"
    else:
        first = next(rows, None)
        if first is None:
            raise ValueError(f"{path} is empty; expected a header line and data rows")
        columns = first[1]
        missing = [name for name in layout.header if name not in columns]
        if missing:
            raise ValueError(
                f"{path}: header is missing column(s) {missing} for {spec.folder}; expected "
                f"columns {list(layout.header)}, found {columns}. Is this the {spec.folder} "
                "file written by download_glue_data.py?"
            )
        shape_hint = f"{len(columns)} tab-separated fields like its header"

    label_position = columns.index(str(layout.label_field))
    where, labels = [], []
    expected = (f"{shape_hint}. The file is truncated or corrupt, or belongs to another task; re-download it with "
                "download_glue_data.py.")
    for line, fields in _rows_of_width(rows, len(columns), path, "tab-separated fields", expected):
        where.append(f"line {line}")
        labels.append(fields[label_position])

    if not where:
        if layout.header is None:
            raise ValueError(f"{path} is empty; expected {shape_hint}")
        raise ValueError(f"{path} has a header but no data rows")
    text_sources = {name: str(field) for name, field in zip(spec.text_columns, spec.tsv_text_fields)}
    return _CheckedFile(path, columns, where, labels), text_sources


def _features(text_columns: Sequence[str], label_names: Sequence[str] | None) -> Features:
    from datasets import ClassLabel, Features, Value

    feats: dict[str, Any] = {name: Value("string") for name in text_columns}
    feats["label"] = ClassLabel(names=list(label_names)) if label_names else Value("float32")
    feats["idx"] = Value("int32")
    return Features(feats)


# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------


def _check_max_length(tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _SANE_MODEL_MAX_LENGTH and max_length > limit:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"max_length={max_length} exceeds the tokenizer's model_max_length={limit} "
            f"({name}): the model has no position embeddings beyond {limit} tokens. "
            f"Pass max_length <= {limit}."
        )


def tokenize_dataset(
    data: Dataset | DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    text_columns: Sequence[str],
    max_length: int = 128,
) -> Dataset | DatasetDict:
    """Tokenise one or two text columns (a sentence pair) for sequence classification.

    Sequences are truncated to ``max_length`` tokens (longest sequence of a pair first) and not
    padded: :func:`make_collator` pads each batch to its own longest row, which is much cheaper
    than padding everything to ``max_length``. The text columns and ``idx`` are dropped, so the
    result holds the tokenizer's columns plus ``label`` and batches can go straight to
    ``model(**batch)``; rows stay in file order, so row ``i`` still has ``idx == i``.
    """
    text_columns = tuple(text_columns)
    if len(text_columns) not in (1, 2):
        raise ValueError(
            f"text_columns must name one column or a sentence pair, got {list(text_columns)}"
        )
    _check_max_length(tokenizer, max_length)
    column_names = data.column_names
    if isinstance(column_names, dict):  # DatasetDict: split -> names
        column_names = next(iter(column_names.values()), [])
    missing = [name for name in text_columns if name not in column_names]
    if missing:
        raise ValueError(
            f"text column(s) {missing} not in the dataset; expected {list(text_columns)}, "
            f"found {list(column_names)}"
        )
    drop = [name for name in column_names if name != "label"]

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        texts = [batch[name] for name in text_columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    return data.map(encode, batched=True, remove_columns=drop, desc="Tokenizing")


def make_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Batch tokenised rows, padding each batch to its longest row (dynamic padding).

    The collator also renames ``label`` to ``labels``, the argument name models expect.
    """
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer=tokenizer, padding="longest")


# --------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------


def _resolve_splits(spec: GlueTask, splits: str | Sequence[str] | None) -> list[str]:
    if splits is None:
        return list(spec.splits)
    requested = [splits] if isinstance(splits, str) else list(splits)
    for split in requested:
        if split not in spec.splits:
            hint = ""
            if spec.name == "mnli" and split == "validation":
                hint = " (MNLI has two development sets: matched and mismatched genres)"
            raise ValueError(
                f"unknown split {split!r} for GLUE task {spec.name}{hint}; "
                f"valid splits: {', '.join(spec.splits)}"
            )
    if not requested:
        raise ValueError(f"splits is empty; choose from {', '.join(spec.splits)}")
    # Keep the registry's order so the DatasetDict always lists train first.
    return [split for split in spec.splits if split in requested]


def _resolve_task_dir(spec: GlueTask, data_dir: Path) -> Path:
    if not data_dir.exists():
        raise FileNotFoundError(
            f"GLUE data directory {data_dir} does not exist; pass the GLUE root written by "
            f"download_glue_data.py (the folder holding {spec.folder}/), the {spec.folder} "
            "folder itself, or data_dir=None to download the task from the Hugging Face Hub"
        )
    if not data_dir.is_dir():
        raise FileNotFoundError(f"GLUE data directory {data_dir} is not a directory")

    folder = data_dir / spec.folder
    if folder.is_dir():
        return folder
    wanted = normalize_task_name(spec.folder)
    for child in sorted(data_dir.iterdir()):  # e.g. "sst-2/" on a case-sensitive filesystem
        if child.is_dir() and normalize_task_name(child.name) == wanted:
            return child

    # data_dir may be the task folder itself; refuse another task's folder rather than
    # failing later with a confusing column error.
    own = normalize_task_name(data_dir.name)
    if own in GLUE_TASKS and own != spec.name:
        raise ValueError(
            f"data_dir {data_dir} looks like the GLUE {GLUE_TASKS[own].folder} folder, but the "
            f"task is {spec.name}; pass the GLUE root or the {spec.folder} folder"
        )
    if any((data_dir / name).is_file() for _, name in spec.split_files):
        return data_dir
    found = sorted(p.name for p in data_dir.iterdir())[:20]
    raise FileNotFoundError(
        f"no {spec.folder}/ folder in {data_dir} and no {spec.folder} files "
        f"({', '.join(name for _, name in spec.split_files)}) in it either; found {found}. "
        f"Pass the GLUE root written by download_glue_data.py or the {spec.folder} folder."
    )


def _load_glue_from_hub(spec: GlueTask, splits: list[str]) -> DatasetDict:
    from datasets import DatasetDict, load_dataset

    raw = load_dataset(HUB_GLUE_ID, spec.name)
    return DatasetDict({split: raw[split] for split in splits})


def load_glue(
    task: str,
    data_dir: str | Path | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int = 128,
    splits: str | Sequence[str] | None = None,
) -> DatasetDict:
    """Load a GLUE task's training and development sets.

    Args:
        task: one of ``cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli`` (see
            :func:`get_glue_task` for accepted spellings).
        data_dir: the GLUE root written by ``download_glue_data.py`` (holding ``SST-2/``,
            ``MNLI/``, ...) or one task's folder. ``None`` downloads the task from the Hub
            (``datasets.load_dataset("nyu-mll/glue", task)``), which gives the same columns.
        tokenizer: if given, tokenise as :func:`tokenize_dataset` does.
        max_length: truncation length in tokens, at most the tokenizer's ``model_max_length``.
        splits: a split name or names to load; default all. The splits are ``train`` and
            ``validation``, except MNLI: ``train``, ``validation_matched`` (``dev_matched.tsv``)
            and ``validation_mismatched`` (``dev_mismatched.tsv``). GLUE's test files have no
            labels and are not loaded.

    File formats (tab-separated, unquoted, UTF-8; ``idx`` counts data rows from 0):

    ======  =====================================================  =========================
    task    fields                                                 label
    ======  =====================================================  =========================
    CoLA    no header: source, label, original mark, sentence      0/1
    SST-2   ``sentence label``                                     0/1
    MRPC    ``Quality #1 ID #2 ID #1 String #2 String``            Quality, 0/1
    STS-B   ``index genre filename year old_index source1 source2  score, float 0-5
            sentence1 sentence2 score``
    QQP     ``id qid1 qid2 question1 question2 is_duplicate``      0/1
    MNLI    ``index promptID pairID genre ... sentence1 sentence2  gold_label, a class name
            label1 [label2 ... label5] gold_label``
    QNLI    ``index question sentence label``                      a class name
    RTE     ``index sentence1 sentence2 label``                    a class name
    WNLI    ``index sentence1 sentence2 label``                    0/1, 1 = entailment
    ======  =====================================================  =========================

    Output columns are renamed as on the Hub: MRPC's strings become ``sentence1/sentence2``,
    MNLI's ``sentence1/sentence2`` become ``premise/hypothesis``.

    Returns:
        A ``DatasetDict`` with the requested splits and columns ``text column(s), label, idx``
        (or, with a tokenizer, the tokenizer's columns and ``label``).

    Raises:
        ValueError: unknown task or split, ``max_length`` above the tokenizer's limit, or a file
            that is empty, has the wrong columns, an unknown label or is not UTF-8.
        FileNotFoundError: ``data_dir`` or a split's file does not exist.
    """
    from datasets import DatasetDict

    spec = get_glue_task(task)
    wanted = _resolve_splits(spec, splits)
    if tokenizer is not None:
        _check_max_length(tokenizer, max_length)  # before the (possibly slow) read

    if data_dir is None:
        result = _load_glue_from_hub(spec, wanted)
    else:
        folder = _resolve_task_dir(spec, Path(data_dir))
        files = dict(spec.split_files)
        features = _features(spec.text_columns, spec.label_names)
        result = DatasetDict()
        for split in wanted:
            path = folder / files[split]
            if not path.is_file():
                present = sorted(p.name for p in folder.iterdir())
                raise FileNotFoundError(
                    f"{path} not found: the {spec.folder} {split!r} split is read from "
                    f"{files[split]}; files in {folder}: {present}"
                )
            checked, text_sources = _check_glue_tsv(spec, path)
            to_label = functools.partial(_parse_glue_label, spec)
            dataset = _load_csv(checked, "\t", csv.QUOTE_NONE, has_header=spec.tsv.header is not None)
            result[split] = _with_labels(dataset, checked, text_sources, to_label, features)

    if tokenizer is not None:
        result = tokenize_dataset(result, tokenizer, spec.text_columns, max_length)
    return result


# --------------------------------------------------------------------------------------------
# Other tasks: CSV / TSV / JSON / JSON Lines
# --------------------------------------------------------------------------------------------

_TEXT_FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")
_DELIMITED = {".csv": (",", csv.QUOTE_MINIMAL), ".tsv": ("\t", csv.QUOTE_NONE)}
"""Delimiter and quoting per suffix: CSV files follow RFC 4180 quoting (fields may be quoted and span lines); TSV
files are read unquoted like GLUE's, since tabs rarely occur in text but quote characters do."""


def _check_delimited(path: Path, columns: Sequence[str], label_column: str) -> _CheckedFile:
    delimiter, quoting = _DELIMITED[path.suffix.lower()]
    rows = _delimited_rows(path, delimiter, quoting)
    first = next(rows, None)
    if first is None:
        raise ValueError(f"{path} is empty; expected a header line naming the columns")
    line, header = first
    duplicated = [name for name in dict.fromkeys(header) if header.count(name) > 1]
    if duplicated:
        counts = ", ".join(f"column {name!r} appears {header.count(name)} times" for name in duplicated)
        raise ValueError(
            f"{path}, line {line}: {counts} in the header {header}; rename or remove the duplicates, so that every "
            "column is read by its own name"
        )
    where, labels = [], []
    expected = f"{len(header)} like the header {header}"
    if delimiter == ",":
        expected += " (quote fields that contain commas)"
    for line, fields in _rows_of_width(rows, len(header), path, "fields", expected):
        if not where:  # named at the first record, as for JSON, whose records each have their own fields
            _check_columns(path, f"line {line}", header, columns, label_column)
            label_position = header.index(label_column)
        _check_label_present(path, f"line {line}", fields[label_position], label_column)
        where.append(f"line {line}")
        labels.append(fields[label_position])
    if not where:
        raise ValueError(f"{path} has no data rows")
    return _CheckedFile(path, header, where, labels)


def _check_columns(path: Path, where: str, found: Sequence[str], columns: Sequence[str], label_column: str) -> None:
    needed = [*columns, label_column]
    missing = [name for name in needed if name not in found]
    if missing:
        raise ValueError(
            f"{path}, {where}: missing column(s) {missing}; expected columns {needed} "
            f"(set text_columns= and label_column=), found {list(found)}"
        )


def _check_label_present(path: Path, where: str, label: Any, label_column: str) -> None:
    if label is None or (isinstance(label, str) and not label.strip()):
        raise ValueError(f"{path}, {where}: missing value in label column {label_column!r}")


def _json_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    # A ".json" file may hold one array of objects or, as Hugging Face scripts commonly write
    # it, one object per line; the first character tells the two apart.
    try:
        with _open_text(path) as file:
            text = file.read()
    except UnicodeDecodeError as exc:
        _raise_for_bad_utf8(path, exc)
    stripped = text.lstrip()
    if not stripped:
        raise ValueError(f"{path} is empty; expected JSON objects, one per line or in an array")
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise ValueError(
                    f"{path}, record {i}: expected a JSON object with named fields, "
                    f"got {type(record).__name__}"
                )
            yield f"record {i}", record
        return
    # Not str.splitlines(): that also splits at U+2028 etc., which JSON strings may contain.
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}, line {number}: invalid JSON ({exc.msg}); JSON Lines files need one "
                "complete object per line"
            ) from None
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}, line {number}: expected a JSON object with named fields, "
                f"got {type(record).__name__}"
            )
        yield f"line {number}", record


def _check_json(path: Path, columns: Sequence[str], label_column: str) -> _CheckedFile:
    where, labels, records = [], [], []
    for at, record in _json_records(path):
        _check_columns(path, at, list(record), columns, label_column)
        for name in columns:
            if not isinstance(record[name], str):
                raise ValueError(f"{path}, {at}: text column {name!r} must hold a string, got {record[name]!r}")
        _check_label_present(path, at, record[label_column], label_column)
        where.append(at)
        labels.append(record[label_column])
        records.append({name: record[name] for name in columns})
    if not where:
        raise ValueError(f"{path} has no data rows")
    return _CheckedFile(path, list(columns), where, labels, records)


def _load_json(checked: _CheckedFile) -> Dataset:
    """Read a validated JSON (Lines) file with ``load_dataset("json")``.

    datasets' JSON reader refuses some files the validation pass accepts (a blank line between JSON Lines records,
    a NaN score) and reads a column whose records mix JSON types as its ``Json`` feature, which decodes a text such
    as "[1]" into a list; such a file is built from the validation pass's records instead, without the cache.
    """
    from datasets import Dataset, Value, load_dataset
    from datasets.exceptions import DatasetGenerationError

    try:
        dataset = load_dataset("json", data_files=str(checked.path), split="train")
    except (DatasetGenerationError, ValueError):
        dataset = None
    if dataset is None or any(dataset.features.get(name) != Value("string") for name in checked.columns):
        return Dataset.from_list(checked.records)
    return _same_rows(dataset, checked)


def _check_text_file(path: Path, columns: Sequence[str], label_column: str) -> _CheckedFile:
    suffix = path.suffix.lower()
    if suffix not in _TEXT_FILE_SUFFIXES:
        raise ValueError(
            f"unsupported file type {path.suffix!r} for {path}; use one of "
            f"{', '.join(_TEXT_FILE_SUFFIXES)}"
        )
    _check_file(path, "data file")
    if suffix in _DELIMITED:
        return _check_delimited(path, columns, label_column)
    return _check_json(path, columns, label_column)


def _load_text_file(checked: _CheckedFile) -> Dataset:
    suffix = checked.path.suffix.lower()
    if suffix in _DELIMITED:
        return _load_csv(checked, *_DELIMITED[suffix], has_header=True)
    return _load_json(checked)


def _label_converter(
    all_labels: list[Any], label_names: list[str] | None, train_path: Path | None, train_labels: list[Any]
) -> tuple[list[str] | None, Callable[[Any, Path, str], int | float]]:
    """Decide between classification and regression (rules in :func:`load_text_files`).

    Returns the class names (``None`` for regression) and a function mapping
    ``(raw label, file, "line N")`` to a class id or a score.
    """
    if label_names is not None:
        names = label_names

        def to_class(raw: Any, path: Path, where: str) -> int:
            key = raw.strip() if isinstance(raw, str) else raw
            if isinstance(key, str) and key in names:
                return names.index(key)
            as_id = _as_int(raw)
            if as_id is not None and 0 <= as_id < len(names):
                return as_id
            valid = ", ".join(f"{i} ({name})" for i, name in enumerate(names))
            raise ValueError(f"{path}, {where}: unknown label {raw!r}; valid labels: {valid}")

        return names, to_class

    if all(_as_int(value) is not None for value in all_labels):
        # The classes are the training labels: one seen only in validation would be a class the model never trains on.
        values = sorted({_as_int(value) for value in (train_labels if train_path else all_labels)})
        index = {value: i for i, value in enumerate(values)}
        names = [str(value) for value in values]

        def to_id(raw: Any, path: Path, where: str) -> int:
            if _as_int(raw) not in index:
                raise ValueError(
                    f"{path}, {where}: label {raw!r} does not occur in the training file {train_path}, so it would "
                    f"add a class the model never trains on; labels seen in training: {names}. Remove these rows, "
                    "add training examples of the label, or declare every class in id order with --class_names "
                    "(label_names=[...] in Python)"
                )
            return index[_as_int(raw)]

        return names, to_id

    distinct = sorted({str(value) for value in all_labels})

    def to_score(raw: Any, path: Path, where: str) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            shown = distinct[:10] + (["..."] if len(distinct) > 10 else [])
            raise ValueError(
                f"{path}, {where}: label {raw!r} is not a number, and labels that are not all "
                f"integers are read as regression targets. For classification name the classes in "
                f"id order: --class_names {' '.join(shown)} on the command line, label_names={shown} "
                f"in Python; labels found: {shown}"
            ) from None
        if not math.isfinite(value):
            raise ValueError(f"{path}, {where}: regression label {raw!r} is not a finite number")
        return value

    return None, to_score


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value.strip())
    return None


def load_text_files(
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    text_columns: str | Sequence[str] = ("sentence",),
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int = 128,
) -> DatasetDict:
    """Load a sentence (pair) task from CSV, TSV, JSON or JSON Lines files with named columns.

    File formats, chosen by extension (all UTF-8):

    * ``.csv``: comma-separated with a header line; standard CSV quoting.
    * ``.tsv``: tab-separated with a header line; no quoting (quote characters are text).
    * ``.jsonl``: one JSON object per line.
    * ``.json``: a JSON array of objects, or one object per line as for ``.jsonl``.

    Labels (decided over all given files together, so both splits share one label space):

    * ``label_names`` given: classification. A label is a class name, or an integer id
      ``0 <= id < len(label_names)``; names are matched first.
    * otherwise, if every label is an integer (``3`` or ``"3"``; not ``"3.0"``; JSON booleans
      count as 0/1): classification whose class names are the sorted distinct values of the
      training file (of the validation file when it is the only one) as strings, with ids
      ``0..k-1`` in that order (labels 0..k-1 thus keep their ids). A validation label that
      the training file lacks is an error: it would be a class the model never trains on.
    * otherwise: regression; every label must be a finite number.

    Returns:
        A ``DatasetDict`` with ``train`` and/or ``validation`` splits and columns
        ``text column(s), label, idx`` (or, with a tokenizer, the tokenizer's columns and
        ``label``). ``features["label"]`` is a ``ClassLabel`` for classification, ``float32``
        for regression.

    Raises:
        ValueError: bad arguments, unsupported extension, an empty file, missing or duplicated
            columns, an unknown label (or, without ``label_names``, one the training file lacks),
            a non-numeric or NaN regression label, a field over the csv module's size limit, or
            non-UTF-8 bytes.
        FileNotFoundError: a file does not exist.
    """
    from datasets import DatasetDict

    columns = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
    if len(columns) not in (1, 2) or len(set(columns)) != len(columns):
        raise ValueError(
            f"text_columns must name one column or two different columns (a sentence pair), "
            f"got {list(columns)}"
        )
    if label_column in columns:
        raise ValueError(f"label_column {label_column!r} is also listed in text_columns")
    if label_names is not None:
        label_names = [str(name) for name in label_names]
        if not label_names or len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names must be non-empty and distinct, got {label_names}")
    files = {split: path for split, path in
             (("train", train_file), ("validation", validation_file)) if path is not None}
    if not files:
        raise ValueError("no data files given; pass train_file and/or validation_file")
    if tokenizer is not None:
        _check_max_length(tokenizer, max_length)

    checked = {split: _check_text_file(Path(file), columns, label_column) for split, file in files.items()}
    train = checked.get("train")
    names, to_label = _label_converter([label for c in checked.values() for label in c.labels], label_names,
                                       train.path if train else None, train.labels if train else [])
    features = _features(columns, names)
    result = DatasetDict({
        split: _with_labels(_load_text_file(c), c, {name: name for name in columns}, to_label, features)
        for split, c in checked.items()
    })

    if tokenizer is not None:
        result = tokenize_dataset(result, tokenizer, columns, max_length)
    return result
