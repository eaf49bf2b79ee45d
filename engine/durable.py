"""Writes that survive a crash or a power cut: the data is on disk before the rename that makes it
visible, and the rename itself is on disk after it (fsync of the file, then of its folder).

    write_atomically(path, lambda tmp: tmp.write_bytes(data))
    fsync_tree(folder); os.replace(folder, final); fsync_dir(final.parent)

Without the fsyncs a rename can reach the disk before the data it names: after a crash the file is
there, at its full size, holding zeros, and a later load picks it up.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import DiskFullError

# No space left on the device, or the user's quota is used up: both mean "free disk space".
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the folder's entries (new names, renames) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the data itself is synced
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file below folder, then the folders themselves (before renaming it into place)."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(Path(root))


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write beside under a name unique to this process, fsync, rename over path, fsync the folder:
    a reader sees the old file or the whole new one, never half, even across a crash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


@contextmanager
def disk_full_is_clear(what: str, folder: Path) -> Iterator[None]:
    """Turn a full disk while writing `what` into a DiskFullError that says so, how much space is
    left, and what to do (the OSError's own text names a server path and only "Errno 28")."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS or isinstance(exc, DiskFullError):
            raise
        try:
            free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
        except OSError:
            free = "free space unknown"
        full = DiskFullError(
            f"the disk is full: could not write {what} ({free} in the state folder); nothing half-"
            "written was kept. Free space (transferlab gc, DELETE /jobs/{id} of jobs no longer "
            "wanted) and post the job again"
        )
        full.errno = exc.errno  # still an OSError with ENOSPC for whoever checks the number
        raise full from None
