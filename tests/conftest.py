"""Shared fixtures: a tiny data root in the real formats, and the real data from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.formats import make_tiny_data_root

# ../shared/data next to the repository, or wherever TRANSFERLAB_SHARED_DATA points.
SHARED_DATA = Path(
    os.environ.get("TRANSFERLAB_SHARED_DATA") or Path(__file__).parents[1].parent / "shared/data"
)


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """STL-10, MNIST (gz), Fashion-MNIST (plain) and CIFAR-10: 100 train, 50 test, 10 per class
    and 5 per class. Session-wide: treat as read only (it gains a cache folder on first load)."""
    return make_tiny_data_root(tmp_path_factory.mktemp("tiny-data"), n_train=100, n_test=50)


def _linked_root(tmp: Path, source: Path, folder: str, what: str) -> Path:
    if not source.is_dir():
        pytest.skip(f"real {what} not found at {source} (set TRANSFERLAB_SHARED_DATA)")
    target = tmp / folder
    target.mkdir(parents=True)
    for f in source.iterdir():
        if f.is_file():
            (target / f.name).symlink_to(f.resolve())
    return tmp


@pytest.fixture(scope="session")
def real_mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose MNIST/raw links to the real MNIST .gz files in shared data."""
    return _linked_root(tmp_path_factory.mktemp("real-mnist"), SHARED_DATA / "mnist", "MNIST/raw", "MNIST")


@pytest.fixture(scope="session")
def real_stl10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose stl10_binary links to the real 1,000 + 200 image STL-10 subset."""
    return _linked_root(
        tmp_path_factory.mktemp("real-stl10"),
        SHARED_DATA / "stl10/stl10_binary_subset",
        "stl10_binary",
        "STL-10 subset",
    )
