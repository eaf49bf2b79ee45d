"""The data sets: one registry, readers for the official file formats, a decode-once cache, and
seeded stratified subsets.

    from engine.datasets import DATASETS, load_split, stratified_subset, train_val_split
    train = load_split("mnist", "train", Path("data"))    # uint8 (60000, 1, 28, 28), int64 labels
    keep = stratified_subset(train.labels, 5000, seed=0)  # sorted indices, class-balanced
    fit, val = train_val_split(train.labels[keep], 0.1, seed=0)

Files live under one data root in torchvision's layout (`<root>/MNIST/raw`, `<root>/stl10_binary`).
We read the formats ourselves, not through torchvision 0.29's classes: STL10 refuses files it cannot
md5-check (all five official files, 2.5 GB with the unlabelled split), MNIST reads only unpacked
files (a .gz-only folder like ../shared/data/mnist is "not found"), and CIFAR10 unpickles its
python version. torchvision only downloads, md5-checking what it fetches.
A split is decoded once: kept in memory for this process, and in
`<root>/.transferlab-cache/<name>-<split>.safetensors` for the next one (never a pickle).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.errors import DataFormatError, MissingDataError, SpecError

log = logging.getLogger(__name__)

SplitName = Literal["train", "test"]
CACHE_FOLDER = ".transferlab-cache"
_CACHE_FORMAT = "1"  # bump when the cached tensors' meaning changes


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    native_size: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, train split / 255
    std: tuple[float, ...]
    default_augment: bool
    folder: str  # under the data root, as torchvision lays it out

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W), contiguous, CPU; the cache shares it: read only
    labels: torch.Tensor  # int64 (N,)
    class_names: tuple[str, ...]


_STL10_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
_CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# Digits are named by the digit alone (torchvision: "0 - zero"): they label plots and predictions.
_MNIST_NAMES = tuple(str(d) for d in range(10))
_FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# Mean/std: the well-known statistics of each full train split (/255), not measured per run.
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="stl10", channels=3, native_size=96, class_names=_STL10_NAMES,
            mean=(0.447, 0.440, 0.407), std=(0.260, 0.257, 0.271),
            default_augment=True, folder="stl10_binary",
        ),
        DatasetInfo(
            name="mnist", channels=1, native_size=28, class_names=_MNIST_NAMES,
            mean=(0.1307,), std=(0.3081,), default_augment=False, folder="MNIST/raw",
        ),
        DatasetInfo(
            name="fashion_mnist", channels=1, native_size=28, class_names=_FASHION_NAMES,
            mean=(0.2860,), std=(0.3530,), default_augment=False, folder="FashionMNIST/raw",
        ),
        DatasetInfo(
            name="cifar10", channels=3, native_size=32, class_names=_CIFAR10_NAMES,
            mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
            default_augment=True, folder="cifar-10-batches-bin",
        ),
    )
}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Readers: each returns images uint8 (N, C, H, W), labels int64 from 0, and class names or None.

Decoded = tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]


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


def _read_stl10(paths: list[Path], names_file: Path | None) -> Decoded:
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


def _read_idx(paths: list[Path], names_file: Path | None) -> Decoded:
    images_path, labels_path = paths
    images = _parse_idx(images_path, 3, (28, 28))
    labels = _parse_idx(labels_path, 1, ())
    if len(labels) != len(images):
        raise DataFormatError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    _check_labels(labels_path, labels, 0, 9)
    return images[:, None].copy(), labels.astype(np.int64), None  # copy: frombuffer is read-only


def _read_cifar10(paths: list[Path], names_file: Path | None) -> Decoded:
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


# --------------------------------------------------------------------------------------------------
# Downloads: torchvision md5-checks each archive it fetches. Imported lazily (torchvision ~1 s).


def _download_stl10(root: Path, split: SplitName) -> None:
    from torchvision.datasets import STL10

    STL10(root, split=split, download=True)  # the whole 2.5 GB archive, md5-checked


def _download_mnist(root: Path, split: SplitName) -> None:
    # Decision: torchvision md5-checks the official .gz files it fetches (and unpacks them beside
    # them). Files already present are never md5-checked: ../shared/data/mnist wraps byte-identical
    # IDX files in other gzip headers (timestamps), so its .gz md5s differ from torchvision's list,
    # and a correct copy must still load. Instead _parse_idx checks magic, dims, sizes and labels.
    from torchvision.datasets import MNIST

    MNIST(root, train=split == "train", download=True)


def _download_fashion_mnist(root: Path, split: SplitName) -> None:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(root, train=split == "train", download=True)


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"


def _download_cifar10(root: Path, split: SplitName) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(CIFAR10_URL, str(root), md5=CIFAR10_MD5)


@dataclass(frozen=True)
class _Format:
    # Files a split needs, each as its accepted names (first found wins); an optional names file.
    files: Callable[[SplitName], list[tuple[str, ...]]]
    names_file: str | None
    read: Callable[[list[Path], Path | None], Decoded]
    download: Callable[[Path, SplitName], None]


def _stl10_files(split: SplitName) -> list[tuple[str, ...]]:
    return [(f"{split}_X.bin",), (f"{split}_y.bin",)]


def _idx_files(split: SplitName) -> list[tuple[str, ...]]:
    prefix = "train" if split == "train" else "t10k"
    # Plain first: torchvision's download leaves both, and the plain one needs no decompressing.
    kinds = ("images-idx3", "labels-idx1")
    return [(f"{prefix}-{kind}-ubyte", f"{prefix}-{kind}-ubyte.gz") for kind in kinds]


def _cifar10_files(split: SplitName) -> list[tuple[str, ...]]:
    if split == "test":
        return [("test_batch.bin",)]
    return [(f"data_batch_{i}.bin",) for i in range(1, 6)]


_FORMATS: dict[str, _Format] = {
    "stl10": _Format(_stl10_files, "class_names.txt", _read_stl10, _download_stl10),
    "mnist": _Format(_idx_files, None, _read_idx, _download_mnist),
    "fashion_mnist": _Format(_idx_files, None, _read_idx, _download_fashion_mnist),
    "cifar10": _Format(_cifar10_files, "batches.meta.txt", _read_cifar10, _download_cifar10),
}
assert _FORMATS.keys() == DATASETS.keys()


# --------------------------------------------------------------------------------------------------
# Loading, through the two caches.

_memory: dict[tuple[str, str, str], tuple[str, Split]] = {}
_lock = threading.Lock()  # one decode at a time: two jobs asking for a split decode it once


def clear_memory_cache() -> None:
    """Forget every split decoded in this process (the cache files stay)."""
    with _lock:
        _memory.clear()


def _locate(folder: Path, fmt: _Format, split: SplitName) -> tuple[list[Path], list[str]]:
    found, missing = [], []
    for names in fmt.files(split):
        path = next((folder / n for n in names if (folder / n).is_file()), None)
        if path is None:
            missing.append(names[0] + ("[.gz]" if len(names) > 1 else ""))
        else:
            found.append(path)
    return found, missing


def _signature(paths: list[Path]) -> str:
    # Name, size and mtime of every source file: a changed, replaced or added file gives a new key.
    return json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in paths])


def cache_path(root: Path, name: str, split: str) -> Path:
    """Where a decoded split is kept between processes."""
    return Path(root).expanduser().resolve() / CACHE_FOLDER / f"{name}-{split}.safetensors"


def _read_cache(path: Path, key: str) -> Split | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _CACHE_FORMAT or meta.get("sources") != key:
                return None
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
            class_names = tuple(json.loads(meta["class_names"]))
    except FileNotFoundError:
        return None
    except (OSError, SafetensorError, KeyError, ValueError) as e:
        log.warning("ignoring unreadable data cache %s: %s", path, e)
        return None
    return Split(images, labels, class_names)


def _write_cache(path: Path, key: str, split: Split) -> None:
    meta = {"format": _CACHE_FORMAT, "sources": key, "class_names": json.dumps(split.class_names)}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"images": split.images, "labels": split.labels}, str(tmp), metadata=meta)
        os.replace(tmp, path)  # atomic: another process sees the old file or the new one
    except OSError as e:  # a read-only data root still loads; it just decodes in every process
        log.warning("cannot write data cache %s: %s", path, e)
        tmp.unlink(missing_ok=True)


def load_split(name: str, split: SplitName, root: Path, download: bool = False) -> Split:
    """The whole split as uint8 (N, C, H, W) images and int64 labels, decoded at most once.

    Raises MissingDataError when files are missing and download is off or fails, and
    DataFormatError naming the file when one is not in its data set's format.
    """
    if name not in DATASETS:
        choices = ", ".join(DATASETS)
        raise SpecError("dataset", f"unknown data set {name!r}; choose one of {choices}")
    if split not in ("train", "test"):
        raise SpecError("split", f"unknown split {split!r}; choose 'train' or 'test'")
    info, fmt = DATASETS[name], _FORMATS[name]
    root = Path(root).expanduser().resolve()
    folder = root / info.folder
    with _lock:
        paths, missing = _locate(folder, fmt, split)
        if missing and download:
            try:
                fmt.download(root, split)
            except Exception as e:  # network, md5 mismatch, disk: all mean the data is not here
                raise MissingDataError(name, folder, missing, f"download failed: {e}") from e
            paths, missing = _locate(folder, fmt, split)
        if missing:
            raise MissingDataError(name, folder, missing)
        names_file = folder / fmt.names_file if fmt.names_file else None
        if names_file is not None and not names_file.is_file():
            names_file = None
        key = _signature(paths + ([names_file] if names_file else []))

        hit = _memory.get((name, split, str(root)))
        if hit is not None and hit[0] == key:
            return hit[1]
        cache = cache_path(root, name, split)
        loaded = _read_cache(cache, key)
        if loaded is None:
            images, labels, names = fmt.read(paths, names_file)
            loaded = Split(torch.from_numpy(images), torch.from_numpy(labels), names or info.class_names)
            _write_cache(cache, key, loaded)
        _memory[(name, split, str(root))] = (key, loaded)
        return loaded


# --------------------------------------------------------------------------------------------------
# Seeded, stratified index sets.


def _allocate(counts: torch.Tensor, total: int, cap: torch.Tensor) -> torch.Tensor:
    # Largest-remainder shares of `total` in proportion to `counts`, never above `cap` a class.
    exact = counts.double() * total / counts.sum()
    take = torch.minimum(exact.floor().long(), cap)
    order = torch.argsort(exact - exact.floor(), descending=True, stable=True).tolist()
    while int(take.sum()) < total and bool((take < cap).any()):
        for c in order:  # at most num_classes steps a pass
            if int(take.sum()) >= total:
                break
            if take[c] < cap[c]:
                take[c] += 1
    return take


def _pick(
    labels: torch.Tensor, take_of: Callable[[torch.Tensor], torch.Tensor], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    # Shuffle each class with one seeded generator; its first `take` go in, the rest stay out.
    labels = labels.detach().cpu().long()
    classes, counts = torch.unique(labels, return_counts=True)
    take = take_of(counts)
    g = torch.Generator().manual_seed(seed)
    chosen, rest = [], []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        chosen.append(members[:k])
        rest.append(members[k:])
    return torch.cat(chosen).sort().values, torch.cat(rest).sort().values


def stratified_subset(labels: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of n samples, each class in its original proportion (and at least one of
    each class when n allows). n None or >= len(labels) -> all indices."""
    total = len(labels)
    if n is None or n >= total:
        return torch.arange(total)
    if n < 0:
        raise SpecError("n", f"a subset size must be >= 0, got {n}")

    def take_of(counts: torch.Tensor) -> torch.Tensor:
        take = _allocate(counts, n, counts)
        while n >= len(counts) and bool((take == 0).any()):  # a skewed set keeps every class
            take[int(torch.argmax(take))] -= 1
            take[int(torch.nonzero(take == 0)[0])] += 1
        return take

    return _pick(labels, take_of, seed)[0]


def train_val_split(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices): disjoint, sorted, stratified by class; every class
    keeps at least one training sample. val_fraction 0 -> (all, empty)."""
    if not 0 <= val_fraction < 1:
        raise SpecError("val_fraction", f"must be in [0, 1), got {val_fraction}")
    total = len(labels)
    if val_fraction == 0 or total == 0:
        return torch.arange(total), torch.empty(0, dtype=torch.long)
    val, train = _pick(
        labels, lambda counts: _allocate(counts, round(val_fraction * total), counts - 1), seed
    )
    return train, val
