"""Each job's own log lines, kept with the job: `$TRANSFERLAB_HOME/logs/jobs/<job_id>.log`.

    with job_context(job_id), capture_job_log(settings, job_id):   # the worker, around one job
        ...                                                        # its lines also go to this file
    read_job_log(settings, job_id, tail_lines=100)                 # GET /jobs/{id}/logs

Every attempt appends to the same file, so a job retried after a lost worker shows both attempts.
The file is bounded: past TRANSFERLAB_JOB_LOG_MAX_BYTES it is cut to its newest half (at a line
boundary, behind a line saying so), so a job that logs without end costs at most that much disk and
a GET at most that much memory. A file, not a row: no migration, no database growth, and deleting the
job removes it with its other files (core/deletion.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.logs import JobIdFilter, make_formatter
from core.settings import Settings
from engine.durable import write_atomically

log = logging.getLogger(__name__)

LOG_SUFFIX = ".log"
TRUNCATED_NOTE = "[earlier lines dropped: this log keeps its newest {bytes} bytes]\n"


def job_logs_dir(settings: Settings) -> Path:
    return settings.logs_dir / "jobs"


def job_log_path(settings: Settings, job_id: str) -> Path:
    """The job's log file; refuses an id that would name a file outside the logs folder."""
    root = job_logs_dir(settings)
    path = (root / f"{job_id}{LOG_SUFFIX}").resolve()
    if path.parent != root:
        raise ValueError(f"job id {job_id!r} does not name a log file")
    return path


def keep_newest(path: Path, max_bytes: int) -> None:
    """Cut the file to about max_bytes / 2 of its newest whole lines (atomically: a reader sees the
    old file or the new one)."""
    keep = max_bytes // 2
    with open(path, "rb") as f:
        f.seek(max(path.stat().st_size - keep, 0))
        tail = f.read()
    newline = tail.find(b"\n")
    if newline >= 0:
        tail = tail[newline + 1 :]  # start at a whole line
    note = TRUNCATED_NOTE.format(bytes=max_bytes).encode()
    write_atomically(path, lambda tmp: tmp.write_bytes(note + tail))


class JobLogHandler(logging.Handler):
    """Appends the records of one job (by the context's job id) to its file, keeping it bounded."""

    def __init__(self, path: Path, job_id: str, max_bytes: int, log_format: str = "text"):
        super().__init__()
        self.path = path
        self.job_id = job_id
        self.max_bytes = max_bytes
        self.addFilter(JobIdFilter())
        self.addFilter(lambda record: getattr(record, "job_id", None) == job_id)
        # The file is served as text/plain: text lines whatever the process's own format.
        self.setFormatter(make_formatter("text"))
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")
            # O_APPEND: another attempt's process appending at once never overwrites these bytes.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > self.max_bytes:
                keep_newest(self.path, self.max_bytes)
        except OSError:
            # A full disk must not fail the job through its log; the process's own log still has it.
            pass


@contextmanager
def capture_job_log(settings: Settings, job_id: str) -> Iterator[None]:
    """While inside, every line logged for `job_id` (see core.logs.job_context) is also kept in the
    job's own file."""
    try:
        handler = JobLogHandler(job_log_path(settings, job_id), job_id, settings.job_log_max_bytes)
    except OSError as exc:  # an unwritable state folder: the job runs, its lines stay in the worker's log
        log.warning("job %s: its own log cannot be kept: %s", job_id, exc)
        yield
        return
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def read_job_log(settings: Settings, job_id: str, tail_lines: int | None = None) -> str:
    """The job's lines so far ("" before its first), the last `tail_lines` of them when given."""
    try:
        text = job_log_path(settings, job_id).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    if tail_lines is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-tail_lines:]) if tail_lines > 0 else ""
