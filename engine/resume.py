"""Epoch checkpoints for resuming a run, without pickle: tensors go to safetensors, the rest to JSON.

Nested state (optimizer and scheduler state dicts, RNG states, metrics so far) is flattened: every
tensor is replaced by {"__tensor__": key} and stored under that key; dicts are stored as [key, value]
pairs so integer keys (the optimiser's parameter ids) come back as integers.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from engine.durable import disk_full_is_clear, fsync_dir, fsync_tree

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
# Beside a state folder: "<name>.tmp-<pid>-<token>" while a new state is written, "<name>.old-<pid>-
# <token>" holding the previous one while the new one is renamed in. A save takes 0.1-0.8 s (134 MB,
# resnet18 with Adam), so one untouched for an hour was left by a process that died, and is removed.
LEFTOVER_SECONDS = 3600.0
_SWAP_ATTEMPTS = 5  # each failed one means another process swapped its state in meanwhile


def _flatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu").contiguous()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {"__dict__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return {
            "__list__": [_flatten(v, tensors) for v in value],
            "tuple": isinstance(value, tuple),
        }
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a resume state")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__dict__" in value:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in value["__dict__"]}
        if "__list__" in value:
            items = [_unflatten(v, tensors) for v in value["__list__"]]
            return tuple(items) if value.get("tuple") else items
    return value


def save_state(directory: Path, state: dict[str, Any]) -> None:
    """Write a new state beside the old one, then swap: a crash mid-write keeps the previous epoch.

    The folders beside are named for this call (pid and a random token): two processes saving into
    the same workdir (a worker that lost its job, and the one that took it over) never write into or
    delete each other's, and the last to swap its state in wins."""
    directory = Path(directory)
    tmp = _beside(directory, "tmp")
    try:
        with disk_full_is_clear("the resume state", directory.parent):
            tmp.mkdir(parents=True)
            tensors: dict[str, torch.Tensor] = {}
            flat = _flatten(state, tensors)
            save_file(tensors, str(tmp / STATE_TENSORS))
            (tmp / STATE_JSON).write_text(json.dumps(flat))
            fsync_tree(tmp)  # on disk before the rename that makes it the state to resume from
            _swap_in(tmp, directory)
            fsync_dir(directory.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already, unless writing or swapping failed
    _remove_leftovers(directory)


def load_state(directory: Path) -> dict[str, Any] | None:
    """The last state saved, or None; also the one a save set aside if it died between its renames."""
    directory = Path(directory)
    found = directory if (directory / STATE_JSON).is_file() else _newest_set_aside(directory)
    if found is None:
        return None
    tensors = load_file(str(found / STATE_TENSORS))
    return _unflatten(json.loads((found / STATE_JSON).read_text()), tensors)


def _beside(directory: Path, kind: str) -> Path:
    """A new folder name next to directory, for this process and call: <name>.<kind>-<pid>-<token>."""
    return directory.with_name(f"{directory.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _swap_in(tmp: Path, directory: Path) -> None:
    """Rename tmp to directory: the current state is set aside first, and removed once tmp is in."""
    for _ in range(_SWAP_ATTEMPTS):
        old = _beside(directory, "old")
        with contextlib.suppress(FileNotFoundError):  # a first save, or another process set it aside
            os.replace(directory, old)
        try:
            os.replace(tmp, directory)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise  # the previous state stays in `old`, where load_state finds it
            # Another process's state arrived between our two renames: newer than `old`, and ours
            # replaces it on the next attempt.
            shutil.rmtree(old, ignore_errors=True)
            continue
        shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(f"could not rename {tmp} to {directory}: other processes kept saving into it")


def _set_aside(directory: Path, kind: str) -> list[Path]:
    # "<name>.tmp" and "<name>.old" without a suffix are the fixed names earlier versions used.
    return list(directory.parent.glob(f"{glob.escape(directory.name)}.{kind}*"))


def _state_written_ns(folder: Path) -> int | None:
    try:
        return (folder / STATE_JSON).stat().st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):  # incomplete, or removed by another process
        return None


def _newest_set_aside(directory: Path) -> Path | None:
    """The most recently written complete state among those set aside by saves that died mid-swap."""
    written = {p: _state_written_ns(p) for p in _set_aside(directory, "old")}
    complete = {p: ns for p, ns in written.items() if ns is not None}
    return max(complete, key=complete.__getitem__, default=None)


def _remove_leftovers(directory: Path) -> None:
    """Remove folders that saves which died long ago left beside directory (each a whole state)."""
    if not (directory / STATE_JSON).is_file():
        return  # another process is between its renames: what is set aside may be the only state
    cutoff = time.time() - LEFTOVER_SECONDS
    for folder in _set_aside(directory, "tmp") + _set_aside(directory, "old"):
        with contextlib.suppress(FileNotFoundError):
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
