"""Writing results and models so that a crash never leaves a half-written file that looks complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, then renames it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_save_pretrained(directory: str | os.PathLike, *objects: Any) -> None:
    """`save_pretrained` of each object (model, tokenizer) into a temporary folder inside `directory`, then moves
    the files into `directory` with `config.json` last: until that rename, the folder holds no new config, so a
    crash in between never leaves a model folder that loads with mixed or partial files."""
    os.makedirs(directory, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=directory, prefix=".saving-")
    try:
        for obj in objects:
            obj.save_pretrained(tmp)
        config = os.path.join(directory, "config.json")
        if os.path.exists(config):
            os.remove(config)
        names = sorted(os.listdir(tmp), key=lambda name: name == "config.json")
        for name in names:
            target = os.path.join(directory, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(os.path.join(tmp, name), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
