"""engine.datasets: the registry, the readers on tiny files in the official formats, errors, the
decode-once cache, stratified subsets and validation splits, and the real data in ../shared/data."""

from __future__ import annotations

import csv
import gzip
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import datasets
from engine.datasets import (
    DATASETS,
    cache_path,
    clear_memory_cache,
    load_split,
    stratified_subset,
    train_val_split,
)
from engine.errors import DataFormatError, MissingDataError, SpecError
from engine.spec import BuiltinDataset
from tests.conftest import SHARED_DATA
from tests.formats import (
    idx_bytes,
    make_tiny_data_root,
    write_cifar10_bin,
    write_idx,
    write_stl10,
)


@pytest.fixture(autouse=True)
def fresh_memory_cache():
    clear_memory_cache()
    yield
    clear_memory_cache()


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


# --- registry -------------------------------------------------------------------------------------


def test_registry_covers_every_builtin_dataset():
    assert set(DATASETS) == {d.value for d in BuiltinDataset}
    for name, info in DATASETS.items():
        assert info.name == name
        assert info.num_classes == 10
        assert len(info.mean) == len(info.std) == info.channels


# --- readers on tiny files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
@pytest.mark.parametrize(("split", "n"), [("train", 100), ("test", 50)])
def test_loader_returns_uint8_nchw_images_and_balanced_int64_labels(tiny_data_root, name, split, n):
    info = DATASETS[name]
    data = load_split(name, split, tiny_data_root)
    size = info.native_size
    assert data.images.shape == (n, info.channels, size, size)
    assert data.images.dtype == torch.uint8 and data.images.is_contiguous()
    assert data.labels.shape == (n,) and data.labels.dtype == torch.int64
    assert torch.bincount(data.labels, minlength=10).tolist() == [n // 10] * 10
    assert data.class_names == info.class_names


def test_stl10_column_major_bytes_come_back_upright(tmp_path):
    # Written here byte by byte from the format description, not through tests.formats:
    # byte c*96*96 + x*96 + y holds channel c, row y, column x.
    image = np.zeros((3, 96, 96), np.uint8)
    image[0, 0, 90:] = 255  # red bar at the top right
    image[2, 50:, 3] = 200  # blue bar low on the left
    c, y, x = np.indices(image.shape)
    raw = np.zeros(image.size, np.uint8)
    raw[c * 96 * 96 + x * 96 + y] = image
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "test_X.bin").write_bytes(raw.tobytes())
    (folder / "test_y.bin").write_bytes(bytes([10]))
    data = load_split("stl10", "test", tmp_path)
    assert torch.equal(data.images[0], torch.from_numpy(image))
    assert data.labels.tolist() == [9]


def test_stl10_class_names_come_from_class_names_txt_when_present(tmp_path):
    names = tuple(f"class-{i}" for i in range(10))
    images = np.zeros((10, 3, 96, 96), np.uint8)
    write_stl10(tmp_path / "stl10_binary", images, np.arange(10), "test", class_names=names)
    assert load_split("stl10", "test", tmp_path).class_names == names
    clear_memory_cache()
    (tmp_path / "stl10_binary/class_names.txt").unlink()
    assert load_split("stl10", "test", tmp_path).class_names == DATASETS["stl10"].class_names


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loads_gzipped_or_plain(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 10
    write_idx(tmp_path / "MNIST/raw", "t10k", images, labels, gz=gz)
    data = load_split("mnist", "test", tmp_path)
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.tolist() == labels.tolist()


def test_fashion_mnist_reads_its_own_folder_and_names(tiny_data_root):
    data = load_split("fashion_mnist", "train", tiny_data_root)
    assert data.class_names[0] == "T-shirt/top"
    assert not torch.equal(data.images, load_split("mnist", "train", tiny_data_root).images)


def test_cifar10_binary_records_are_label_then_rgb_planes_row_major(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    record = np.zeros(3073, np.uint8)
    record[0] = 3  # cat
    record[1 + 0 * 1024 + 0 * 32 + 31] = 255  # red, row 0, column 31
    record[1 + 2 * 1024 + 31 * 32 + 0] = 77  # blue, row 31, column 0
    (folder / "test_batch.bin").write_bytes(record.tobytes())
    data = load_split("cifar10", "test", tmp_path)
    assert data.labels.tolist() == [3]
    assert data.images[0, 0, 0, 31] == 255 and data.images[0, 2, 31, 0] == 77
    assert int(data.images.sum()) == 255 + 77
    assert data.class_names == DATASETS["cifar10"].class_names


def test_cifar10_train_joins_the_five_batches_and_reads_batches_meta(tmp_path):
    names = tuple(f"c{i}" for i in range(10))
    images = np.zeros((12, 3, 32, 32), np.uint8)
    images[:, 0, 0, 0] = np.arange(12)
    write_cifar10_bin(tmp_path / "cifar-10-batches-bin", images, np.arange(12) % 10, "train", names)
    data = load_split("cifar10", "train", tmp_path)
    assert data.images[:, 0, 0, 0].tolist() == list(range(12))  # file order kept
    assert data.class_names == names


# --- missing and malformed data -------------------------------------------------------------------


def test_missing_files_name_the_dataset_folder_and_files(tmp_path):
    with pytest.raises(MissingDataError) as caught:
        load_split("mnist", "train", tmp_path)
    error = caught.value
    assert error.dataset == "mnist"
    assert error.folder == tmp_path.resolve() / "MNIST/raw"
    assert error.expected_files == ["train-images-idx3-ubyte[.gz]", "train-labels-idx1-ubyte[.gz]"]
    message = str(error)
    assert "'mnist'" in message and str(tmp_path.resolve() / "MNIST/raw") in message
    assert "train-images-idx3-ubyte" in message and "download" in message


def test_one_missing_file_is_reported_alone(tiny_data_root, tmp_path):
    make_tiny_data_root(tmp_path, n_train=10, n_test=10)
    (tmp_path / "cifar-10-batches-bin/data_batch_4.bin").unlink()
    with pytest.raises(MissingDataError) as caught:
        load_split("cifar10", "train", tmp_path)
    assert caught.value.expected_files == ["data_batch_4.bin"]


def test_failed_download_is_a_missing_data_error_with_the_reason(tmp_path, monkeypatch):
    def offline(root, split):
        raise OSError("network is unreachable")

    fmt = datasets._FORMATS["stl10"]
    monkeypatch.setitem(datasets._FORMATS, "stl10", replace(fmt, download=offline))
    with pytest.raises(MissingDataError, match="download failed: network is unreachable"):
        load_split("stl10", "train", tmp_path, download=True)


def test_download_runs_only_when_files_are_missing_then_loads(tmp_path, monkeypatch):
    calls = []

    def fake_download(root, split):
        calls.append((root, split))
        write_idx(root / "MNIST/raw", "t10k", np.zeros((10, 28, 28)), np.arange(10), gz=False)

    fmt = datasets._FORMATS["mnist"]
    monkeypatch.setitem(datasets._FORMATS, "mnist", replace(fmt, download=fake_download))
    assert len(load_split("mnist", "test", tmp_path, download=True).labels) == 10
    clear_memory_cache()
    load_split("mnist", "test", tmp_path, download=True)
    assert calls == [(tmp_path.resolve(), "test")]


def test_cifar10_download_fetches_the_official_binary_archive_md5_checked(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    seen = {}

    def fake(url, download_root, md5=None, **kwargs):
        seen.update(url=url, root=download_root, md5=md5)
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake)
    with pytest.raises(MissingDataError, match="download failed"):
        load_split("cifar10", "test", tmp_path, download=True)
    assert seen == {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "root": str(tmp_path.resolve()),
        "md5": "c32a1d4ab5d03f1284b67883e8d87530",
    }


@pytest.mark.parametrize(
    ("name", "cls", "expected_kwargs"),
    [
        ("mnist", "MNIST", {"train": False, "download": True}),
        ("fashion_mnist", "FashionMNIST", {"train": False, "download": True}),
        ("stl10", "STL10", {"split": "test", "download": True}),
    ],
)
def test_downloads_go_through_torchvision_which_checks_md5(tmp_path, monkeypatch, name, cls, expected_kwargs):
    import torchvision.datasets as tv_datasets

    seen = []

    class Fake:
        def __init__(self, root, **kwargs):
            seen.append((root, kwargs))
            raise RuntimeError("Error downloading: no route to host")

    monkeypatch.setattr(tv_datasets, cls, Fake)
    with pytest.raises(MissingDataError, match="download failed: Error downloading"):
        load_split(name, "test", tmp_path, download=True)
    assert seen == [(tmp_path.resolve(), expected_kwargs)]


def _write_mnist_test(root: Path, images: bytes, labels: bytes) -> Path:
    folder = root / "MNIST/raw"
    folder.mkdir(parents=True)
    (folder / "t10k-images-idx3-ubyte").write_bytes(images)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(labels)
    return folder


GOOD_IMAGES = idx_bytes(np.zeros((4, 28, 28)))
GOOD_LABELS = idx_bytes(np.arange(4))


@pytest.mark.parametrize(
    ("images", "labels", "bad_file", "expected"),
    [
        (b"\x00\x00\x08\x01" + GOOD_IMAGES[4:], GOOD_LABELS, "images", "magic 2051"),
        (GOOD_IMAGES[:-5], GOOD_LABELS, "images", "file holds"),
        (GOOD_IMAGES + b"\x00", GOOD_LABELS, "images", "file holds"),
        (idx_bytes(np.zeros((4, 32, 32))), GOOD_LABELS, "images", "expected (28, 28)"),
        (GOOD_IMAGES, idx_bytes(np.arange(3)), "labels", "3 labels for 4 images"),
        (GOOD_IMAGES, idx_bytes(np.array([0, 1, 2, 10])), "labels", "labels must be 0..9"),
        (b"", GOOD_LABELS, "images", "starts with nothing"),
    ],
    ids=["magic", "truncated", "trailing-bytes", "item-shape", "count", "label-range", "empty"],
)
def test_malformed_idx_names_the_file_and_what_was_expected(tmp_path, images, labels, bad_file, expected):
    folder = _write_mnist_test(tmp_path, images, labels)
    with pytest.raises(DataFormatError, match=re.escape(expected)) as caught:
        load_split("mnist", "test", tmp_path)
    assert str(folder / f"t10k-{bad_file}-idx") in str(caught.value)


def test_corrupt_gzip_is_a_format_error(tmp_path):
    folder = tmp_path / "MNIST/raw"
    folder.mkdir(parents=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(GOOD_IMAGES)[:-12])
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(GOOD_LABELS))
    with pytest.raises(DataFormatError, match="t10k-images-idx3-ubyte.gz: not a readable gzip"):
        load_split("mnist", "test", tmp_path)


def test_malformed_stl10_and_cifar10_files_are_format_errors(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "test_X.bin").write_bytes(bytes(3 * 96 * 96 + 1))
    (folder / "test_y.bin").write_bytes(bytes([1]))
    with pytest.raises(DataFormatError, match=r"test_X.bin: 27649 bytes .*3x96x96"):
        load_split("stl10", "test", tmp_path)
    (folder / "test_X.bin").write_bytes(bytes(3 * 96 * 96))
    (folder / "test_y.bin").write_bytes(bytes([0]))  # labels are 1..10 on disk
    with pytest.raises(DataFormatError, match="test_y.bin: labels must be 1..10"):
        load_split("stl10", "test", tmp_path)
    cifar = tmp_path / "cifar-10-batches-bin"
    cifar.mkdir()
    (cifar / "test_batch.bin").write_bytes(bytes(3072))
    with pytest.raises(DataFormatError, match="test_batch.bin: 3072 bytes .* 3073"):
        load_split("cifar10", "test", tmp_path)


def test_unknown_dataset_or_split_is_a_spec_error(tiny_data_root):
    with pytest.raises(SpecError, match="choose one of stl10, mnist"):
        load_split("imagenet", "train", tiny_data_root)
    with pytest.raises(SpecError, match="'train' or 'test'"):
        load_split("mnist", "unlabeled", tiny_data_root)


def test_loading_every_data_set_never_unpickles(tmp_path, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("a data file was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    make_tiny_data_root(tmp_path, n_train=10, n_test=10)
    for name in DATASETS:
        for split in ("train", "test"):
            assert len(load_split(name, split, tmp_path).labels) == 10
    clear_memory_cache()  # the second time through the cache files
    assert all(len(load_split(name, "test", tmp_path).labels) == 10 for name in DATASETS)


# --- caching --------------------------------------------------------------------------------------


def test_same_process_reuses_the_decoded_split(tiny_data_root):
    assert load_split("mnist", "train", tiny_data_root) is load_split("mnist", "train", tiny_data_root)


def test_a_fresh_process_loads_the_cache_file_instead_of_decoding(tmp_path, monkeypatch):
    make_tiny_data_root(tmp_path, n_train=20, n_test=10)
    first = load_split("stl10", "train", tmp_path)
    assert cache_path(tmp_path, "stl10", "train").is_file()
    clear_memory_cache()  # as a new process would start

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")

    fmt = datasets._FORMATS["stl10"]
    monkeypatch.setitem(datasets._FORMATS, "stl10", replace(fmt, read=no_decoding))
    second = load_split("stl10", "train", tmp_path)
    assert torch.equal(second.images, first.images) and torch.equal(second.labels, first.labels)
    assert second.class_names == first.class_names


def test_a_changed_source_file_invalidates_both_caches(tmp_path):
    make_tiny_data_root(tmp_path, n_train=20, n_test=10)
    before = load_split("mnist", "test", tmp_path)
    images = np.full((10, 28, 28), 7, np.uint8)
    write_idx(tmp_path / "MNIST/raw", "t10k", images, np.arange(10), gz=True)
    _bump_mtime(tmp_path / "MNIST/raw/t10k-images-idx3-ubyte.gz")  # same size, newer file
    after = load_split("mnist", "test", tmp_path)
    assert after is not before and int(after.images.max()) == 7
    clear_memory_cache()
    assert int(load_split("mnist", "test", tmp_path).images.max()) == 7


def test_cache_file_is_safetensors_with_the_source_key(tmp_path):
    from safetensors import safe_open

    make_tiny_data_root(tmp_path, n_train=10, n_test=10)
    load_split("cifar10", "test", tmp_path)
    with safe_open(str(cache_path(tmp_path, "cifar10", "test")), framework="pt") as f:
        assert set(f.keys()) == {"images", "labels"}
        assert "test_batch.bin" in f.metadata()["sources"]


def test_an_unreadable_cache_file_is_ignored_and_rewritten(tmp_path):
    make_tiny_data_root(tmp_path, n_train=10, n_test=10)
    cache = cache_path(tmp_path, "mnist", "test")
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not a safetensors file")
    assert len(load_split("mnist", "test", tmp_path).labels) == 10
    assert cache.stat().st_size > 100


# --- stratified subsets and validation splits -----------------------------------------------------

SKEWED = torch.tensor([0] * 600 + [1] * 300 + [2] * 90 + [3] * 10)


def test_stratified_subset_keeps_class_proportions_and_is_sorted():
    idx = stratified_subset(SKEWED, 100, seed=0)
    assert len(idx) == 100 and len(idx.unique()) == 100
    assert torch.equal(idx, idx.sort().values)
    assert torch.bincount(SKEWED[idx]).tolist() == [60, 30, 9, 1]


def test_stratified_subset_is_seeded():
    assert torch.equal(stratified_subset(SKEWED, 50, seed=3), stratified_subset(SKEWED, 50, seed=3))
    assert not torch.equal(stratified_subset(SKEWED, 50, 3), stratified_subset(SKEWED, 50, 4))


def test_stratified_subset_keeps_every_class_when_n_allows():
    idx = stratified_subset(SKEWED, 10, seed=0)
    assert len(idx) == 10 and set(SKEWED[idx].tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("n", [None, 1000, 5000])
def test_stratified_subset_of_none_or_at_least_all_is_everything(n):
    assert torch.equal(stratified_subset(SKEWED, n, seed=0), torch.arange(1000))


def test_train_val_split_is_disjoint_complete_and_stratified():
    train, val = train_val_split(SKEWED, 0.1, seed=0)
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    assert torch.bincount(SKEWED[val]).tolist() == [60, 30, 9, 1]
    assert torch.equal(val, val.sort().values) and torch.equal(train, train.sort().values)


def test_train_val_split_is_seeded():
    a, b = train_val_split(SKEWED, 0.2, seed=5), train_val_split(SKEWED, 0.2, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], train_val_split(SKEWED, 0.2, seed=6)[1])


def test_train_val_split_of_zero_keeps_everything_for_training():
    train, val = train_val_split(SKEWED, 0.0, seed=0)
    assert torch.equal(train, torch.arange(1000)) and len(val) == 0 and val.dtype == torch.int64


def test_train_val_split_leaves_every_class_a_training_sample():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    train, val = train_val_split(labels, 0.5, seed=0)
    assert set(labels[train].tolist()) == {0, 1, 2}
    assert len(val) == 3


# --- the real data in ../shared/data --------------------------------------------------------------


def test_real_mnist_has_the_official_counts_and_first_labels(real_mnist_root):
    train = load_split("mnist", "train", real_mnist_root)
    test = load_split("mnist", "test", real_mnist_root)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(train.labels).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949,
    ]  # fmt: skip
    assert abs(train.images.float().mean().item() / 255 - DATASETS["mnist"].mean[0]) < 1e-3


def test_real_stl10_subset_loads_balanced_with_official_names(real_stl10_root):
    train = load_split("stl10", "train", real_stl10_root)
    test = load_split("stl10", "test", real_stl10_root)
    assert train.images.shape == (1000, 3, 96, 96) and test.images.shape == (200, 3, 96, 96)
    assert torch.bincount(train.labels).tolist() == [100] * 10
    assert torch.bincount(test.labels).tolist() == [20] * 10
    assert train.class_names == DATASETS["stl10"].class_names


def test_real_stl10_rows_match_their_upright_pngs(real_stl10_root):
    from PIL import Image

    stl10 = SHARED_DATA / "stl10"
    with open(stl10 / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"][:3]
    train = load_split("stl10", "train", real_stl10_root)
    for r in rows:
        png = np.asarray(Image.open(stl10 / r["png"]).convert("RGB")).transpose(2, 0, 1)
        assert torch.equal(train.images[int(r["row"])], torch.from_numpy(png.copy()))
        assert int(train.labels[int(r["row"])]) == int(r["label_0to9"])
