"""Logging for every process (serve, worker, migrate, gc): one format, and the job a line is about.

    configure_logging("INFO", settings.log_format)      # once, in cli/main.py
    with job_context(job_id):                           # the worker, around one job
        log.info("epoch 1 ...")                         # -> "... [job 3f2b...] epoch 1 ..."

TRANSFERLAB_LOG_FORMAT=text gives `time level logger [job <id>]: message`; json one object per line
with `time`, `level`, `logger`, `message`, `job_id` (when set), `process` and `exc_info` (the
traceback, when there is one), for a log shipper to index without parsing.

The job id lives in a context variable: every line logged in the thread (and in what it calls) while
a job runs carries it, without each call site having to name it. Threads do not inherit it (Python
3.11): a thread working for a job sets it itself (worker/lease.py's keeper does).
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_job_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(job_tag)s: %(message)s"


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Lines logged inside carry `job_id` (text: `[job <id>]`; json: a `job_id` key)."""
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


class JobIdFilter(logging.Filter):
    """Stamps each record with the current job's id (`job_id`, None outside a job) and `job_tag`."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = getattr(record, "job_id", None) or current_job_id.get()
        record.job_id = job_id
        record.job_tag = f" [job {job_id}]" if job_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes in `exc_info` as one string, never across lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        job_id = getattr(record, "job_id", None)
        if job_id:
            entry["job_id"] = job_id
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter TRANSFERLAB_LOG_FORMAT names (text or json)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, log_format: str) -> None:
    """The root logger writes to stderr in `log_format`, every line stamped with its job; replaces
    handlers set before (uvicorn's and Celery's loggers propagate to it). Python warnings are logged."""
    handler = logging.StreamHandler()
    handler.addFilter(JobIdFilter())
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # the engine's warnings.warn(...) reach the job's log too
