"""POST /datasets: a zip of train/<class>/<image> and test/<class>/<image> becomes a folder data set.

    name = install_zip(settings, "pets", fileobj)     # UploadRefused (4xx) with nothing left on disk

Everything is checked from the zip's directory before one byte is extracted: the entry count, each
entry's path (no absolute path, drive letter, backslash or '..'; no symlink, by its Unix mode in the
external attributes; no encryption), the uncompressed total and each entry's compression ratio (a
zip bomb), and the layout. Then each file is extracted, its first bytes checked for the PNG or JPEG
signature (the extension alone proves nothing), into a temporary folder under the data root; the
engine reads it back as it will read the data set (classes, empty classes, limits, every image's
header) and only then is it renamed into place. Any refusal removes the temporary folder.
A zip whose entries all sit in one top folder (`pets/train/...`, as zipping a folder makes) is read
as if that folder were its root.
"""

from __future__ import annotations

import re
import shutil
import stat
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.datasets import folder_limits
from core.settings import Settings
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

UPLOADS = ".uploads"  # under <data root>/folders: not a valid data set name, so never listed
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG; JPEG's SOI marker and the next marker's 0xFF
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK_BYTES = 1024 * 1024


@dataclass
class UploadRefused(Exception):
    """Why an upload was refused: the HTTP status (409, 413, 415, 422), the form field, the reason."""

    status_code: int
    field: str
    message: str

    def __str__(self) -> str:
        return self.message


def install_zip(settings: Settings, name: str, upload: BinaryIO) -> str:
    """Check the zip, extract it beside the folder data sets and move it into place as `name`."""
    _check_new_name(settings, name)
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UploadRefused(422, "file", "file: not a readable zip archive") from None
    with archive:
        members, class_folders = _checked_members(settings, archive)
        staging = settings.data_root / FOLDERS / UPLOADS / uuid.uuid4().hex
        try:
            for folder in class_folders:  # an empty class must read as one (and be refused as empty)
                (staging / FOLDERS / name / folder).mkdir(parents=True, exist_ok=True)
            _extract(archive, members, staging / FOLDERS / name)
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


def _checked_members(
    settings: Settings, archive: zipfile.ZipFile
) -> tuple[dict[str, zipfile.ZipInfo], list[str]]:
    """Layout path (train/<class>/<file>) -> entry for every file, and the class folders the zip
    names (train/<class>/); UploadRefused before extracting."""
    entries = archive.infolist()
    if len(entries) > settings.dataset_upload_max_files:
        raise UploadRefused(
            413,
            "file",
            f"file: {len(entries)} entries is over the limit of {settings.dataset_upload_max_files} "
            "(TRANSFERLAB_DATASET_UPLOAD_MAX_FILES)",
        )
    files, folders, total = [], [], 0
    for info in entries:
        _check_entry(info, settings.dataset_upload_max_ratio)
        if info.is_dir():
            folders.append(PurePosixPath(info.filename).parts)
        else:
            files.append(info)
            total += info.file_size
    limit = settings.folder_max_total_bytes
    if total > limit:
        raise UploadRefused(
            413,
            "file",
            f"file: it unpacks to {total} bytes, over the limit of {limit} "
            "(TRANSFERLAB_FOLDER_MAX_TOTAL_BYTES)",
        )
    parts = {info.filename: PurePosixPath(info.filename).parts for info in files}
    tops = {p[0] for p in [*parts.values(), *folders] if p}
    strip = len(tops) == 1 and next(iter(tops)) not in SPLITS  # one top folder around the layout
    class_folders = [
        "/".join(p) for p in (f[1:] if strip else f for f in folders) if len(p) == 2 and p[0] in SPLITS
    ]
    members = {}
    for info in files:
        path = parts[info.filename][1:] if strip else parts[info.filename]
        if len(path) != 3 or path[0] not in SPLITS:
            raise UploadRefused(
                422,
                "file",
                f"file: {info.filename!r} is not at train/<class>/<image> or test/<class>/<image>",
            )
        if not path[2].lower().endswith(EXTENSIONS):
            raise UploadRefused(
                415, "file", f"file: {info.filename!r} is not a PNG or JPEG file ({', '.join(EXTENSIONS)})"
            )
        members["/".join(path)] = info
    return members, class_folders


def _check_entry(info: zipfile.ZipInfo, max_ratio: float) -> None:
    name = info.filename
    parts = PurePosixPath(name).parts
    if name.startswith("/") or _DRIVE.match(name) or "\\" in name or ".." in parts:
        raise UploadRefused(422, "file", f"file: entry {name!r} has an absolute path or '..'; refused")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadRefused(422, "file", f"file: entry {name!r} is a symbolic link; refused")
    if info.flag_bits & 0x1:
        raise UploadRefused(422, "file", f"file: entry {name!r} is encrypted; send a plain zip")
    if info.file_size > max_ratio * max(info.compress_size, 1):
        raise UploadRefused(
            413,
            "file",
            f"file: entry {name!r} unpacks {info.file_size / max(info.compress_size, 1):.0f}x its compressed "
            f"size, over the limit of {max_ratio:g}x (TRANSFERLAB_DATASET_UPLOAD_MAX_RATIO); images barely "
            "compress, so this is refused as a zip bomb",
        )


def _extract(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], target: Path) -> None:
    """Write each file under target, refusing one whose bytes are not PNG or JPEG."""
    for relative, info in members.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        # zipfile reads at most file_size bytes and checks the CRC: a lying header cannot unpack more.
        try:
            with archive.open(info) as source, path.open("wb") as out:
                head = source.read(8)
                if not head.startswith(_SIGNATURES):
                    raise UploadRefused(
                        415,
                        "file",
                        f"file: {info.filename!r} is not a PNG or JPEG image (by its first bytes)",
                    )
                out.write(head)
                while chunk := source.read(_CHUNK_BYTES):
                    out.write(chunk)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)  # no server path
            raise UploadRefused(
                422, "file", f"file: entry {info.filename!r} cannot be unpacked ({reason})"
            ) from None


def _check_layout(settings: Settings, staging: Path, name: str) -> None:
    """The engine's own reading of the extracted folder: classes, empty classes, limits, headers."""
    limits = folder_limits(settings)
    try:
        read_headers(staging, scan_folder(staging, name, limits), limits)
    except (FolderLayoutError, DataFormatError) as exc:
        raise UploadRefused(422, "file", f"file: {exc}") from None
