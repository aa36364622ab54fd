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


RENAMED_LAST = {
    **dict.fromkeys(("config.json", "adapter_config.json"), 1),
    **dict.fromkeys(("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                     "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin"), 2),
}
"""Files a folder needs to load as a model or a PEFT adapter, in the order they are renamed in after all other files:
weights after configs, because a folder without its config still loads through a concrete model class (transformers
falls back to a default config and re-initialises what does not fit), while one without its weights does not."""


def atomic_save_pretrained(directory: str | os.PathLike, *objects: Any) -> None:
    """`save_pretrained` of each object (model, tokenizer, PEFT adapter) into a temporary folder inside `directory`,
    then moves the files into `directory`. The old config and weights files are removed first and the new ones
    renamed in last, weights last of all, so a crash in between never leaves a folder that loads with mixed or
    partial files: until the final rename, `from_pretrained` finds no weights."""
    os.makedirs(directory, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=directory, prefix=".saving-")
    try:
        for obj in objects:
            obj.save_pretrained(tmp)
        for name in RENAMED_LAST:
            if os.path.exists(os.path.join(directory, name)):
                os.remove(os.path.join(directory, name))
        names = sorted(os.listdir(tmp), key=lambda name: RENAMED_LAST.get(name, 0))
        for name in names:
            target = os.path.join(directory, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(os.path.join(tmp, name), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
