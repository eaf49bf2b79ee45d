"""Log lines name their job; TRANSFERLAB_LOG_FORMAT=json makes one JSON object per line; each job's
own log is bounded, keeping its newest lines."""

from __future__ import annotations

import io
import json
import logging

import pytest

from core.job_logs import JobLogHandler, capture_job_log, job_log_path, read_job_log
from core.logs import JobIdFilter, job_context, make_formatter

log = logging.getLogger("tests.core.test_logs")


def formatted(log_format: str, emit) -> list[str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobIdFilter())
    handler.setFormatter(make_formatter(log_format))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        emit()
    finally:
        log.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_a_text_line_names_the_job_it_was_logged_for():
    def emit():
        with job_context("ab" * 16):
            log.info("epoch %d", 1)
        log.info("between jobs")

    inside, outside = formatted("text", emit)
    assert inside.endswith(f"INFO tests.core.test_logs [job {'ab' * 16}]: epoch 1")
    assert outside.endswith("INFO tests.core.test_logs: between jobs")


def test_json_is_one_object_per_line_with_the_job_and_the_traceback():
    def emit():
        with job_context("cd" * 16):
            try:
                raise ValueError("bad\nvalue")
            except ValueError:
                log.exception("job failed")

    (line,) = formatted("json", emit)  # the traceback does not break the line
    entry = json.loads(line)
    assert entry["job_id"] == "cd" * 16 and entry["level"] == "ERROR" and entry["message"] == "job failed"
    assert "ValueError: bad\nvalue" in entry["exc_info"] and entry["logger"] == "tests.core.test_logs"
    assert entry["time"].endswith("+00:00")


def test_a_jobs_log_keeps_only_its_lines(settings):
    log.setLevel(logging.INFO)
    with job_context("a" * 32), capture_job_log(settings, "a" * 32):
        log.info("mine")
        with job_context("b" * 32):
            log.info("another job's")
    log.info("after the job")

    assert read_job_log(settings, "a" * 32).splitlines()[0].endswith("mine")
    assert len(read_job_log(settings, "a" * 32).splitlines()) == 1


def test_a_jobs_log_is_bounded_and_keeps_its_newest_lines(settings):
    path = job_log_path(settings, "c" * 32)
    handler = JobLogHandler(path, "c" * 32, max_bytes=4096)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with job_context("c" * 32):
            for n in range(500):
                log.info("line %04d %s", n, "x" * 40)
    finally:
        log.removeHandler(handler)

    text = read_job_log(settings, "c" * 32)
    assert path.stat().st_size <= 4096
    assert text.startswith("[earlier lines dropped: this log keeps its newest 4096 bytes]")
    assert "line 0499" in text.splitlines()[-1] and "line 0000" not in text
    assert read_job_log(settings, "c" * 32, tail_lines=2).count("\n") == 2


def test_a_job_id_cannot_name_a_file_outside_the_logs_folder(settings):
    with pytest.raises(ValueError):
        job_log_path(settings, "../../etc/passwd")
