"""Each job keeps its own log lines (what GET /jobs/{id}/logs serves): a succeeded job's start and
epochs, a failed one's reason (one line for an expected failure, the traceback for a bug), and a
full disk while writing the checkpoint fails the job with a clear reason and leaves no file."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from core.job_logs import read_job_log
from engine import checkpoint as engine_checkpoint
from tests.worker.test_run_job import data, pretrain_spec  # noqa: F401  (data: a fixture)
from worker import tasks


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # as `transferlab worker` runs (cli/main.py)


def test_a_succeeded_job_keeps_its_start_epochs_and_outcome(data, settings, make_job):  # noqa: F811
    job_id = make_job(spec=pretrain_spec(epochs=2))

    assert tasks.run_job(job_id) == "succeeded"

    text = read_job_log(settings, job_id)
    assert f"job {job_id} claimed by" in text and "time limit" in text
    assert "epoch 1 train loss" in text and "epoch 2 val loss" in text
    assert text.rstrip().endswith(f"job {job_id}: succeeded")
    assert all(f"[job {job_id}]" in line for line in text.splitlines())  # every line names its job
    assert read_job_log(settings, job_id, tail_lines=1).strip().endswith("succeeded")


def test_another_jobs_lines_stay_out_of_a_jobs_log(data, settings, make_job):  # noqa: F811
    first, second = make_job(spec=pretrain_spec(epochs=1)), make_job(spec=pretrain_spec(epochs=1))

    assert tasks.run_job(first) == "succeeded" and tasks.run_job(second) == "succeeded"

    assert second not in read_job_log(settings, first) and first not in read_job_log(settings, second)


def test_an_expected_failure_is_one_line_without_a_traceback(settings, make_job, tmp_path, monkeypatch):
    from core import db

    monkeypatch.setenv("TRANSFERLAB_DATA_DIR", str(tmp_path / "no-data-here"))
    db.reset_caches()
    job_id = make_job(spec=pretrain_spec())

    assert tasks.run_job(job_id) == "failed"

    text = read_job_log(settings, job_id)
    assert "failed: MissingDataError: data set 'stl10' is missing" in text
    assert "Traceback" not in text


def test_a_bug_leaves_its_traceback_in_the_jobs_log(data, settings, make_job, monkeypatch):  # noqa: F811
    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(tasks, "run_engine", broken)
    job_id = make_job(spec=pretrain_spec())

    assert tasks.run_job(job_id) == "failed"

    text = read_job_log(settings, job_id)
    assert "Traceback (most recent call last)" in text and "RuntimeError: a bug in the engine" in text


def test_a_full_disk_during_the_checkpoint_fails_the_job_and_leaves_no_file(
    data,  # noqa: F811
    settings,
    make_job,
    job_reader,
    monkeypatch,
):
    def half_written_then_full(_tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 1000)  # some bytes reached the disk, then it filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(engine_checkpoint, "save_file", half_written_then_full)
    job_id = make_job(spec=pretrain_spec(epochs=1))

    assert tasks.run_job(job_id) == "failed"

    job = job_reader(job_id)
    assert job.error.startswith("DiskFullError: the disk is full: could not write the checkpoint")
    assert "transferlab gc" in job.error and str(settings.home) not in job.error
    left = (
        [p for p in settings.checkpoints_dir.rglob("*") if p.is_file()]
        if settings.checkpoints_dir.exists()
        else []
    )
    assert left == []
    assert "Traceback" not in read_job_log(settings, job_id)  # expected: one line
