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

Any other name is a folder data set, `<root>/folders/<name>/{train,test}/<class>/*` (PNG or JPEG,
engine/data/folders.py), decoded into the same cache and decoded again when its files change:

    info = dataset_info("pets", root)          # classes, channels, stored size, mean/std of its train split
    check_available("pets", root, download=False)   # the 422 at submission: missing or badly laid out
"""

from __future__ import annotations

import gzip
import threading
import zlib
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
from engine.data.folders import (
    FOLDERS,
    FolderHeader,
    FolderLayoutError,
    FolderLimits,
    FolderScan,
    decode_split,
    folder_names,
    read_headers,
    scan_folder,
)
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
from engine.errors import DataFormatError, MissingDataError, SpecError

__all__ = [
    "CACHE_FOLDER",
    "DATASETS",
    "DatasetInfo",
    "DatasetSummary",
    "FolderLayoutError",
    "FolderLimits",
    "Split",
    "SplitName",
    "cache_path",
    "check_available",
    "clear_memory_cache",
    "dataset_info",
    "dataset_names",
    "describe_dataset",
    "is_builtin",
    "load_split",
    "split_signature",
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
    kind: str = "builtin"  # or "folder": <root>/folders/<name>

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


def _stl10_count(paths: list[Path]) -> int:
    return paths[1].stat().st_size  # one label byte an image


def _idx_count(paths: list[Path]) -> int:
    # The labels file's header: magic, then the count as a big-endian uint32.
    path = paths[1]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return int.from_bytes(f.read(8)[4:8], "big")


def _cifar10_count(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths) // 3073  # a label byte and 3x32x32 pixels a record


@dataclass(frozen=True)
class _Format:
    # Files a split needs, each as its accepted names (first found wins); an optional names file.
    files: Callable[[SplitName], list[tuple[str, ...]]]
    names_file: str | None
    read: Callable[[list[Path], Path | None], Decoded]
    download: Callable[[Path, SplitName], None]
    count: Callable[[list[Path]], int]  # images in a split, from file sizes or a header alone


_FORMATS: dict[str, _Format] = {
    "stl10": _Format(stl10_files, "class_names.txt", read_stl10, download_stl10, _stl10_count),
    "mnist": _Format(idx_files, None, read_idx, download_mnist, _idx_count),
    "fashion_mnist": _Format(idx_files, None, read_idx, download_fashion_mnist, _idx_count),
    "cifar10": _Format(cifar10_files, "batches.meta.txt", read_cifar10, download_cifar10, _cifar10_count),
}
assert _FORMATS.keys() == DATASETS.keys()

_lock = threading.Lock()  # one decode at a time: two jobs asking for a split decode it once


def clear_memory_cache() -> None:
    """Forget every split decoded in this process, and folder sets' headers (the cache files stay)."""
    with _lock:
        forget_all()
        _headers.clear()
        _stats.clear()


def is_builtin(name: str) -> bool:
    """Whether name is one of the four built-in data sets (anything else is a folder data set)."""
    return name in DATASETS


def dataset_names(root: Path) -> list[str]:
    """The built-in names, then the folder data sets under <root>/folders (a folder named like a
    built-in is not one: the built-in wins)."""
    return [*DATASETS, *(n for n in folder_names(_resolve(root)) if n not in DATASETS)]


def load_split(
    name: str,
    split: SplitName,
    root: Path,
    download: bool = False,
    limits: FolderLimits | None = None,
    remember_split: bool = True,
) -> Split:
    """The whole split as uint8 (N, C, H, W) images and int64 labels, decoded at most once.

    Raises MissingDataError when files are missing and download is off or fails, DataFormatError
    naming the file when one is not in its data set's format, and FolderLayoutError for a folder data
    set laid out wrongly or over `limits`. remember_split=False leaves it out of this process's memory
    (the API's one-off reads).
    """
    root = _resolve(root)
    with _lock:
        signature, decode = _source(name, split, root, download, limits)
        return _cached(name, split, root, signature, decode, remember_split)


def split_signature(
    name: str, split: SplitName, root: Path, download: bool = False, limits: FolderLimits | None = None
) -> str:
    """What identifies the split's files as they are now (their sizes and modification times, or a
    folder's fingerprint), without decoding anything: equal signatures, equal images. For callers
    that keep something derived from a split (the API's sample grids)."""
    with _lock:
        return _source(name, split, _resolve(root), download, limits)[0]


def _source(
    name: str, split: SplitName, root: Path, download: bool, limits: FolderLimits | None
) -> tuple[str, Callable[[], Split]]:
    """The split's signature and how to decode it. Call with _lock held."""
    if split not in ("train", "test"):
        raise SpecError("split", f"unknown split {split!r}; choose 'train' or 'test'")
    if name in DATASETS:
        info, fmt = DATASETS[name], _FORMATS[name]
        paths, names_file = _find_files(info, fmt, split, root, download)

        def decode() -> Split:
            images, labels, names = fmt.read(paths, names_file)
            return Split(torch.from_numpy(images), torch.from_numpy(labels), names or info.class_names)

        return source_signature(paths + ([names_file] if names_file else [])), decode
    scan, header = _folder(name, root, limits or FolderLimits())

    def decode_folder() -> Split:
        images, labels = decode_split(root, scan, header, split)
        return Split(torch.from_numpy(images), torch.from_numpy(labels), scan.classes)

    return f"folder {scan.fingerprint} {header.image_side} {header.channels}", decode_folder


def _resolve(root: Path) -> Path:
    return Path(root).expanduser().resolve()


def _cached(
    name: str, split: SplitName, root: Path, signature: str, decode: Callable[[], Split], keep: bool
) -> Split:
    """The split from this process's memory, else the cache file, else decoded (and cached)."""
    key = (name, split, str(root))
    loaded = remembered(key, signature)
    if loaded is not None:
        return loaded
    cache = cache_path(root, name, split)
    loaded = read_cache(cache, signature)
    if loaded is None:
        loaded = decode()
        write_cache(cache, signature, loaded)
    if keep:
        remember(key, signature, loaded)
    return loaded


# Headers of a folder data set's images, read once per fingerprint: (root, name) -> (fingerprint, header).
_headers: dict[tuple[str, str], tuple[str, FolderHeader]] = {}
# Mean and std of a folder data set's train split, by its cache signature.
_stats: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _folder(name: str, root: Path, limits: FolderLimits) -> tuple[FolderScan, FolderHeader]:
    """The folder's layout (scanned every time: cheap, and it notices changes) and its headers."""
    if name in DATASETS:
        raise FolderLayoutError(f"{FOLDERS}/{name}: {name!r} is a built-in data set's name")
    try:
        scan = scan_folder(root, name, limits)
    except FolderLayoutError as exc:
        if not (root / FOLDERS / name).is_dir():
            choices = ", ".join(DATASETS)
            raise SpecError(
                "dataset",
                f"unknown data set {name!r}; choose one of {choices}, or a folder data set: there is no "
                f"{FOLDERS}/{name}/ under the data root (upload one with POST /datasets)",
            ) from exc
        raise
    hit = _headers.get((str(root), name))
    if hit is not None and hit[0] == scan.fingerprint:
        return scan, hit[1]
    header = read_headers(root, scan, limits)
    _headers[(str(root), name)] = (scan.fingerprint, header)
    return scan, header


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Per-channel mean and std of pixels / 255, a chunk at a time (a float copy of 50,000 RGB images
    # at 128 px would be 10 GB). A flat channel gets std 1/255, not 0, so normalising stays finite.
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(1024):
        x = chunk.to(torch.float64) / 255
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt().clamp_min(1 / 255)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def dataset_info(name: str, root: Path, limits: FolderLimits | None = None) -> DatasetInfo:
    """A built-in's fixed facts; for a folder data set its classes, channels, stored size and the
    mean and std of its train split (decoding it, once)."""
    if name in DATASETS:
        return DATASETS[name]
    root = _resolve(root)
    train = load_split(name, "train", root, limits=limits)
    with _lock:
        scan, header = _folder(name, root, limits or FolderLimits())
        signature = f"{scan.fingerprint} {header.image_side} {header.channels}"
        if signature not in _stats:
            _stats[signature] = _channel_stats(train.images)
        mean, std = _stats[signature]
    return DatasetInfo(
        name=name,
        channels=header.channels,
        native_size=header.image_side,
        class_names=scan.classes,
        mean=mean,
        std=std,
        default_augment=header.channels == 3,  # as the built-ins: photos augmented, grey sets not
        folder=scan.where(),
        kind="folder",
    )


@dataclass(frozen=True)
class DatasetSummary:
    """What GET /datasets shows of one data set, read without decoding any image."""

    name: str
    kind: str  # builtin or folder
    folder: str  # relative to the data root
    present: bool
    missing_files: list[str]  # what is absent (built-ins; a folder set names its problem instead)
    problem: str | None  # why a present folder set cannot be used, or None
    split_sizes: dict[str, int] | None
    class_names: tuple[str, ...]
    channels: int | None
    native_size: int | None  # the files' side (built-ins); a folder set's median shorter side
    stored_size: int | None  # the side the cache holds (a folder set's declared or capped median)


def describe_dataset(name: str, root: Path, limits: FolderLimits | None = None) -> DatasetSummary:
    """The data set's files, split sizes, classes, channels and sizes, from file sizes and headers;
    SpecError for an unknown name."""
    root = _resolve(root)
    if name in DATASETS:
        info, fmt = DATASETS[name], _FORMATS[name]
        sizes: dict[str, int] = {}
        missing: list[str] = []
        for split in ("train", "test"):
            paths, absent = _locate(root / info.folder, fmt, split)
            missing += absent
            if not absent:
                try:
                    sizes[split] = fmt.count(paths)
                except (OSError, EOFError, zlib.error):  # a corrupt file: a job names it when it reads it
                    sizes[split] = 0
        present = not missing
        return DatasetSummary(
            name, "builtin", info.folder, present, missing, None, sizes if present else None,
            info.class_names, info.channels, info.native_size, info.native_size,
        )  # fmt: skip
    try:
        with _lock:
            scan, header = _folder(name, root, limits or FolderLimits())
    except (FolderLayoutError, DataFormatError, SpecError) as exc:
        present = not isinstance(exc, SpecError)  # SpecError: there is no such folder
        return DatasetSummary(
            name, "folder", f"{FOLDERS}/{name}", present, [], str(exc), None, (), None, None, None
        )
    sizes = {split: len(scan.files[split]) for split in ("train", "test")}
    return DatasetSummary(
        name, "folder", scan.where(), True, [], None, sizes, scan.classes, header.channels,
        header.median_side, header.image_side,
    )  # fmt: skip


def check_available(name: str, root: Path, download: bool, limits: FolderLimits | None = None) -> None:
    """What a job's data needs before it is queued: a built-in's files present (or download on), a
    folder set laid out right and within limits. MissingDataError, FolderLayoutError, DataFormatError
    or SpecError (an unknown name) otherwise. Reads no pixels."""
    root = _resolve(root)
    if name in DATASETS:
        info, fmt = DATASETS[name], _FORMATS[name]
        missing = [f for split in ("train", "test") for f in _locate(root / info.folder, fmt, split)[1]]
        if missing and not download:
            raise MissingDataError(name, root / info.folder, missing)
        return
    with _lock:
        _folder(name, root, limits or FolderLimits())


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
