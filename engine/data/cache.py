"""A split is decoded once: kept in this process's memory, and in a safetensors file for the next one.

    <root>/.transferlab-cache/<name>-<split>.safetensors   uint8 images, int64 labels; never a pickle

Both are keyed by a signature of the source files (name, size, mtime): a changed, replaced or added file
decodes again. The file is written beside and renamed, so another process sees the old one or the new.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

log = logging.getLogger(__name__)

CACHE_FOLDER = ".transferlab-cache"
_CACHE_FORMAT = "1"  # bump when the cached tensors' meaning changes

MemoryKey = tuple[str, str, str]  # data set, split, resolved data root


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W), contiguous, CPU; the cache shares it: read only
    labels: torch.Tensor  # int64 (N,)
    class_names: tuple[str, ...]


# Decoded splits with the signature of the files they came from. Callers serialise access (one
# decode at a time is engine.datasets' lock).
_memory: dict[MemoryKey, tuple[str, Split]] = {}


def source_signature(paths: list[Path]) -> str:
    """Name, size and mtime of every source file."""
    return json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in paths])


def cache_path(root: Path, name: str, split: str) -> Path:
    """Where a decoded split is kept between processes."""
    return Path(root).expanduser().resolve() / CACHE_FOLDER / f"{name}-{split}.safetensors"


def remembered(key: MemoryKey, signature: str) -> Split | None:
    """The split decoded in this process from files with this signature, if any."""
    hit = _memory.get(key)
    return hit[1] if hit is not None and hit[0] == signature else None


def remember(key: MemoryKey, signature: str, split: Split) -> None:
    """Keep a split for the rest of this process."""
    _memory[key] = (signature, split)


def forget_all() -> None:
    """Drop every remembered split (the cache files stay)."""
    _memory.clear()


def read_cache(path: Path, signature: str) -> Split | None:
    """The cached split when the file exists, is readable and was made from these sources."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _CACHE_FORMAT or meta.get("sources") != signature:
                return None
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
            class_names = tuple(json.loads(meta["class_names"]))
    except FileNotFoundError:
        return None
    except (OSError, SafetensorError, KeyError, ValueError) as e:
        log.warning("ignoring unreadable data cache %s: %s", path, e)
        return None
    return Split(images, labels, class_names)


def write_cache(path: Path, signature: str, split: Split) -> None:
    """Store the split for other processes; a data root that cannot be written is only logged."""
    meta = {"format": _CACHE_FORMAT, "sources": signature, "class_names": json.dumps(split.class_names)}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"images": split.images, "labels": split.labels}, str(tmp), metadata=meta)
        os.replace(tmp, path)  # atomic: another process sees the old file or the new one
    except OSError as e:  # a read-only data root still loads; it just decodes in every process
        log.warning("cannot write data cache %s: %s", path, e)
        tmp.unlink(missing_ok=True)
