"""Writers for tiny files in the real data set formats, and a data root of learnable images.

The writers follow the official format descriptions, written apart from engine's readers:
    STL-10   {split}_X.bin: 3x96x96 bytes an image, channel by channel, each column-major;
             {split}_y.bin: one byte a label, 1..10; class_names.txt: one name a line.
    IDX      4-byte magic (0, 0, 8, ndim), big-endian uint32 sizes, then the bytes (MNIST, Fashion).
    CIFAR-10 binary records: 1 label byte + 1024 R + 1024 G + 1024 B bytes (rows first);
             data_batch_1..5.bin, test_batch.bin, batches.meta.txt.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

STL10_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def write_stl10(
    folder: Path, images: np.ndarray, labels: np.ndarray, split: str, class_names=STL10_NAMES
) -> None:
    """images uint8 (N, 3, 96, 96), upright; labels 0..9 (written as 1..10)."""
    folder.mkdir(parents=True, exist_ok=True)
    column_major = np.asarray(images, dtype=np.uint8).transpose(0, 1, 3, 2)  # (N, C, x, y)
    (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(column_major).tobytes())
    (folder / f"{split}_y.bin").write_bytes((np.asarray(labels) + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("".join(f"{n}\n" for n in class_names))


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes((0, 0, 8, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """prefix "train" or "t10k"; images uint8 (N, 28, 28); labels 0..9."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(array)
        name = f"{prefix}-{kind}-ubyte"
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)


def write_cifar10_bin(
    folder: Path, images: np.ndarray, labels: np.ndarray, split: str, class_names=CIFAR10_NAMES
) -> None:
    """images uint8 (N, 3, 32, 32); labels 0..9. Train is spread over the five batch files."""
    folder.mkdir(parents=True, exist_ok=True)
    records = np.concatenate(
        [
            np.asarray(labels, dtype=np.uint8)[:, None],
            np.asarray(images, np.uint8).reshape(-1, 3072),
        ],
        axis=1,
    )
    if split == "train":
        for i, part in enumerate(np.array_split(records, 5), start=1):
            (folder / f"data_batch_{i}.bin").write_bytes(part.tobytes())
    else:
        (folder / "test_batch.bin").write_bytes(records.tobytes())
    # The official file ends with blank lines; the reader must skip them.
    (folder / "batches.meta.txt").write_text("".join(f"{n}\n" for n in class_names) + "\n\n")


def balanced_labels(n: int, rng: np.random.Generator, classes: int = 10) -> np.ndarray:
    return rng.permutation(np.arange(n) % classes).astype(np.int64)


def synthetic_images(labels: np.ndarray, channels: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Dark noise with a bright square whose position (and, in colour, hue) gives the class."""
    n = len(labels)
    images = rng.integers(0, 60, size=(n, channels, size, size), dtype=np.uint8)
    side = size // 4
    for i, c in enumerate(labels):  # test data only: a loop over a few hundred images is fine
        row, col = (c // 4) * side + side // 2, (c % 4) * side
        colour = [255] if channels == 1 else [255 * ((c + k) % 3 != 0) for k in range(3)]
        images[i, :, row : row + side, col : col + side] = np.array(colour, np.uint8)[:, None, None]
    return images


def make_tiny_data_root(root: Path, n_train: int = 100, n_test: int = 50, seed: int = 0) -> Path:
    """All four data sets under `root` in torchvision's layout, class-balanced. MNIST is
    written gzipped (as ../shared/data has it), Fashion-MNIST plain (as torchvision unpacks it)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        prefix = "train" if split == "train" else "t10k"
        y = balanced_labels(n, rng)
        write_stl10(root / "stl10_binary", synthetic_images(y, 3, 96, rng), y, split)
        y = balanced_labels(n, rng)
        write_idx(root / "MNIST/raw", prefix, synthetic_images(y, 1, 28, rng)[:, 0], y, gz=True)
        y = balanced_labels(n, rng)
        write_idx(root / "FashionMNIST/raw", prefix, synthetic_images(y, 1, 28, rng)[:, 0], y, gz=False)
        y = balanced_labels(n, rng)
        write_cifar10_bin(root / "cifar-10-batches-bin", synthetic_images(y, 3, 32, rng), y, split)
    return root


# Modes and formats a folder data set's images cycle through: grey, colour, colour with alpha, palette;
# JPEG cannot hold alpha or a palette, so those are PNGs.
FOLDER_KINDS = (("L", "PNG"), ("RGB", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("L", "JPEG"), ("RGB", "PNG"))
FOLDER_SIZES = ((24, 24), (32, 20), (20, 28), (40, 40))  # width, height


def folder_image(label: int, size: tuple[int, int], mode: str, rng: np.random.Generator):
    """A PIL image of dark noise with a bright square whose column gives the class (learnable)."""
    from PIL import Image

    width, height = size
    pixels = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    side = min(width, height) // 3
    left = (label % 3) * (width - side) // 2
    top = (height - side) // 2
    pixels[top : top + side, left : left + side] = 255
    image = Image.fromarray(pixels, "RGB")
    return image.convert(mode) if mode != "P" else image.quantize(16)


def write_image_folder(
    folder: Path,
    classes: tuple[str, ...] = ("cat", "dog", "owl"),
    n_train: int = 12,
    n_test: int = 6,
    seed: int = 0,
    kinds: tuple[tuple[str, str], ...] = FOLDER_KINDS,
) -> Path:
    """folder/{train,test}/<class>/<i>.png|jpg: n images a class and split, of mixed sizes, modes and
    formats (FOLDER_KINDS, FOLDER_SIZES)."""
    rng = np.random.default_rng(seed)
    k = 0
    for split, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(classes):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                mode, fmt = kinds[k % len(kinds)]
                size = FOLDER_SIZES[k % len(FOLDER_SIZES)]
                k += 1
                suffix = ".png" if fmt == "PNG" else ".jpg"
                folder_image(label, size, mode, rng).save(folder / split / name / f"{i}{suffix}", fmt)
    return folder


def files_under(root: Path) -> list[Path]:
    """Every file (not folder) below root: what a refused upload must have left behind (nothing)."""
    return [p for p in root.rglob("*") if not p.is_dir()]
