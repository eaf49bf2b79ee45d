"""Folder data sets: torchvision's ImageFolder layout read into the uint8 cache, their errors, and
training on them as a pre-train source and a fine-tune target."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.folders import NAME_PATTERN, FolderLayoutError, FolderLimits
from engine.datasets import (
    cache_path,
    check_available,
    clear_memory_cache,
    dataset_info,
    dataset_names,
    describe_dataset,
    load_split,
)
from engine.errors import DataFormatError, SpecError
from engine.run import run_job
from engine.spec import DATASET_NAME_PATTERN, FinetuneSpec, PretrainSpec
from tests.engine.training_helpers import DEVICE
from tests.formats import FOLDER_KINDS, write_image_folder

CLASSES = ("cat", "dog", "owl")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    clear_memory_cache()
    write_image_folder(tmp_path / "folders" / "pets", CLASSES)
    yield tmp_path
    clear_memory_cache()


def test_the_folder_name_rule_is_the_specs():
    assert NAME_PATTERN == DATASET_NAME_PATTERN


def test_classes_are_the_sorted_sub_folders_and_labels_follow_them(tmp_path):
    write_image_folder(tmp_path / "folders" / "zoo", ("zebra", "ant", "mole"))
    split = load_split("zoo", "train", tmp_path)
    assert split.class_names == ("ant", "mole", "zebra")
    assert split.labels.bincount().tolist() == [12, 12, 12]


def test_mixed_modes_and_sizes_decode_to_one_rgb_size_at_the_median_side(root):
    split = load_split("pets", "train", root)
    # Shorter sides cycle 24, 20, 20, 40: the median is 22; RGB, RGBA and P make the set colour.
    assert split.images.shape == (36, 3, 22, 22)
    assert split.images.dtype.is_floating_point is False
    assert describe_dataset("pets", root).native_size == 22


def test_a_set_of_grey_images_is_stored_with_one_channel(tmp_path):
    write_image_folder(tmp_path / "folders" / "grey", CLASSES, kinds=(("L", "PNG"), ("L", "JPEG")))
    assert load_split("grey", "test", tmp_path).images.shape[1] == 1
    assert dataset_info("grey", tmp_path).channels == 1


def test_the_stored_side_is_capped_by_the_limit_and_can_be_declared(root):
    assert load_split("pets", "train", root, limits=FolderLimits(max_image_side=16)).images.shape[-1] == 16
    clear_memory_cache()
    (root / "folders/pets/transferlab.json").write_text(json.dumps({"image_size": 12}))
    assert load_split("pets", "train", root).images.shape[-1] == 12


def test_a_decoded_split_is_cached_and_rebuilt_when_the_folder_changes(root):
    load_split("pets", "train", root)
    assert cache_path(root, "pets", "train").is_file()
    clear_memory_cache()
    Image.new("RGB", (30, 30)).save(root / "folders/pets/train/cat/new.png")
    assert len(load_split("pets", "train", root).labels) == 37


def test_the_info_carries_the_folders_classes_and_its_train_statistics(root):
    info = dataset_info("pets", root)
    assert info.class_names == CLASSES and info.kind == "folder"
    images = load_split("pets", "train", root).images.double() / 255
    assert info.mean == pytest.approx(tuple(images.mean(dim=(0, 2, 3)).tolist()), abs=1e-3)


def test_folder_sets_are_listed_after_the_builtins(root):
    os.makedirs(root / "folders" / "mnist")  # a built-in's name is not a folder data set
    assert dataset_names(root) == ["stl10", "mnist", "fashion_mnist", "cifar10", "pets"]


def _problem(root: Path, limits: FolderLimits | None = None) -> str:
    with pytest.raises((FolderLayoutError, DataFormatError)) as caught:
        check_available("pets", root, download=False, limits=limits)
    message = str(caught.value)
    assert str(root) not in message  # no server path
    return message


def test_a_missing_split_is_named(root):
    shutil.rmtree(root / "folders/pets/test")
    assert "the 'test' split is missing" in _problem(root)


def test_an_empty_class_is_named_with_its_split(root):
    for f in (root / "folders/pets/test/owl").iterdir():
        f.unlink()
    assert re.search(r"folders/pets/test: class folder\(s\) owl hold no PNG or JPEG", _problem(root))


def test_train_and_test_must_have_the_same_classes(root):
    (root / "folders/pets/test/owl").rename(root / "folders/pets/test/bat")
    assert "test lacks ['owl'], has extra ['bat']" in _problem(root)


def test_too_many_images_too_many_bytes_and_too_many_pixels_are_refused(root):
    assert "54 images is over the limit of 50" in _problem(root, FolderLimits(max_images=50))
    assert "TRANSFERLAB_FOLDER_MAX_TOTAL_BYTES" in _problem(root, FolderLimits(max_total_bytes=1024))
    assert "40x40 is over the limit of 1000 pixels" in _problem(root, FolderLimits(max_image_pixels=1000))


def test_a_file_that_is_no_image_is_named_relative_to_the_data_root(root):
    (root / "folders/pets/train/dog/notes.png").write_text("not an image")
    assert "folders/pets/train/dog/notes.png: not a readable PNG or JPEG" in _problem(root)


def test_a_truncated_image_fails_the_decode_naming_the_file(root):
    path = root / "folders/pets/train/cat/0.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still reads; the pixels do not
    check_available("pets", root, download=False)
    with pytest.raises(DataFormatError, match=r"^folders/pets/train/cat/0.png: cannot decode") as caught:
        load_split("pets", "train", root)
    assert str(root) not in str(caught.value)


def test_an_unknown_name_is_a_spec_error_naming_the_choices(root):
    with pytest.raises(SpecError, match="choose one of stl10, mnist, fashion_mnist, cifar10, or a folder"):
        check_available("birds", root, download=False)


def _run(spec, root: Path, tmp: Path, name: str, source=None):
    extra = {} if source is None else {
        "source_checkpoint": source.checkpoint.directory, "source_sha256": source.checkpoint.sha256,
    }  # fmt: skip
    return run_job(
        spec,
        data_root=root,
        workdir=tmp / name / "w",
        checkpoint_dir=tmp / name / "c",
        device=DEVICE,
        **extra,
    )


def test_a_folder_set_is_a_pretrain_source_and_a_finetune_target(root, tiny_data_root, tmp_path):
    hp = {"epochs": 1, "batch_size": 8}
    data = {"image_size": 16, "val_fraction": 0.2}
    source = _run(
        PretrainSpec(dataset="pets", model="simple_cnn", hyperparameters=hp, data=data), root, tmp_path, "p"
    )
    assert source.checkpoint.meta["class_names"] == list(CLASSES)
    assert source.checkpoint.meta["input"]["channels"] == 3
    # Fine-tuned onto MNIST from the folder set, and onto the folder set from it.
    mnist = _run(
        FinetuneSpec(dataset="mnist", hyperparameters=hp, data=data), tiny_data_root, tmp_path, "m", source
    )
    assert [c.label for c in mnist.evaluation.per_class] == [str(d) for d in range(10)]
    for strategy in ("linear", "partial", "full", "lp_ft"):
        spec = FinetuneSpec(dataset="pets", strategy=strategy, hyperparameters={**hp, "epochs": 2}, data=data)
        result = _run(spec, root, tmp_path, strategy, mnist)
        assert [c.label for c in result.evaluation.per_class] == list(CLASSES)
        assert sum(c.support for c in result.evaluation.per_class) == 18


def test_the_test_kinds_cover_every_mode():
    assert {mode for mode, _ in FOLDER_KINDS} == {"L", "RGB", "RGBA", "P"}
    assert np.unique([fmt for _, fmt in FOLDER_KINDS]).tolist() == ["JPEG", "PNG"]


def test_images_are_decoded_as_predict_decodes_an_upload(tmp_path):
    # Transparent pixels become black, as engine.predict.pil_to_uint8 composites them, whatever colour
    # they hide: what the model trains on is what /predict later shows it.
    write_image_folder(tmp_path / "folders" / "clear", CLASSES, n_train=2, n_test=1)
    hidden = Image.new("RGBA", (22, 22), (255, 255, 255, 0))
    hidden.save(tmp_path / "folders/clear/train/cat/0.png")
    split = load_split("clear", "train", tmp_path, limits=FolderLimits(max_image_side=22))
    assert int(split.images[0].max()) == 0
