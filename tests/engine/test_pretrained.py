"""ImageNet weights as a source: torchvision's file names, the checksum in the name, weights_only
loads, and the 1000-class network mapped into our blocks with a head for the target's classes."""

from __future__ import annotations

import hashlib
import pickle

import pytest
import torch
from torchvision import models as tvm

from engine import pretrained
from engine.checkpoint import load_checkpoint
from engine.errors import CheckpointError
from engine.pretrained import (
    IMAGENET_FILES,
    MissingWeightsError,
    build_imagenet_model,
    find_weights,
    list_weights,
    verify_weights_file,
)
from engine.run import run_job, validate_spec
from engine.spec import Architecture, FinetuneSpec
from tests.engine.training_helpers import DEVICE, SMALL
from tests.imagenet_weights import flip_one_byte, write_torchvision_weights

ARCH = Architecture.mobilenet_v3_small  # the smallest of the three: a 10 MB file


@pytest.fixture
def weights_file(tmp_path, monkeypatch):
    """mobilenet_v3_small's real keys in torchvision's format; the lookup table names this file."""
    path = write_torchvision_weights(tmp_path / "weights", ARCH.value)
    monkeypatch.setitem(IMAGENET_FILES, ARCH, path.name)
    return path


def test_the_file_names_are_torchvisions():
    urls = {
        Architecture.resnet18: tvm.ResNet18_Weights.IMAGENET1K_V1.url,
        Architecture.mobilenet_v3_small: tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url,
        Architecture.vgg11_bn: tvm.VGG11_BN_Weights.IMAGENET1K_V1.url,
    }
    assert IMAGENET_FILES == {arch: url.rsplit("/", 1)[-1] for arch, url in urls.items()}


def test_the_weights_load_into_our_blocks_with_a_head_for_the_target(weights_file):
    state = torch.load(weights_file, weights_only=True)

    model, source = build_imagenet_model(ARCH.value, 10, weights_file.parent)

    first_conv = model.blocks[0][0]
    assert torch.equal(first_conv.weight, state["features.0.0.weight"])
    assert first_conv.in_channels == 3  # grey images arrive as three equal channels
    last_block_bn = model.blocks[-1][-1][1]
    assert torch.equal(last_block_bn.running_mean, state["features.12.1.running_mean"])
    assert torch.equal(model.head[0].weight, state["classifier.0.weight"])  # the neck-side Linear kept
    assert model.head[-1].out_features == 10  # ImageNet's 1000-class layer replaced
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert source["file"] == weights_file.name and source["sha256"].startswith(weights_file.stem[-8:])


def test_a_changed_byte_fails_the_checksum_and_nothing_loads(weights_file):
    flip_one_byte(weights_file)

    with pytest.raises(CheckpointError, match="sha256 starts with .* but the file name says"):
        build_imagenet_model(ARCH.value, 10, weights_file.parent)


def test_a_missing_file_names_the_file_and_how_to_get_it(tmp_path):
    with pytest.raises(MissingWeightsError) as caught:
        find_weights("resnet18", tmp_path / "weights", download=False)

    message = str(caught.value)
    assert "resnet18-f37072fd.pth" in message and "weights/" in message
    assert "TRANSFERLAB_DOWNLOAD=true" in message and "https://download.pytorch.org/models/" in message


def test_another_architectures_keys_are_refused(tmp_path, monkeypatch):
    path = write_torchvision_weights(tmp_path / "weights", "resnet18")  # resnet keys, checksum right
    monkeypatch.setitem(IMAGENET_FILES, ARCH, path.name)

    with pytest.raises(CheckpointError, match="not mobilenet_v3_small's ImageNet state dict"):
        build_imagenet_model(ARCH.value, 10, path.parent)


class _RunsCode:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_a_file_that_is_not_plain_tensors_is_refused_without_running_it(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "weights"
    folder.mkdir()
    raw = pickle.dumps({"features.0.0.weight": _RunsCode()})
    path = folder / f"mobilenet_v3_small-{hashlib.sha256(raw).hexdigest()[:8]}.pth"
    path.write_bytes(raw)
    monkeypatch.setitem(IMAGENET_FILES, ARCH, path.name)

    with pytest.raises(CheckpointError, match="not a plain state dict"):
        build_imagenet_model(ARCH.value, 10, folder)
    assert "unpickled!" not in capsys.readouterr().out


def test_the_list_says_which_files_are_present_and_their_size(weights_file):
    rows = {row.architecture: row for row in list_weights(weights_file.parent)}

    assert set(rows) == {"resnet18", "mobilenet_v3_small", "vgg11_bn"}
    assert (
        rows["mobilenet_v3_small"].present
        and rows["mobilenet_v3_small"].size_bytes == weights_file.stat().st_size
    )
    assert not rows["resnet18"].present and rows["resnet18"].size_bytes is None


def test_verify_returns_the_full_sha256(weights_file):
    assert verify_weights_file(weights_file).startswith(weights_file.stem.rsplit("-", 1)[1])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"source_weights": "imagenet"}, "model"),  # which architecture's weights?
        ({"source_weights": "imagenet", "model": "simple_cnn"}, "model"),  # torchvision has none
        ({"model": "resnet18"}, "model"),  # a source keeps its own architecture
    ],
)
def test_source_weights_and_model_go_together(fields, field):
    spec = FinetuneSpec(dataset="mnist", **fields)

    with pytest.raises(Exception) as caught:
        validate_spec(spec, fields.get("model", "resnet18"))
    assert getattr(caught.value, "field", None) == field


def test_a_finetune_starts_from_the_imagenet_weights(tiny_data_root, tmp_path, weights_file):
    root = tmp_path / "root"  # the tiny data sets, and a weights/ folder beside them
    root.mkdir()
    for entry in tiny_data_root.iterdir():
        (root / entry.name).symlink_to(entry)
    (root / "weights").symlink_to(weights_file.parent)
    spec = FinetuneSpec(
        dataset="mnist",
        source_weights="imagenet",
        model=ARCH,
        strategy="linear",
        hyperparameters={"epochs": 1, "batch_size": 32},
        data=SMALL,
    )

    result = run_job(
        spec, data_root=root, workdir=tmp_path / "w", checkpoint_dir=tmp_path / "c", device=DEVICE
    )

    meta = result.checkpoint.meta
    assert meta["architecture"] == ARCH.value and meta["source_weights"] == "imagenet"
    assert meta["source_sha256"] == pretrained.sha256_of(weights_file)
    assert len(result.evaluation.per_class) == 10
    state, _ = load_checkpoint(result.checkpoint.directory)
    original = torch.load(weights_file, weights_only=True)
    # linear: the extractor stayed frozen, so it still holds ImageNet's weights exactly
    assert torch.equal(state["blocks.0.0.weight"], original["features.0.0.weight"])
