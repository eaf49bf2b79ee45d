"""Folder data sets: your own PNG and JPEG images in torchvision's ImageFolder layout.

    <root>/folders/<name>/train/<class>/*.png|*.jpg|*.jpeg
    <root>/folders/<name>/test/<class>/*
    <root>/folders/<name>/transferlab.json      optional: {"image_size": 64}, the stored side in pixels

    scan = scan_folder(root, "pets", FolderLimits())       # layout, counts, bytes: stat() only
    header = read_headers(root, scan, FolderLimits())      # every image's size and mode, no pixels
    images, labels = decode_split(root, scan, header, "train")   # uint8 (N, C, S, S), int64

Class names are torchvision's find_classes (sorted sub-folders) and files are its make_dataset with
PNG/JPEG extensions, so a folder reads here as ImageFolder would read it; files with other extensions
are skipped, as ImageFolder skips them. Each image is turned upright (EXIF) and converted as /predict
converts an upload (engine.predict.pil_to_uint8: grey when every image of the set is grey, RGB
otherwise, transparency over black, 16-bit grey scaled), then resized to the stored size square, as
/predict resizes (no crop: what the model trains on is what it is later shown). The stored size is
the data set's declared one, else the median shorter side, capped by FolderLimits.max_image_side.
Every error names the file or folder relative to the data root, never a server path.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.readers import SplitName
from engine.errors import DataFormatError, EngineError

FOLDERS = "folders"  # under the data root
SETTINGS_FILE = "transferlab.json"
EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS: tuple[SplitName, ...] = ("train", "test")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"  # engine.spec.DATASET_NAME_PATTERN: a test keeps them equal
_NAME = re.compile(NAME_PATTERN)
MIN_IMAGE_SIDE = 8  # a stored side below this is not an image a CNN can use
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


class FolderLayoutError(EngineError):
    """A folder data set is not laid out as ImageFolder expects, or is over a limit; says which."""


@dataclass(frozen=True)
class FolderLimits:
    """What one folder data set may hold (TRANSFERLAB_FOLDER_* settings)."""

    max_images: int = 50_000  # both splits together
    max_image_pixels: int = 4_000_000  # width x height of one image, from its header
    max_total_bytes: int = 2 * 1024**3  # the files on disk, both splits
    max_image_side: int = 128  # cap on the stored side (the median shorter side by default)


@dataclass(frozen=True)
class FolderFile:
    relative: str  # posix path under the data set's folder: train/cat/1.png
    label: int
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class FolderScan:
    name: str
    classes: tuple[str, ...]
    files: dict[str, list[FolderFile]]  # split -> files, in make_dataset's order (class, then name)
    declared_side: int | None
    fingerprint: str  # of every file's path, size and mtime and the settings file: a change rebuilds

    def where(self, relative: str = "") -> str:
        """A path for messages: relative to the data root."""
        return f"{FOLDERS}/{self.name}" + (f"/{relative}" if relative else "")


@dataclass(frozen=True)
class FolderHeader:
    """What the images' headers say: the stored side and channel count every image is decoded to."""

    image_side: int
    channels: int
    median_side: int  # the median shorter side of the originals (the native size)


def check_name(name: str) -> None:
    """FolderLayoutError unless name is 1..32 of a-z, 0-9, _ and -, starting with a letter or digit."""
    if not _NAME.match(name):
        raise FolderLayoutError(
            f"data set name {name!r} is not allowed: use 1 to 32 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )


def folder_path(root: Path, name: str) -> Path:
    """Where the folder data set `name` lives (the name is checked first: it becomes a path)."""
    check_name(name)
    return Path(root) / FOLDERS / name


def folder_names(root: Path) -> list[str]:
    """Names of the folders under <root>/folders that could be data sets, sorted."""
    base = Path(root) / FOLDERS
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _NAME.match(p.name))


def scan_folder(root: Path, name: str, limits: FolderLimits) -> FolderScan:
    """The data set's classes and files (no image is opened); FolderLayoutError naming the problem."""
    from torchvision.datasets.folder import find_classes, make_dataset  # ~1 s import: only when used

    base = folder_path(root, name)
    where = f"{FOLDERS}/{name}"
    if not base.is_dir():
        raise FolderLayoutError(f"no folder data set {name!r}: {where}/ does not exist")
    for split in SPLITS:
        if not (base / split).is_dir():
            raise FolderLayoutError(
                f"{where}: the {split!r} split is missing; expected {where}/{split}/<class>/<image>"
            )
    try:
        classes, class_to_idx = find_classes(base / "train")
    except FileNotFoundError:
        raise FolderLayoutError(
            f"{where}/train has no class folders; expected train/<class>/<image>"
        ) from None
    test_classes = sorted(p.name for p in (base / "test").iterdir() if p.is_dir())
    if test_classes != classes:
        missing = sorted(set(classes) - set(test_classes))
        extra = sorted(set(test_classes) - set(classes))
        raise FolderLayoutError(
            f"{where}: train and test must have the same class folders; test lacks {missing or 'none'}, "
            f"has extra {extra or 'none'}"
        )
    if len(classes) < 2:
        raise FolderLayoutError(f"{where}: a classifier needs at least 2 classes, found {classes}")
    files: dict[str, list[FolderFile]] = {}
    for split in SPLITS:
        found = make_dataset(base / split, class_to_idx, extensions=EXTENSIONS, allow_empty=True)
        counts = np.bincount([label for _, label in found], minlength=len(classes))
        empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
        if empty:
            raise FolderLayoutError(
                f"{where}/{split}: class folder(s) {', '.join(empty)} hold no PNG or JPEG image "
                f"({', '.join(EXTENSIONS)})"
            )
        files[split] = [_file(base, Path(path), label) for path, label in found]
    _check_counts(where, files, limits)
    declared = _declared_side(base, where, limits)
    return FolderScan(name, tuple(classes), files, declared, _fingerprint(base, files))


def _file(base: Path, path: Path, label: int) -> FolderFile:
    stat = path.stat()
    return FolderFile(path.relative_to(base).as_posix(), label, stat.st_size, stat.st_mtime_ns)


def _check_counts(where: str, files: dict[str, list[FolderFile]], limits: FolderLimits) -> None:
    count = sum(len(f) for f in files.values())
    if count > limits.max_images:
        raise FolderLayoutError(
            f"{where}: {count} images is over the limit of {limits.max_images} "
            "(TRANSFERLAB_FOLDER_MAX_IMAGES); use fewer images"
        )
    total = sum(f.size_bytes for split in files.values() for f in split)
    if total > limits.max_total_bytes:
        raise FolderLayoutError(
            f"{where}: its images are {total} bytes, over the limit of {limits.max_total_bytes} "
            "(TRANSFERLAB_FOLDER_MAX_TOTAL_BYTES); use fewer or smaller images"
        )


def _declared_side(base: Path, where: str, limits: FolderLimits) -> int | None:
    path = base / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        side = json.loads(path.read_text())["image_size"]
    except (ValueError, KeyError, TypeError, OSError):
        raise FolderLayoutError(
            f'{where}/{SETTINGS_FILE}: expected a JSON object like {{"image_size": 64}}'
        ) from None
    if not isinstance(side, int) or not MIN_IMAGE_SIDE <= side <= limits.max_image_side:
        raise FolderLayoutError(
            f"{where}/{SETTINGS_FILE}: image_size must be an integer "
            f"{MIN_IMAGE_SIDE}..{limits.max_image_side} (TRANSFERLAB_FOLDER_MAX_IMAGE_SIDE), got {side!r}"
        )
    return side


def _fingerprint(base: Path, files: dict[str, list[FolderFile]]) -> str:
    entries = [[f.relative, f.size_bytes, f.mtime_ns] for split in SPLITS for f in files[split]]
    settings = base / SETTINGS_FILE
    if settings.is_file():
        entries.append([SETTINGS_FILE, settings.stat().st_size, settings.stat().st_mtime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def read_headers(root: Path, scan: FolderScan, limits: FolderLimits) -> FolderHeader:
    """Every image's size and mode from its header (no pixels decoded): the stored side and channels.
    FolderLayoutError for an image over the pixel limit, DataFormatError for one that is no PNG/JPEG."""
    from PIL import Image, UnidentifiedImageError

    base = folder_path(root, scan.name)
    sides, grey = [], True
    for split in SPLITS:
        for f in scan.files[split]:
            try:
                with Image.open(base / f.relative, formats=("PNG", "JPEG")) as image:
                    width, height, mode = image.width, image.height, image.mode
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                reason = _reason(exc, root)
                raise DataFormatError(
                    f"{scan.where(f.relative)}: not a readable PNG or JPEG image ({reason})"
                ) from None
            if width * height > limits.max_image_pixels:
                raise FolderLayoutError(
                    f"{scan.where(f.relative)}: {width}x{height} is over the limit of "
                    f"{limits.max_image_pixels} pixels (TRANSFERLAB_FOLDER_MAX_IMAGE_PIXELS); shrink it"
                )
            sides.append(min(width, height))
            grey = grey and mode in _GREY_MODES
    median = int(statistics.median(sides))
    side = scan.declared_side or max(MIN_IMAGE_SIDE, min(median, limits.max_image_side))
    return FolderHeader(image_side=side, channels=1 if grey else 3, median_side=median)


def decode_split(
    root: Path, scan: FolderScan, header: FolderHeader, split: SplitName
) -> tuple[np.ndarray, np.ndarray]:
    """The split's images, uint8 (N, C, S, S), and labels int64; DataFormatError naming a bad file."""
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageOps

    from engine.predict import pil_to_uint8

    base = folder_path(root, scan.name)
    files = scan.files[split]
    side = header.image_side
    images = np.empty((len(files), header.channels, side, side), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(base / f.relative, formats=("PNG", "JPEG")) as image:
                pixels = pil_to_uint8(ImageOps.exif_transpose(image), header.channels)
        except (OSError, SyntaxError, ValueError) as exc:  # truncated, corrupt, changed since the scan
            reason = _reason(exc, root)
            raise DataFormatError(f"{scan.where(f.relative)}: cannot decode this image ({reason})") from None
        _, h, w = pixels.shape
        # As engine.preprocess.prepare_batch resizes (bilinear, antialiased when shrinking).
        resized = F.interpolate(
            pixels[None].float(), size=(side, side), mode="bilinear", antialias=h > side or w > side
        )
        images[i] = resized[0].round().clamp(0, 255).to(torch.uint8).numpy()
    labels = np.array([f.label for f in files], dtype=np.int64)
    return images, labels


def _reason(exc: Exception, root: Path) -> str:
    # Pillow's messages may quote the file's full path ("cannot identify image file '/srv/...'").
    text = str(exc)
    for prefix in {str(root), str(Path(root).resolve())}:
        text = text.replace(prefix, "<data root>")
    return text
