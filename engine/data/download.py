"""Downloads, behind load_split's `download` flag: torchvision fetches and md5-checks each archive.

torchvision is imported inside each function: it takes about 1 s, and most processes never download.
"""

from __future__ import annotations

from pathlib import Path

from engine.data.readers import SplitName

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"


def download_stl10(root: Path, split: SplitName) -> None:
    """The whole 2.5 GB archive (every split), md5-checked, unpacked to <root>/stl10_binary."""
    from torchvision.datasets import STL10

    STL10(root, split=split, download=True)


def download_mnist(root: Path, split: SplitName) -> None:
    """The split's official .gz files, md5-checked, to <root>/MNIST/raw (unpacked beside them)."""
    # Decision: files already present are never md5-checked: ../shared/data/mnist wraps byte-identical
    # IDX files in other gzip headers (timestamps), so its .gz md5s differ from torchvision's list,
    # and a correct copy must still load. Instead the IDX reader checks magic, dims, sizes and labels.
    from torchvision.datasets import MNIST

    MNIST(root, train=split == "train", download=True)


def download_fashion_mnist(root: Path, split: SplitName) -> None:
    """As MNIST, to <root>/FashionMNIST/raw."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(root, train=split == "train", download=True)


def download_cifar10(root: Path, split: SplitName) -> None:
    """The binary version's archive (both splits), md5-checked, unpacked to <root>/cifar-10-batches-bin."""
    # torchvision's CIFAR10 class fetches the python version, a pickle; we fetch the binary one.
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(CIFAR10_URL, str(root), md5=CIFAR10_MD5)
