"""Readers for the official file formats, and the files each split needs. Nothing is unpickled.

Each reader returns images uint8 (N, C, H, W), labels int64 from 0, and class names or None, and
raises DataFormatError naming the file when its bytes are not in the format:

    raw = Path("data/MNIST/raw")
    images, labels, names = read_idx([raw / "t10k-images-idx3-ubyte.gz", raw / "t10k-labels-idx1-ubyte"])
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from engine.errors import DataFormatError

SplitName = Literal["train", "test"]
Decoded = tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]


def stl10_files(split: SplitName) -> list[tuple[str, ...]]:
    """The binary version's image and label files."""
    return [(f"{split}_X.bin",), (f"{split}_y.bin",)]


def idx_files(split: SplitName) -> list[tuple[str, ...]]:
    """MNIST's (and Fashion-MNIST's) images and labels, each plain or gzipped."""
    prefix = "train" if split == "train" else "t10k"
    # Plain first: torchvision's download leaves both, and the plain one needs no decompressing.
    kinds = ("images-idx3", "labels-idx1")
    return [(f"{prefix}-{kind}-ubyte", f"{prefix}-{kind}-ubyte.gz") for kind in kinds]


def cifar10_files(split: SplitName) -> list[tuple[str, ...]]:
    """The binary version's batches: five for training, one for testing."""
    if split == "test":
        return [("test_batch.bin",)]
    return [(f"data_batch_{i}.bin",) for i in range(1, 6)]


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # not gzip, truncated, corrupt
        raise DataFormatError(f"{path}: not a readable gzip file ({e})") from e


def _check_labels(path: Path, labels: np.ndarray, low: int, high: int) -> None:
    if labels.size and (labels.min() < low or labels.max() > high):
        raise DataFormatError(f"{path}: labels must be {low}..{high}, found {labels.min()}..{labels.max()}")


def _read_names(path: Path | None, count: int) -> tuple[str, ...] | None:
    if path is None:
        return None
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(names) != count:
        raise DataFormatError(f"{path}: expected {count} class names, one a line, found {len(names)}")
    return names


def read_stl10(paths: list[Path], names_file: Path | None) -> Decoded:
    """STL-10's binary images and labels, with class_names.txt's names when there is one."""
    # 3x96x96 bytes an image, channel by channel, each channel column-major (x outer, y inner);
    # labels are single bytes 1..10. Swapping the last two axes makes the image upright.
    x_path, y_path = paths
    data = np.fromfile(x_path, dtype=np.uint8)
    size = 3 * 96 * 96
    if data.size == 0 or data.size % size:
        raise DataFormatError(
            f"{x_path}: {data.size} bytes is not a positive multiple of {size} (3x96x96 images)"
        )
    images = np.ascontiguousarray(data.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2))
    labels = np.fromfile(y_path, dtype=np.uint8)
    if labels.size != len(images):
        raise DataFormatError(f"{y_path}: {labels.size} labels for {len(images)} images")
    _check_labels(y_path, labels, 1, 10)
    return images, labels.astype(np.int64) - 1, _read_names(names_file, 10)


def _parse_idx(path: Path, ndim: int, tail: tuple[int, ...]) -> np.ndarray:
    # IDX: 2 zero bytes, type 0x08 (uint8), ndim, ndim big-endian uint32 sizes, then the data.
    # torchvision only asserts the type; we check it all, as .gz checksums cannot be relied on.
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes((0, 0, 8, ndim)):
        raise DataFormatError(
            f"{path}: not an IDX uint8 file with {ndim} dimension(s) (magic {0x800 + ndim}); "
            f"it starts with {data[:4].hex() or 'nothing'}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if dims[1:] != tail:
        raise DataFormatError(f"{path}: items of shape {dims[1:]}, expected {tail}")
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataFormatError(
            f"{path}: header says {dims} = {expected} bytes, file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(paths: list[Path], names_file: Path | None = None) -> Decoded:
    """MNIST-style IDX images (28x28) and labels 0..9, plain or gzipped; the format has no names."""
    images_path, labels_path = paths
    images = _parse_idx(images_path, 3, (28, 28))
    labels = _parse_idx(labels_path, 1, ())
    if len(labels) != len(images):
        raise DataFormatError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    _check_labels(labels_path, labels, 0, 9)
    return images[:, None].copy(), labels.astype(np.int64), None  # copy: frombuffer is read-only


def read_cifar10(paths: list[Path], names_file: Path | None) -> Decoded:
    """CIFAR-10's binary batches, joined in file order, with batches.meta.txt's names when present."""
    # Binary version: records of 1 label byte + 3072 pixel bytes (1024 R, G, B each, row-major).
    # The python version is a pickle, and loading data must never unpickle.
    parts = []
    for path in paths:
        data = np.fromfile(path, dtype=np.uint8)
        if data.size == 0 or data.size % 3073:
            raise DataFormatError(
                f"{path}: {data.size} bytes is not a positive multiple of 3073 (label + 3x32x32)"
            )
        records = data.reshape(-1, 3073)
        _check_labels(path, records[:, 0], 0, 9)
        parts.append(records)
    records = np.concatenate(parts)
    images = np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32))
    return images, records[:, 0].astype(np.int64), _read_names(names_file, 10)
