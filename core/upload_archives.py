"""The two archive formats POST /datasets takes, read the same way: zip, and tar (plain, gzip, bzip2 or
xz). Each lists its entries before anything is written and then streams the chosen files' bytes.

    archive = open_archive(fileobj, limits)     # UploadRefused: neither format, or unreadable
    with archive:
        entries = archive.entries()             # UploadRefused: a link, a device, a zip bomb ...
        for entry, stream in archive.files(wanted):
            ...

What each format can lie about, and what bounds it:
- zip: every entry's sizes are in its central directory; an entry that unpacks more than
  `max_ratio` times its compressed size is refused (a zip bomb) before extracting, and zipfile
  reads at most the declared size and checks the CRC.
- tar: its sizes are in each member's header, but a compressed tar is one stream: a small .tar.gz
  can unpack to terabytes of padding. The decompressed stream is counted as it is read and refused
  past the unpacked limit plus the headers' room, so listing it costs at most that much work.
  Links, devices and FIFOs are refused by their member type; only files and folders are taken.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, Protocol

from core.upload_refused import UploadRefused


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty zip's end record
_DECOMPRESSORS: dict[bytes, Callable[[BinaryIO], Readable]] = {
    b"\x1f\x8b": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
    b"BZh": lambda f: bz2.BZ2File(f),
    b"\xfd7zXZ\x00": lambda f: lzma.LZMAFile(f),
}
_TAR_MAGIC_OFFSET = 257  # "ustar" in a POSIX or GNU tar header
TAR_HEADER_ROOM = 4096  # bytes a member may take beside its data: header, long-name/pax headers, padding
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)
# What reading a file's bytes from either format may raise (a bad CRC, a truncated stream ...).
READ_ERRORS = (zipfile.BadZipFile, NotImplementedError, *_TAR_ERRORS)


@dataclass(frozen=True)
class Limits:
    max_entries: int  # TRANSFERLAB_DATASET_UPLOAD_MAX_FILES
    max_unpacked_bytes: int  # TRANSFERLAB_FOLDER_MAX_TOTAL_BYTES
    max_ratio: float  # TRANSFERLAB_DATASET_UPLOAD_MAX_RATIO (zip entries)


@dataclass(frozen=True)
class Entry:
    name: str  # the path as the archive spells it
    is_dir: bool
    size: int  # bytes it unpacks to


def too_many_entries(count: int, limits: Limits) -> UploadRefused:
    return UploadRefused(
        413,
        "file",
        f"file: {count} entries is over the limit of {limits.max_entries} "
        "(TRANSFERLAB_DATASET_UPLOAD_MAX_FILES)",
    )


def unpacks_too_much(total: int, limits: Limits) -> UploadRefused:
    return UploadRefused(
        413,
        "file",
        f"file: it unpacks to {total} bytes, over the limit of {limits.max_unpacked_bytes} "
        "(TRANSFERLAB_FOLDER_MAX_TOTAL_BYTES)",
    )


def open_archive(upload: BinaryIO, limits: Limits) -> ZipUpload | TarUpload:
    """The archive by its first bytes (not its file name, which proves nothing)."""
    head = upload.read(512)
    upload.seek(0)
    if head.startswith(_ZIP_MAGIC):
        return ZipUpload(upload, limits)
    for magic, decompress in _DECOMPRESSORS.items():
        if head.startswith(magic):
            return TarUpload(upload, limits, decompress)
    if head[_TAR_MAGIC_OFFSET:].startswith(b"ustar"):
        return TarUpload(upload, limits, None)
    raise UploadRefused(
        422, "file", "file: not a readable zip or tar archive (.zip, .tar, .tar.gz, .tar.bz2, .tar.xz)"
    )


class ZipUpload:
    def __init__(self, upload: BinaryIO, limits: Limits):
        self.limits = limits
        try:
            self.archive = zipfile.ZipFile(upload)
        except (zipfile.BadZipFile, OSError, ValueError):
            raise UploadRefused(422, "file", "file: not a readable zip archive") from None
        self.infos: dict[str, zipfile.ZipInfo] = {}

    def __enter__(self) -> ZipUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.archive.close()

    def entries(self) -> list[Entry]:
        infos = self.archive.infolist()
        if len(infos) > self.limits.max_entries:
            raise too_many_entries(len(infos), self.limits)
        out = []
        for info in infos:
            name = info.filename
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UploadRefused(422, "file", f"file: entry {name!r} is a symbolic link; refused")
            if info.flag_bits & 0x1:
                raise UploadRefused(422, "file", f"file: entry {name!r} is encrypted; send a plain zip")
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > self.limits.max_ratio:
                raise UploadRefused(
                    413,
                    "file",
                    f"file: entry {name!r} unpacks {ratio:.0f}x its compressed size, over the limit of "
                    f"{self.limits.max_ratio:g}x (TRANSFERLAB_DATASET_UPLOAD_MAX_RATIO); images barely "
                    "compress, so this is refused as a zip bomb",
                )
            self.infos[name] = info
            out.append(Entry(name, info.is_dir(), info.file_size))
        return out

    def files(self, wanted: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
        """(name, its bytes) for each wanted file; zipfile checks each one's CRC as it is read."""
        for name in wanted:
            try:
                with self.archive.open(self.infos[name]) as stream:
                    yield name, stream
            except (zipfile.BadZipFile, NotImplementedError) as exc:
                raise UploadRefused(422, "file", f"file: entry {name!r} cannot be unpacked ({exc})") from None


class _Counted:
    """A read-only stream that refuses to give more than `limit` bytes in all (a decompression bomb)."""

    def __init__(self, stream: Readable, limit: int, limits: Limits):
        self.stream, self.limit, self.limits, self.read_bytes = stream, limit, limits, 0

    def read(self, size: int = -1) -> bytes:
        room = self.limit - self.read_bytes + 1  # one byte past the limit tells that it is passed
        data = self.stream.read(room if size is None or size < 0 else min(size, room))
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise unpacks_too_much(self.read_bytes, self.limits)
        return data


class TarUpload:
    """A tar read twice as a stream (tarfile's "r|" mode: forward only): once for the members'
    headers, once for the chosen files' bytes. Each pass decompresses afresh, counted."""

    def __init__(self, upload: BinaryIO, limits: Limits, decompress: Callable[[BinaryIO], Readable] | None):
        self.upload, self.limits, self.decompress = upload, limits, decompress
        # the unpacked total, and the headers and padding of as many members as may be listed
        self.stream_limit = limits.max_unpacked_bytes + TAR_HEADER_ROOM * (limits.max_entries + 1) + 10240

    def __enter__(self) -> TarUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _members(self) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
        self.upload.seek(0)
        raw = self.decompress(self.upload) if self.decompress else self.upload
        counted = _Counted(raw, self.stream_limit, self.limits)
        try:
            with tarfile.open(fileobj=counted, mode="r|") as archive:  # type: ignore[call-overload]
                for member in archive:
                    yield archive, member
        except _TAR_ERRORS as exc:  # an UploadRefused from the count is none of these: it passes
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)  # no server path
            raise UploadRefused(422, "file", f"file: not a readable tar archive ({reason})") from None

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        for _, member in self._members():
            if len(out) >= self.limits.max_entries:
                raise too_many_entries(len(out) + 1, self.limits)
            if member.issym() or member.islnk():
                raise UploadRefused(422, "file", f"file: entry {member.name!r} is a link; refused")
            if not (member.isfile() or member.isdir()):
                raise UploadRefused(
                    422, "file", f"file: entry {member.name!r} is neither a file nor a folder; refused"
                )
            out.append(Entry(member.name, member.isdir(), member.size if member.isfile() else 0))
        return out

    def files(self, wanted: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
        """(name, its bytes) for each wanted file, in the archive's order."""
        for archive, member in self._members():
            if member.isfile() and member.name in wanted:
                stream = archive.extractfile(member)
                assert stream is not None  # a regular file always has one
                yield member.name, stream
