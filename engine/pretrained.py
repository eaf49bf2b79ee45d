"""torchvision's ImageNet weights as a fine-tune source, read from <data_root>/weights/ and checked.

    path = find_weights("resnet18", data_root / "weights", download=False)   # resnet18-f37072fd.pth
    model, source = build_imagenet_model("resnet18", num_classes=10, weights_dir=data_root / "weights")

Each file keeps torchvision's own name, whose part after the last '-' is the start of the file's
sha256 (torch.hub's convention); a file whose hash does not start with it is refused, never loaded.
The files are pickles of plain tensors: they are read with torch.load(weights_only=True), which
builds tensors and nothing else. The model is built as torchvision's 3-channel, 1000-class network,
the state dict loaded strictly (every key and shape must match), then split into our blocks and the
head's last Linear replaced for the target's classes. Grey images (MNIST) reach every model as three
equal channels (engine.preprocess), so the first convolution needs no change.

This module imports torch only inside its functions: the API lists and checks the files without it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import CheckpointError
from engine.spec import Architecture

if TYPE_CHECKING:
    from engine.models import TransferNet

IMAGENET = "imagenet"
WEIGHTS_FOLDER = "weights"  # under the data root
DOWNLOAD_BASE_URL = "https://download.pytorch.org/models/"

# torchvision.models.<Arch>_Weights.IMAGENET1K_V1.url's basename (torchvision 0.29; a test compares).
IMAGENET_FILES: dict[Architecture, str] = {
    Architecture.resnet18: "resnet18-f37072fd.pth",
    Architecture.mobilenet_v3_small: "mobilenet_v3_small-047dcff4.pth",
    Architecture.vgg11_bn: "vgg11_bn-6002323d.pth",
}
# What each file takes on disk (from the torchvision docs' file sizes), for GET /weights and errors.
IMAGENET_APPROX_MB = {
    Architecture.resnet18: 45,
    Architecture.mobilenet_v3_small: 10,
    Architecture.vgg11_bn: 507,
}


class MissingWeightsError(CheckpointError):
    """The architecture's ImageNet weight file is not in the weights folder, and downloads are off."""

    def __init__(self, architecture: str, file_name: str):
        self.architecture = architecture
        self.file_name = file_name
        super().__init__(how_to_get(architecture, file_name))


def how_to_get(architecture: str, file_name: str) -> str:
    """The message for a missing weight file: which file, where, and the two ways to get it."""
    return (
        f"{architecture}'s ImageNet weights are missing: expected the file {file_name} in the data "
        f"root's {WEIGHTS_FOLDER}/ folder. Download {DOWNLOAD_BASE_URL}{file_name} into it, or set "
        "TRANSFERLAB_DOWNLOAD=true to let the worker fetch it"
    )


def weights_file_name(architecture: str) -> str:
    """torchvision's file name of the architecture's ImageNet weights; SpecError-like CheckpointError
    for an architecture torchvision has none for (simple_cnn, pixel_linear)."""
    try:
        return IMAGENET_FILES[Architecture(architecture)]
    except (KeyError, ValueError):
        allowed = ", ".join(a.value for a in IMAGENET_FILES)
        raise CheckpointError(
            f"{architecture} has no ImageNet weights; source_weights 'imagenet' needs one of: {allowed}"
        ) from None


def hash_prefix(file_name: str) -> str:
    """The sha256 prefix a torchvision file name carries: 'resnet18-f37072fd.pth' -> 'f37072fd'."""
    stem = file_name.split(".", 1)[0]
    prefix = stem.rsplit("-", 1)[-1]
    if "-" not in stem or not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise CheckpointError(f"{file_name} does not end in '-<sha256 prefix>' as torchvision's files do")
    return prefix


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights_file(path: Path) -> str:
    """The file's sha256, after checking it starts with the prefix in its name; CheckpointError if not."""
    expected = hash_prefix(path.name)
    actual = sha256_of(path)
    if not actual.startswith(expected):
        raise CheckpointError(
            f"{path.name}: its sha256 starts with {actual[: len(expected)]}, but the file name says "
            f"{expected}; the file was changed or corrupted and will not be loaded. Download it again"
        )
    return actual


@dataclass(frozen=True)
class WeightsFile:
    """One architecture's ImageNet weight file, as GET /weights lists it."""

    architecture: str
    file_name: str
    present: bool
    size_bytes: int | None
    url: str


def list_weights(weights_dir: Path) -> list[WeightsFile]:
    """Every architecture with ImageNet weights: its file name, whether it is there, and its size."""
    rows = []
    for arch, name in IMAGENET_FILES.items():
        path = Path(weights_dir) / name
        present = path.is_file()
        rows.append(
            WeightsFile(
                arch.value, name, present, path.stat().st_size if present else None, DOWNLOAD_BASE_URL + name
            )
        )
    return rows


def find_weights(architecture: str, weights_dir: Path, download: bool = False) -> Path:
    """The architecture's weight file in weights_dir, fetched first when absent and download is True."""
    name = weights_file_name(architecture)
    path = Path(weights_dir) / name
    if path.is_file():
        return path
    if not download:
        raise MissingWeightsError(architecture, name)
    from torch.hub import download_url_to_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # torch.hub checks the prefix while it writes, to a temporary file it renames only when complete.
    download_url_to_file(DOWNLOAD_BASE_URL + name, str(path), hash_prefix=hash_prefix(name), progress=False)
    return path


def read_state_dict(path: Path) -> dict[str, Any]:
    """The file's tensors: a .safetensors file, or a torch file with weights_only=True (no code runs)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise CheckpointError(f"{path.name} is not a plain state dict of tensors: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path.name} holds a {type(state).__name__}, not a state dict")
    return state


def build_imagenet_model(
    architecture: str, num_classes: int, weights_dir: Path, download: bool = False
) -> tuple[TransferNet, dict[str, Any]]:
    """The architecture with its ImageNet weights and a fresh head of num_classes outputs, and a
    description of the source (what a checkpoint's meta records as where it came from)."""
    from engine.models import build_imagenet_backbone, replace_classifier

    path = find_weights(architecture, weights_dir, download)
    sha = verify_weights_file(path)
    model = build_imagenet_backbone(architecture, read_state_dict(path), path.name)
    replace_classifier(model, num_classes)
    return model, {"source_weights": IMAGENET, "file": path.name, "sha256": sha}
