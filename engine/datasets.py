"""The data sets: one registry, and load_split, the one way in. The parts live in engine/data/.

    from engine.datasets import DATASETS, load_split, stratified_subset, train_val_split
    train = load_split("mnist", "train", Path("data"))    # uint8 (60000, 1, 28, 28), int64 labels
    keep = stratified_subset(train.labels, 5000, seed=0)  # sorted indices, class-balanced
    fit, val = train_val_split(train.labels[keep], 0.1, seed=0)

Files live under one data root in torchvision's layout (`<root>/MNIST/raw`, `<root>/stl10_binary`).
We read the formats ourselves (engine/data/readers.py), not through torchvision 0.29's classes: STL10
refuses files it cannot md5-check (all five official files, 2.5 GB with the unlabelled split), MNIST
reads only unpacked files (a .gz-only folder like ../shared/data/mnist is "not found"), and CIFAR10
unpickles its python version. torchvision only downloads, md5-checking what it fetches
(engine/data/download.py). A split is decoded once: kept in memory for this process, and in
`<root>/.transferlab-cache/<name>-<split>.safetensors` for the next one (engine/data/cache.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.data.cache import (
    CACHE_FOLDER,
    Split,
    cache_path,
    forget_all,
    read_cache,
    remember,
    remembered,
    source_signature,
    write_cache,
)
from engine.data.download import download_cifar10, download_fashion_mnist, download_mnist, download_stl10
from engine.data.readers import (
    Decoded,
    SplitName,
    cifar10_files,
    idx_files,
    read_cifar10,
    read_idx,
    read_stl10,
    stl10_files,
)
from engine.data.sampling import stratified_subset, train_val_split
from engine.errors import MissingDataError, SpecError

__all__ = [
    "CACHE_FOLDER",
    "DATASETS",
    "DatasetInfo",
    "Split",
    "SplitName",
    "cache_path",
    "clear_memory_cache",
    "load_split",
    "stratified_subset",
    "train_val_split",
]


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


@dataclass(frozen=True)
class _Format:
    # Files a split needs, each as its accepted names (first found wins); an optional names file.
    files: Callable[[SplitName], list[tuple[str, ...]]]
    names_file: str | None
    read: Callable[[list[Path], Path | None], Decoded]
    download: Callable[[Path, SplitName], None]


_FORMATS: dict[str, _Format] = {
    "stl10": _Format(stl10_files, "class_names.txt", read_stl10, download_stl10),
    "mnist": _Format(idx_files, None, read_idx, download_mnist),
    "fashion_mnist": _Format(idx_files, None, read_idx, download_fashion_mnist),
    "cifar10": _Format(cifar10_files, "batches.meta.txt", read_cifar10, download_cifar10),
}
assert _FORMATS.keys() == DATASETS.keys()

_lock = threading.Lock()  # one decode at a time: two jobs asking for a split decode it once


def clear_memory_cache() -> None:
    """Forget every split decoded in this process (the cache files stay)."""
    with _lock:
        forget_all()


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
    with _lock:
        paths, names_file = _find_files(info, fmt, split, root, download)
        signature = source_signature(paths + ([names_file] if names_file else []))
        key = (name, split, str(root))
        loaded = remembered(key, signature)
        if loaded is not None:
            return loaded
        cache = cache_path(root, name, split)
        loaded = read_cache(cache, signature)
        if loaded is None:
            images, labels, names = fmt.read(paths, names_file)
            loaded = Split(torch.from_numpy(images), torch.from_numpy(labels), names or info.class_names)
            write_cache(cache, signature, loaded)
        remember(key, signature, loaded)
        return loaded


def _find_files(
    info: DatasetInfo, fmt: _Format, split: SplitName, root: Path, download: bool
) -> tuple[list[Path], Path | None]:
    """The split's files (downloaded first when missing and allowed) and its names file, if any."""
    folder = root / info.folder
    paths, missing = _locate(folder, fmt, split)
    if missing and download:
        try:
            fmt.download(root, split)
        except Exception as e:  # network, md5 mismatch, disk: all mean the data is not here
            raise MissingDataError(info.name, folder, missing, f"download failed: {e}") from e
        paths, missing = _locate(folder, fmt, split)
    if missing:
        raise MissingDataError(info.name, folder, missing)
    names_file = folder / fmt.names_file if fmt.names_file else None
    if names_file is not None and not names_file.is_file():
        names_file = None
    return paths, names_file


def _locate(folder: Path, fmt: _Format, split: SplitName) -> tuple[list[Path], list[str]]:
    found, missing = [], []
    for names in fmt.files(split):
        path = next((folder / n for n in names if (folder / n).is_file()), None)
        if path is None:
            missing.append(names[0] + ("[.gz]" if len(names) > 1 else ""))
        else:
            found.append(path)
    return found, missing
