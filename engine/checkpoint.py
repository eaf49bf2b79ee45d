"""Checkpoints: safetensors weights plus a JSON sidecar. Loading never unpickles.

info = save_checkpoint(model, meta, Path("ckpt"))      # ckpt/model.safetensors + ckpt/model.json
state, meta = load_checkpoint(Path("ckpt"), expected_sha256=info.sha256)
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from engine.durable import disk_full_is_clear, write_atomically
from engine.errors import CheckpointError
from engine.results import CheckpointInfo

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
FORMAT = "transferlab.checkpoint/1"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, meta: dict[str, Any], directory: Path) -> CheckpointInfo:
    """meta must hold at least architecture, num_classes, class_names and input (InputSpec.to_dict())."""
    for key in ("architecture", "num_classes", "class_names", "input"):
        if key not in meta:
            raise CheckpointError(f"checkpoint meta lacks {key!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = directory / WEIGHTS_FILE
    with disk_full_is_clear("the checkpoint", directory):
        write_atomically(weights, lambda p: save_file(state, str(p), metadata={"format": FORMAT}))
    sha = sha256_file(weights)
    full_meta = {
        "format": FORMAT,
        **meta,
        "sha256": sha,
        "size_bytes": weights.stat().st_size,
        "created_at": datetime.now(UTC).isoformat(),
        "torch_version": torch.__version__,
    }
    with disk_full_is_clear("the checkpoint's metadata", directory):
        write_atomically(directory / META_FILE, lambda p: p.write_text(json.dumps(full_meta, indent=2)))
    return CheckpointInfo(directory=directory, weights_path=weights, sha256=sha, meta=full_meta)


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {directory}: {META_FILE} is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_checkpoint(
    directory: Path, expected_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and meta, after checking the file's sha256 against the one recorded when it was written
    (and against `expected_sha256`, the database's copy, when given). A mismatch is never loaded."""
    meta = read_meta(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"no weights at {weights}")
    actual = sha256_file(weights)
    for recorded, where in ((meta.get("sha256"), META_FILE), (expected_sha256, "the database")):
        if recorded is not None and recorded != actual:
            raise CheckpointError(
                f"checkpoint {directory.name}: {WEIGHTS_FILE} has sha256 {actual[:12]}..., but {where} "
                f"recorded {recorded[:12]}...; the file was changed or corrupted and will not be loaded"
            )
    try:
        state = load_file(str(weights))
    except SafetensorError as e:
        raise CheckpointError(f"{weights} is not a valid safetensors file: {e}") from None
    return state, meta


# safetensors' dtype names, for comparing a file's header with a model's state dict without loading it.
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def check_weights_fit(weights: Path, architecture: str, num_classes: int) -> None:
    """CheckpointError unless the safetensors file holds exactly the architecture's state-dict keys,
    each with its shape and dtype. Reads the header only (safetensors never unpickles)."""
    from engine.models import state_shapes

    expected = state_shapes(architecture, num_classes)
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {
                key: (tuple(f.get_slice(key).get_shape()), f.get_slice(key).get_dtype()) for key in f.keys()
            }
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{WEIGHTS_FILE} is not a valid safetensors file: {e}") from None
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{WEIGHTS_FILE} does not hold {architecture}'s state dict for {num_classes} classes: "
            f"{len(missing)} key(s) missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]})"
        )
    for key, (shape, dtype) in expected.items():
        got_shape, got_dtype = found[key]
        want_dtype = _SAFETENSORS_DTYPES.get(dtype, str(dtype))
        if got_shape != shape or got_dtype != want_dtype:
            raise CheckpointError(
                f"{WEIGHTS_FILE}: {key} is {got_dtype} {list(got_shape)}, but {architecture} with "
                f"{num_classes} classes needs {want_dtype} {list(shape)}"
            )
