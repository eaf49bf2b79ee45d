"""POST /datasets: an archive of train/<class>/<image> and test/<class>/<image> becomes a folder data
set. The archive is a zip or a tar (plain, .tar.gz, .tar.bz2 or .tar.xz), told apart by its first
bytes (core/upload_archives.py reads both).

    name = install_archive(settings, "pets", fileobj)     # UploadRefused (4xx) with nothing left on disk

Everything is checked from the archive's listing before one byte is extracted: the entry count, each
entry's path (no absolute path, drive letter, backslash or '..'; no link, device or FIFO; no zip
encryption; no path twice), the unpacked total, each zip entry's compression ratio (a zip bomb) or a
tar's decompressed stream (counted), and the layout. Then each file is extracted, its first bytes
checked for the PNG or JPEG signature (the extension alone proves nothing), into a temporary folder
under the data root; the engine reads it back as it will read the data set (classes, empty classes,
limits, every image's header) and only then is it renamed into place. Any refusal removes the
temporary folder. An archive whose entries all sit in one top folder (`pets/train/...`, as archiving
a folder makes) is read as if that folder were its root.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from core.datasets import folder_limits
from core.settings import Settings
from core.upload_archives import READ_ERRORS, Entry, Limits, open_archive, unpacks_too_much
from core.upload_refused import UploadRefused
from engine.data.folders import (
    EXTENSIONS,
    FOLDERS,
    SPLITS,
    FolderLayoutError,
    check_name,
    read_headers,
    scan_folder,
)
from engine.errors import DataFormatError

__all__ = ["UploadRefused", "install_archive"]

UPLOADS = ".uploads"  # under <data root>/folders: not a valid data set name, so never listed
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG; JPEG's SOI marker and the next marker's 0xFF
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK_BYTES = 1024 * 1024


def install_archive(settings: Settings, name: str, upload: BinaryIO) -> str:
    """Check the archive, extract it beside the folder data sets and move it into place as `name`."""
    _check_new_name(settings, name)
    limits = Limits(
        max_entries=settings.dataset_upload_max_files,
        max_unpacked_bytes=settings.folder_max_total_bytes,
        max_ratio=settings.dataset_upload_max_ratio,
    )
    with open_archive(upload, limits) as archive:
        members, class_folders = _checked_members(archive.entries(), limits)
        staging = settings.data_root / FOLDERS / UPLOADS / uuid.uuid4().hex
        try:
            for folder in class_folders:  # an empty class must read as one (and be refused as empty)
                (staging / FOLDERS / name / folder).mkdir(parents=True, exist_ok=True)
            target = staging / FOLDERS / name
            where = {entry_name: target / relative for relative, entry_name in members.items()}
            for entry_name, stream in archive.files(set(where)):
                _write_image(entry_name, stream, where[entry_name])
            _check_layout(settings, staging, name)
            final = settings.data_root / FOLDERS / name
            try:
                (staging / FOLDERS / name).rename(final)  # atomic; fails if another upload got there first
            except OSError:
                raise UploadRefused(409, "name", f"name: a data set {name!r} already exists") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            try:
                staging.parent.rmdir()  # the uploads folder too, unless another upload is under way
            except OSError:
                pass
    return name


def _check_new_name(settings: Settings, name: str) -> None:
    from engine.datasets import is_builtin

    try:
        check_name(name)
    except FolderLayoutError as exc:
        raise UploadRefused(422, "name", f"name: {exc}") from None
    if is_builtin(name):
        raise UploadRefused(422, "name", f"name: {name!r} is a built-in data set; choose another name")
    if (settings.data_root / FOLDERS / name).exists():
        raise UploadRefused(409, "name", f"name: a data set {name!r} already exists; choose another name")


def _checked_members(entries: list[Entry], limits: Limits) -> tuple[dict[str, str], list[str]]:
    """Layout path (train/<class>/<file>) -> archive name for every file, and the class folders the
    archive names (train/<class>/); UploadRefused before extracting."""
    files: dict[tuple[str, ...], str] = {}  # path parts -> the archive's name
    folders, total = [], 0
    for entry in entries:
        _check_path(entry.name)
        parts = PurePosixPath(entry.name).parts
        if entry.is_dir:
            folders.append(parts)
            continue
        if parts in files:  # which copy would be the image? neither format forbids it; we do
            raise UploadRefused(422, "file", f"file: entry {entry.name!r} appears twice; refused")
        files[parts] = entry.name
        total += entry.size
    if total > limits.max_unpacked_bytes:
        raise unpacks_too_much(total, limits)
    tops = {p[0] for p in [*files, *folders] if p}
    strip = len(tops) == 1 and next(iter(tops)) not in SPLITS  # one top folder around the layout
    class_folders = [
        "/".join(p) for p in (f[1:] if strip else f for f in folders) if len(p) == 2 and p[0] in SPLITS
    ]
    members = {}
    for parts, name in files.items():
        path = parts[1:] if strip else parts
        if len(path) != 3 or path[0] not in SPLITS:
            raise UploadRefused(
                422,
                "file",
                f"file: {name!r} is not at train/<class>/<image> or test/<class>/<image>",
            )
        if not path[2].lower().endswith(EXTENSIONS):
            raise UploadRefused(
                415, "file", f"file: {name!r} is not a PNG or JPEG file ({', '.join(EXTENSIONS)})"
            )
        members["/".join(path)] = name
    return members, class_folders


def _check_path(name: str) -> None:
    parts = PurePosixPath(name).parts
    if name.startswith("/") or _DRIVE.match(name) or "\\" in name or ".." in parts:
        raise UploadRefused(422, "file", f"file: entry {name!r} has an absolute path or '..'; refused")


def _write_image(name: str, source: IO[bytes], path: Path) -> None:
    """Write one file's bytes to path, refusing one whose bytes are not PNG or JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("wb") as out:
            head = source.read(8)
            if not head.startswith(_SIGNATURES):
                raise UploadRefused(
                    415, "file", f"file: {name!r} is not a PNG or JPEG image (by its first bytes)"
                )
            out.write(head)
            while chunk := source.read(_CHUNK_BYTES):
                out.write(chunk)
    except READ_ERRORS as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)  # no server path
        raise UploadRefused(422, "file", f"file: entry {name!r} cannot be unpacked ({reason})") from None


def _check_layout(settings: Settings, staging: Path, name: str) -> None:
    """The engine's own reading of the extracted folder: classes, empty classes, limits, headers."""
    limits = folder_limits(settings)
    try:
        read_headers(staging, scan_folder(staging, name, limits), limits)
    except (FolderLayoutError, DataFormatError) as exc:
        raise UploadRefused(422, "file", f"file: {exc}") from None
