"""Writing results and models so that a crash never leaves a half-written file that looks complete, and telling a
missing local folder from a Hub id."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

SAVING_PREFIX = ".saving-"
STALE_SAVE_SECONDS = 24 * 3600
"""Age after which a temporary save folder whose process cannot be checked counts as abandoned: saves take minutes."""


def check_model_path(path: str | os.PathLike, what: str, expected: str, hub_id: bool = True) -> None:
    """Raises `FileNotFoundError` saying "no such folder" when `path` does not exist and is meant as a local folder,
    where transformers would report a malformed Hub repo id or a failed connection. With `hub_id` a missing path
    counts as local only when it cannot be a Hub id (`org/name`: it starts with '.', '/' or '~', holds more than
    one '/' or a Windows separator) or its parent folder exists here; `what` names the argument, `expected` what
    to pass instead."""
    text = os.fspath(path)
    if os.path.exists(text):
        return
    parent = os.path.dirname(text)
    local = (
        not hub_id
        or text.startswith((".", "/", "~"))
        or os.path.isabs(text)
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
        or bool(parent and os.path.isdir(parent))
    )
    if local:
        raise FileNotFoundError(f"{what} {text!r}: no such folder ({os.path.abspath(text)}); pass {expected}.")


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """A temporary file path beside `path` to write to; renamed over `path` when the block ends, removed when it
    fails, so `path` is never half-written. (The model folder's `exit_config.json` has its own copy of this in
    `exit_configuration.py`, which travels to the Hub and cannot import the package.)"""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` through `atomic_output`."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


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


def _running(pid: int) -> bool:
    if os.name != "posix":  # elsewhere signal 0 is not a probe (on Windows it is CTRL_C_EVENT): leave it to age
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_saves(directory: str | os.PathLike) -> list[str]:
    """Removes the temporary folders `atomic_save_pretrained` left in `directory` when its process died mid-save
    (SIGKILL, out of memory, a preempted node); each holds up to a whole model. They are named
    `.saving-<host>-<pid>-<random>`: one is stale when it names this host and a pid that is no longer running, or
    when it is older than `STALE_SAVE_SECONDS` (another host's on a shared file system, whose pid cannot be checked
    from here, or one an older version named without its pid). A save still being written, here or on another host,
    is left alone: its process runs and its folder is minutes old. Returns the removed paths."""
    if not os.path.isdir(directory):
        return []
    host, now, removed = socket.gethostname(), time.time(), []
    for entry in os.scandir(directory):
        if not entry.name.startswith(SAVING_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        parts = entry.name[len(SAVING_PREFIX):].rsplit("-", 2)  # host names may hold '-', the random part not
        dead = len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _running(int(parts[1]))
        if dead or now - entry.stat(follow_symlinks=False).st_mtime > STALE_SAVE_SECONDS:
            shutil.rmtree(entry.path, ignore_errors=True)
            logger.info("Removed %s, left by a save that did not finish.", entry.path)
            removed.append(entry.path)
    return removed


def atomic_save_pretrained(directory: str | os.PathLike, *objects: Any) -> None:
    """`save_pretrained` of each object (model, tokenizer, PEFT adapter) into a temporary folder inside `directory`,
    then moves the files into `directory`. The old config and weights files are removed first and the new ones
    renamed in last, weights last of all, so a crash in between never leaves a folder that loads with mixed or
    partial files: until the final rename, `from_pretrained` finds no weights. The temporary folder's name carries
    this host and process, and each save first removes those of dead saves (`remove_stale_saves`), so a killed
    save's copy of the model does not stay behind."""
    os.makedirs(directory, exist_ok=True)
    remove_stale_saves(directory)
    tmp = tempfile.mkdtemp(dir=directory, prefix=f"{SAVING_PREFIX}{socket.gethostname()}-{os.getpid()}-")
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
