"""Epoch checkpoints for resuming a run, without pickle: tensors go to safetensors, the rest to JSON.

Nested state (optimizer and scheduler state dicts, RNG states, metrics so far) is flattened: every
tensor is replaced by {"__tensor__": key} and stored under that key; dicts are stored as [key, value]
pairs so integer keys (the optimiser's parameter ids) come back as integers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


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
    """Write a new state beside the old one, then swap: a crash mid-write keeps the previous epoch."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    flat = _flatten(state, tensors)
    save_file(tensors, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps(flat))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_state(directory: Path) -> dict[str, Any] | None:
    directory = Path(directory)
    if not (directory / STATE_JSON).is_file():
        old = directory.with_name(directory.name + ".old")  # died between the two renames
        if not (old / STATE_JSON).is_file():
            return None
        directory = old
    tensors = load_file(str(directory / STATE_TENSORS))
    return _unflatten(json.loads((directory / STATE_JSON).read_text()), tensors)
