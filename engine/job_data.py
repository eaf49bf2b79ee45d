"""What a job trains and evaluates on: its rows of each split, on the device, and each phase's sources.

    data = load_job_data(spec, Path("data"), download=False, device=torch.device("cpu"))
    train, val, test = phase_sources(model, phase, data, input_spec, augment, cache_bytes, numerics,
                                     hooks.should_stop)

A phase that freezes a prefix of the model on un-augmented inputs gets the same prefix outputs every
epoch: its train and validation sources are those outputs, computed once, when they fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from engine.datasets import FolderLimits, Split, load_split, stratified_subset, train_val_split
from engine.loop import Forward, ImageSource, Source, StopCheck, precompute
from engine.models import TransferNet
from engine.numerics import Numerics
from engine.preprocess import InputSpec
from engine.spec import FinetuneSpec, PretrainSpec
from engine.strategies import Phase

# Cache a frozen prefix's outputs (partial strategy, no augmentation) only when they fit in this much
# memory: resnet18's layer1 output at 96x96 is 147 KB an image, 8.8 GB for MNIST's 60,000.
DEFAULT_FEATURE_CACHE_BYTES = 2 * 1024**3

Rows = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, C, H, W), int64 labels (N,)


@dataclass
class JobData:
    train: Rows
    val: Rows
    test: Rows
    test_indices: torch.Tensor  # rows of the whole test split, for plots of examples
    class_names: tuple[str, ...]


def load_job_data(
    spec: PretrainSpec | FinetuneSpec,
    root: Path,
    download: bool,
    device: torch.device,
    folder_limits: FolderLimits | None = None,
) -> JobData:
    """The spec's seeded, stratified train / validation / test rows, moved to the device."""
    seed, options = spec.hyperparameters.seed, spec.data
    train = load_split(spec.dataset, "train", root, download, folder_limits)
    test = load_split(spec.dataset, "test", root, download, folder_limits)
    pool = stratified_subset(train.labels, options.train_samples, seed)
    train_pos, val_pos = train_val_split(train.labels[pool], options.val_fraction, seed)
    train_rows, val_rows = pool[train_pos], pool[val_pos]
    test_rows = stratified_subset(test.labels, options.test_samples, seed)

    def take(split: Split, rows: torch.Tensor) -> Rows:
        return split.images[rows].to(device), split.labels[rows].to(device)

    return JobData(
        take(train, train_rows),
        take(train, val_rows),
        take(test, test_rows),
        test_rows,
        train.class_names,
    )


def feature_cache_bytes(device: torch.device, given: int | None) -> int:
    """The caller's cap, else 2 GiB on the CPU and a quarter of the free memory on a GPU (partial on
    all of MNIST at 96x96 caches about 5 GB of resnet18 layer1 outputs: worth it on an H200)."""
    if given is not None:
        return given
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 4
    return DEFAULT_FEATURE_CACHE_BYTES


def frozen_prefix(model: TransferNet, frozen: int) -> Forward:
    """The frozen part as a function; with every block frozen it includes the neck (head inputs)."""
    if frozen == len(model.blocks):
        return lambda x: model.extract(x)
    return lambda x: model.extract(x, 0, frozen)


def phase_sources(
    model: TransferNet,
    phase: Phase,
    data: JobData,
    input_spec: InputSpec,
    augment: bool,
    cache_bytes: int,
    numerics: Numerics,
    should_stop: StopCheck,
) -> tuple[Source, Source, Source]:
    """Train, validation and test sources for a phase; should_stop is polled while caching features."""
    k = phase.frozen_blocks
    prefix = frozen_prefix(model, k) if k > 0 else None
    train = ImageSource(*data.train, input_spec, augment, numerics, prefix)
    val = ImageSource(*data.val, input_spec, False, numerics, prefix)
    test = ImageSource(*data.test, input_spec, False, numerics, prefix)
    if prefix is None or augment or cache_bytes <= 0:  # 0 turns caching off (tests, benchmarks)
        return train, val, test
    # The splits read every epoch are computed once; the test split is read once, at the end, through
    # the prefix.
    rows = len(train) + len(val)
    model.eval()
    bytes_per_row = train.batch(torch.arange(1, device=data.train[0].device), None)[0].nbytes
    if k < len(model.blocks) and bytes_per_row * rows > cache_bytes:
        return train, val, test
    # resnet18 on 2 CPU cores runs 235 images/s at batch 32-128 but 174 at 512 (bench/: linear +19%).
    batch = 512 if data.train[0].device.type == "cuda" else 64
    return precompute(train, batch, should_stop), precompute(val, batch, should_stop), test
