"""Every architecture exposes ordered blocks and a head, and runs forward and backward."""

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import CheckpointError, SpecError
from engine.models import (
    BLOCK_COUNTS,
    block_count,
    build_model,
    count_parameters,
    replace_classifier,
)
from engine.spec import Architecture


@pytest.mark.parametrize("architecture", list(Architecture))
def test_every_architecture_has_its_declared_blocks_and_trains_a_step(architecture):
    torch.manual_seed(0)
    model = build_model(architecture, num_classes=10)
    assert len(model.blocks) == BLOCK_COUNTS[architecture] == block_count(architecture)
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())


@pytest.mark.parametrize("architecture", list(Architecture))
def test_blocks_then_neck_then_head_is_the_whole_forward(architecture):
    torch.manual_seed(0)
    model = build_model(architecture, num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    staged = model.extract(x, 0, 2)
    staged = model.extract(staged, start=2)
    torch.testing.assert_close(model.head(staged), model(x))


def test_replace_classifier_keeps_earlier_head_layers():
    model = build_model("mobilenet_v3_small", num_classes=10)
    first = model.head[0].weight.clone()
    replace_classifier(model, 3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    torch.testing.assert_close(model.head[0].weight, first)


def test_unknown_architecture_names_the_allowed_ones():
    with pytest.raises(SpecError, match="resnet18"):
        block_count("alexnet")


def test_local_weight_file_initialises_a_torchvision_model(tmp_path):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = build_model("resnet18", num_classes=10, init_weights=path)
    torch.testing.assert_close(model.blocks[0][0].weight, reference.conv1.weight)
    assert model.head[0].out_features == 10  # the 1000-class classifier is left random


def test_local_weight_file_with_foreign_keys_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"not.a.key": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="not in the architecture"):
        build_model("resnet18", num_classes=10, init_weights=path)


def test_parameter_counts_follow_requires_grad():
    model = build_model("simple_cnn", num_classes=10)
    total = count_parameters(model)
    model.blocks.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model.head) < total
