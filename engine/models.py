"""Architectures as (ordered feature blocks, parameter-free neck, fully connected head).

Strategies name blocks by position: `frozen_blocks=2` on resnet18 freezes the stem and layer1. This is
the one place that knows each architecture's blocks.

    model = build_model("resnet18", num_classes=10)
    model.blocks[0]   # stem: conv1, bn1, relu, maxpool
    model.head        # the fully connected layers; replace_classifier() swaps its last Linear
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from engine.errors import CheckpointError, SpecError
from engine.spec import Architecture


class TransferNet(nn.Module):
    """blocks -> neck (pooling, flatten; no parameters) -> head (Linear layers)."""

    def __init__(self, architecture: str, blocks: Sequence[nn.Module], neck: nn.Module, head: nn.Sequential):
        super().__init__()
        self.architecture = architecture
        self.blocks = nn.ModuleList(blocks)
        self.neck = neck
        self.head = head

    def extract(self, x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Run blocks[start:end]; with end=None also the neck, giving the head's input."""
        for block in self.blocks[start:end]:
            x = block(x)
        return self.neck(x) if end is None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.extract(x))


def _simple_cnn(num_classes: int) -> TransferNet:
    # Four conv stages (32-64-128-256 channels), each halving the resolution: ~0.4M parameters, about
    # 1.5k images/s training at 32x32 on 2 CPU cores. The seed's "custom CNN trained from scratch".
    def stage(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    blocks = [stage(3, 32), stage(32, 64), stage(64, 128), stage(128, 256)]
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Sequential(nn.Linear(256, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes))
    return TransferNet(Architecture.simple_cnn, blocks, neck, head)


PIXEL_GRID = 32  # pixel_linear reads at most 32x32 pixels a channel: 3,072 inputs


def _pixel_linear(num_classes: int) -> TransferNet:
    # No blocks: the neck hands the pixels to one Linear layer. Average-pooling to a fixed grid keeps
    # the layer's size independent of the input side; at 32 px and below it only repeats pixels (a
    # linear map of the same information), above it averages neighbours (MNIST's 28 px digits lose
    # nothing a linear model could use). Grey images arrive as three equal channels, like everywhere.
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(PIXEL_GRID), nn.Flatten())
    head = nn.Sequential(nn.Linear(3 * PIXEL_GRID * PIXEL_GRID, num_classes))
    return TransferNet(Architecture.pixel_linear, [], neck, head)


def _resnet18(net: tvm.ResNet) -> TransferNet:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    blocks = [stem, net.layer1, net.layer2, net.layer3, net.layer4]
    neck = nn.Sequential(net.avgpool, nn.Flatten())
    return TransferNet(Architecture.resnet18, blocks, neck, nn.Sequential(net.fc))


def _mobilenet_v3_small(net: tvm.MobileNetV3) -> TransferNet:
    f = net.features
    # Grouped by output resolution (strides 2 at features 0, 1, 2, 4, 9): stem + four stages like resnet.
    blocks = [
        f[0],
        f[1],
        nn.Sequential(f[2], f[3]),
        nn.Sequential(*f[4:9]),
        nn.Sequential(*f[9:13]),
    ]
    neck = nn.Sequential(net.avgpool, nn.Flatten())
    return TransferNet(Architecture.mobilenet_v3_small, blocks, neck, net.classifier)


def _vgg11_bn(net: tvm.VGG) -> TransferNet:
    # Split after each max-pool: five blocks (64, 128, 256, 512, 512 channels).
    pools = [i for i, m in enumerate(net.features) if isinstance(m, nn.MaxPool2d)]
    starts = [0] + [p + 1 for p in pools[:-1]]
    blocks = [nn.Sequential(*net.features[s : p + 1]) for s, p in zip(starts, pools, strict=True)]
    # torchvision's 7x7 adaptive pool keeps ImageNet weight files loadable; the head has 25088 inputs.
    neck = nn.Sequential(net.avgpool, nn.Flatten())
    return TransferNet(Architecture.vgg11_bn, blocks, neck, net.classifier)


_TORCHVISION = {
    Architecture.resnet18: (tvm.resnet18, _resnet18),
    Architecture.mobilenet_v3_small: (tvm.mobilenet_v3_small, _mobilenet_v3_small),
    Architecture.vgg11_bn: (tvm.vgg11_bn, _vgg11_bn),
}

# Block counts without building a model (the API validates frozen_blocks with these).
BLOCK_COUNTS = {
    Architecture.simple_cnn: 4,
    Architecture.resnet18: 5,
    Architecture.mobilenet_v3_small: 5,
    Architecture.vgg11_bn: 5,
    Architecture.pixel_linear: 0,
}


# What the report and plots call each block, in order (len == BLOCK_COUNTS).
BLOCK_NAMES = {
    Architecture.simple_cnn: ("stage1", "stage2", "stage3", "stage4"),
    Architecture.resnet18: ("stem", "layer1", "layer2", "layer3", "layer4"),
    Architecture.mobilenet_v3_small: ("stem", "stage1", "stage2", "stage3", "stage4"),
    Architecture.vgg11_bn: ("block1", "block2", "block3", "block4", "block5"),
    Architecture.pixel_linear: (),
}

# A layer probe average-pools its block's output to a square grid with at most this many features
# (channels x grid x grid): resnet18's stem at 96 px (64 x 24 x 24 = 36,864 values) becomes 64 x 8 x 8.
# 4,096 fp32 features are 16 KB an image, 0.98 GB cached for MNIST's 60,000.
PROBE_MAX_FEATURES = 4096


# The smallest input side each trains at (measured: a forward and backward pass at batch 2): vgg11_bn's
# five 2x2 max-pools need 32 px, the others reach 1x1 features at 16 px (the spec's own minimum).
MIN_IMAGE_SIZES = {
    Architecture.simple_cnn: 16,
    Architecture.resnet18: 16,
    Architecture.mobilenet_v3_small: 16,
    Architecture.vgg11_bn: 32,
    Architecture.pixel_linear: 16,
}


def check_image_size(architecture: str, image_size: int) -> None:
    smallest = MIN_IMAGE_SIZES[Architecture(architecture)]
    if image_size < smallest:
        raise SpecError(
            "data.image_size", f"{architecture} needs an input of at least {smallest} px; got {image_size}"
        )


def block_count(architecture: str) -> int:
    try:
        return BLOCK_COUNTS[Architecture(architecture)]
    except ValueError:
        allowed = ", ".join(a.value for a in Architecture)
        raise SpecError("model", f"unknown architecture {architecture!r}; allowed: {allowed}") from None


def block_names(architecture: str) -> tuple[str, ...]:
    """The architecture's blocks as people name them, in order."""
    block_count(architecture)
    return BLOCK_NAMES[Architecture(architecture)]


def probe_grid(channels: int, side: int, max_features: int = PROBE_MAX_FEATURES) -> int:
    """The pooled grid side of a layer probe: the largest square with channels x grid^2 within
    max_features, never finer than the feature map itself (pooling up would only repeat values), and at
    least 1x1 (a block with more channels than max_features keeps one value a channel)."""
    fits = math.isqrt(max(max_features // channels, 1))
    return max(1, min(side, fits))


@torch.no_grad()
def probe_model(model: TransferNet, block: int, image_size: int, num_classes: int) -> TransferNet:
    """A layer probe on `model`: its blocks up to `block` (0-based), then an adaptive average pool
    (probe_grid) and one Linear layer. Shares the blocks' weights with `model`."""
    if not 0 <= block < len(model.blocks):
        raise SpecError(
            "probe_block",
            f"{block} is out of range for {model.architecture}, which has {len(model.blocks)} blocks; "
            f"allowed 0..{len(model.blocks) - 1}",
        )
    blocks = list(model.blocks[: block + 1])
    was_training = model.training
    model.eval()  # a shape probe: BatchNorm must not count this zero image in its running statistics
    shape = nn.Sequential(*blocks)(torch.zeros(1, 3, image_size, image_size)).shape
    model.train(was_training)
    channels, side = shape[1], min(shape[2], shape[3])
    grid = probe_grid(channels, side)
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(grid), nn.Flatten())
    head = nn.Sequential(nn.Linear(channels * grid * grid, num_classes))
    return TransferNet(model.architecture, blocks, neck, head)


def build_model(architecture: str, num_classes: int, init_weights: Path | None = None) -> TransferNet:
    """A randomly initialised model, or one initialised from a local torchvision state-dict file.

    init_weights: a `.safetensors` file, or a `.pth`/`.pt` loaded with weights_only=True (no code runs).
    Its classifier may have another class count (ImageNet's 1000): that layer is then left random.
    """
    arch = Architecture(architecture)
    block_count(arch)
    if arch in (Architecture.simple_cnn, Architecture.pixel_linear):
        if init_weights is not None:
            raise SpecError(
                "init_weights", f"{arch.value} has no torchvision weight files; start from random"
            )
        return _simple_cnn(num_classes) if arch == Architecture.simple_cnn else _pixel_linear(num_classes)
    constructor, wrap = _TORCHVISION[arch]
    net = constructor(num_classes=num_classes)
    if init_weights is not None:
        _load_torchvision_weights(net, Path(init_weights))
    return wrap(net)


def _load_torchvision_weights(net: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"init_weights: no file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    own = net.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise CheckpointError(f"init_weights {path.name}: keys not in the architecture: {unknown[:5]}")
    # Drop tensors whose shape differs (the classifier of another class count) and keep them random.
    compatible = {k: v for k, v in state.items() if own[k].shape == v.shape}
    net.load_state_dict(compatible, strict=False)


IMAGENET_CLASSES = 1000


def build_imagenet_backbone(architecture: str, state: dict[str, torch.Tensor], name: str) -> TransferNet:
    """torchvision's 1000-class network with `state` loaded strictly (every key and shape), as our
    blocks and head; the caller replaces the head's last Linear for its own classes."""
    arch = Architecture(architecture)
    if arch not in _TORCHVISION:
        raise CheckpointError(f"{arch.value} has no ImageNet weights")
    constructor, wrap = _TORCHVISION[arch]
    net = constructor(num_classes=IMAGENET_CLASSES)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        # torch's message lists the missing and unexpected keys and the mismatched shapes.
        raise CheckpointError(f"{name} is not {arch.value}'s ImageNet state dict: {e}") from None
    return wrap(net)


def state_shapes(architecture: str, num_classes: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every state-dict key of the architecture with that class count, with its shape and dtype: what
    an imported checkpoint's tensors must be, exactly."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build_model(architecture, num_classes)
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def replace_classifier(model: TransferNet, num_classes: int) -> None:
    """Swap the head's last Linear for a fresh one with `num_classes` outputs (the target's classes)."""
    index, old = [(i, m) for i, m in enumerate(model.head) if isinstance(m, nn.Linear)][-1]
    model.head[index] = nn.Linear(old.in_features, num_classes).to(old.weight.device)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
