"""The data sets as the API sees them: what is known and present, and the check before a job is queued.

    summaries = list_datasets(settings)                 # every built-in and folder data set, no pixels read
    detail = dataset_detail(settings, "pets")           # + per-class counts (decodes the splits, once)
    png = sample_grid_png(settings, "pets")             # a few test images of each class
    check_job_data(settings, "mnist", loc=("body", "pretrain", "dataset"))   # DataUnavailable (422)

The engine (engine.datasets) is the one place that maps a name to its files; this module adds the
settings (the data root, the folder limits) and says what is wrong without showing a server path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.settings import Settings
from engine.data.folders import FolderLimits

SAMPLES_PER_CLASS = 8
MAX_GRID_CLASSES = 20  # a grid of more rows than this is unreadable; the first 20 classes are shown
HOW_TO_GET_DATA = (
    "set TRANSFERLAB_DOWNLOAD=true to let the worker download it, copy the files there "
    "(python bench/prepare_data.py copies MNIST and STL-10 from shared data; README, section Data), "
    "or upload a folder data set with POST /datasets"
)


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
    counts = {}
    for split in ("train", "test"):
        labels = load_split(name, split, settings.data_root, limits=limits, remember_split=False).labels
        counts[split] = labels.bincount(minlength=len(summary.class_names)).tolist()
    return DatasetDetail(summary, counts)


def sample_grid_png(settings: Settings, name: str) -> bytes:
    """A PNG of the first few test images of each class, captioned with the class names."""
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
