"""ImageNet weight files in torchvision's format, written by tests: the architecture's real
1000-class state dict (randomly initialised, seeded), saved with torch.save, named
"<arch>-<first 8 hex digits of its own sha256>.pth" as torchvision names its files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torchvision import models as tvm

CONSTRUCTORS = {
    "resnet18": tvm.resnet18,
    "mobilenet_v3_small": tvm.mobilenet_v3_small,
    "vgg11_bn": tvm.vgg11_bn,
}


def write_torchvision_weights(folder: Path, architecture: str = "mobilenet_v3_small", seed: int = 0) -> Path:
    """The weight file, in folder, under a name that carries its real sha256 prefix."""
    torch.manual_seed(seed)
    state = CONSTRUCTORS[architecture](num_classes=1000).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{architecture}.pth.partial"
    torch.save(state, tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    path = folder / f"{architecture}-{prefix}.pth"
    tmp.rename(path)
    return path


def flip_one_byte(path: Path) -> None:
    """Change one byte in the middle of the file (inside a tensor's data)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
