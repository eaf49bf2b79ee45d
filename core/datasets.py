"""The data sets as the API sees them: what is known and present, and the check before a job is queued.

    summaries = list_datasets(settings)                 # every built-in and folder data set, no pixels read
    detail = dataset_detail(settings, "pets")           # + per-class counts (decodes the splits, once)
    png = sample_grid_png(settings, "pets")             # a few test images of each class
    check_job_data(settings, "mnist", loc=("body", "pretrain", "dataset"))   # DataUnavailable (422)

The engine (engine.datasets) is the one place that maps a name to its files; this module adds the
settings (the data root, the folder limits) and says what is wrong without showing a server path.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.settings import Settings
from engine.data.folders import FolderLimits

if TYPE_CHECKING:
    from engine.datasets import SplitName

SAMPLES_PER_CLASS = 8
MAX_GRID_CLASSES = 20  # a grid of more rows than this is unreadable; the first 20 classes are shown
HOW_TO_GET_DATA = (
    "set TRANSFERLAB_DOWNLOAD=true to let the worker download it, copy the files there "
    "(python bench/prepare_data.py copies MNIST and STL-10 from shared data; README, section Data), "
    "or upload a folder data set with POST /datasets"
)


# Per-class counts and sample grids the API has computed, by the splits' signatures (files' sizes and
# modification times, or a folder's fingerprint): a data set whose files change gets new ones. Each
# costs decoding a split (hundreds of ms for MNIST's 60,000 images), and GET /datasets/{name} and its
# samples.png ask for them on every page view. A few data sets' worth: the grids are tens of KB.
CACHED_DATASETS = 16
_derived: OrderedDict[tuple[str, ...], Any] = OrderedDict()
_derived_lock = threading.Lock()


def _remembered(
    settings: Settings, what: str, name: str, splits: tuple[SplitName, ...], compute: Callable[[], Any]
) -> Any:
    """compute() once per (data root, name, the splits' signatures), least recently used dropped."""
    from engine.datasets import split_signature

    limits = folder_limits(settings)
    signatures = tuple(split_signature(name, s, settings.data_root, limits=limits) for s in splits)
    key = (what, str(settings.data_root), name, *signatures)
    with _derived_lock:
        if key in _derived:
            _derived.move_to_end(key)
            return _derived[key]
    value = compute()
    with _derived_lock:
        _derived[key] = value
        while len(_derived) > CACHED_DATASETS:
            _derived.popitem(last=False)
    return value


def clear_derived_cache() -> None:
    with _derived_lock:
        _derived.clear()


class DataUnavailable(ValueError):
    """A job's data set is unknown, absent or unusable (422); `loc` is its field in the body."""

    def __init__(self, message: str, loc: tuple[str, ...], value: str):
        super().__init__(message)
        self.loc, self.value = loc, value

    def as_error(self) -> dict[str, Any]:
        """One item of a 422's `detail`, as FastAPI writes them."""
        return {"type": "value_error", "loc": self.loc, "msg": str(self), "input": self.value}


def folder_limits(settings: Settings) -> FolderLimits:
    """The TRANSFERLAB_FOLDER_* settings, as the engine takes them."""
    return FolderLimits(
        max_images=settings.folder_max_images,
        max_image_pixels=settings.folder_max_image_pixels,
        max_total_bytes=settings.folder_max_total_bytes,
        max_image_side=settings.folder_max_image_side,
    )


def list_datasets(settings: Settings) -> list[Any]:
    """A DatasetSummary (engine.datasets) of every built-in, then every folder data set."""
    from engine.datasets import dataset_names, describe_dataset

    limits = folder_limits(settings)
    return [describe_dataset(n, settings.data_root, limits) for n in dataset_names(settings.data_root)]


@dataclass(frozen=True)
class DatasetDetail:
    summary: Any  # engine.datasets.DatasetSummary
    class_counts: dict[str, list[int]] | None  # split -> images of each class, in label order


def dataset_detail(settings: Settings, name: str) -> DatasetDetail | None:
    """The summary and per-class counts of a known data set (None: unknown name). Counting decodes
    the splits into the cache once; they are not kept in the API's memory."""
    from engine.datasets import dataset_names, describe_dataset, load_split

    if name not in dataset_names(settings.data_root):
        return None
    limits = folder_limits(settings)
    summary = describe_dataset(name, settings.data_root, limits)
    if not summary.present or summary.problem is not None:
        return DatasetDetail(summary, None)

    def count() -> dict[str, list[int]]:
        counts = {}
        for split in ("train", "test"):
            labels = load_split(name, split, settings.data_root, limits=limits, remember_split=False).labels
            counts[split] = labels.bincount(minlength=len(summary.class_names)).tolist()
        return counts

    return DatasetDetail(summary, _remembered(settings, "counts", name, ("train", "test"), count))


def sample_grid_png(settings: Settings, name: str) -> bytes:
    """A PNG of the first few test images of each class, captioned with the class names; drawn once
    per version of the test split's files."""
    return _remembered(settings, "grid", name, ("test",), lambda: _draw_sample_grid(settings, name))


def _draw_sample_grid(settings: Settings, name: str) -> bytes:
    import torch

    from engine.datasets import load_split
    from engine.plots import examples_png

    split = load_split(name, "test", settings.data_root, limits=folder_limits(settings), remember_split=False)
    picked = []
    for label in range(min(len(split.class_names), MAX_GRID_CLASSES)):
        picked += torch.nonzero(split.labels == label).flatten()[:SAMPLES_PER_CLASS].tolist()
    labels = split.labels[picked].tolist()
    return examples_png(
        split.images[picked].numpy(),
        labels,
        labels,
        [1.0] * len(picked),
        split.class_names,
        f"{name}: test images, {SAMPLES_PER_CLASS} of each class",
        columns=SAMPLES_PER_CLASS,
    )


def split_images(settings: Settings, name: str) -> tuple[int, int] | None:
    """(train, test) images of a folder data set, for the job's estimate; None for a built-in."""
    from engine.datasets import describe_dataset, is_builtin

    if is_builtin(name):
        return None
    sizes = describe_dataset(name, settings.data_root, folder_limits(settings)).split_sizes
    return (sizes["train"], sizes["test"]) if sizes else None


def check_job_data(settings: Settings, name: str, loc: tuple[str, ...]) -> None:
    """DataUnavailable unless the data set's files are there (or will be downloaded) and usable.
    Skipped when TRANSFERLAB_CHECK_DATA_AT_SUBMISSION is off (an API that cannot see the data root)."""
    if not settings.check_data_at_submission:
        return
    from engine.data.folders import FolderLayoutError
    from engine.datasets import DATASETS, check_available
    from engine.errors import DataFormatError, MissingDataError, SpecError

    try:
        check_available(name, settings.data_root, settings.download, folder_limits(settings))
    except MissingDataError as exc:
        folder = DATASETS[name].folder
        raise DataUnavailable(
            f"data set {name!r} is not on this server: expected <data root>/{folder}/ to hold "
            f"{', '.join(exc.expected_files)}; {HOW_TO_GET_DATA}",
            loc,
            name,
        ) from None
    except SpecError as exc:  # an unknown name
        raise DataUnavailable(str(exc).removeprefix("dataset: "), loc, name) from None
    except (FolderLayoutError, DataFormatError) as exc:
        raise DataUnavailable(f"data set {name!r} cannot be used: {exc}", loc, name) from None
