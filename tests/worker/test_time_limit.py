"""Each attempt runs under a time limit from its estimated work: the lease thread stops the run once it
has passed, and the holder fails the job with the limit and the estimate; nothing queues it again."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from core import db
from core.jobs import claim_job, reap
from core.models import Checkpoint, JobStatus
from tests.worker.test_lease import claimed, keeper, wait_for
from tests.worker.test_run_job import pretrain_spec, rows
from worker import tasks
from worker.lease import StopReason


@pytest.fixture
def tiny_limit(settings, tiny_data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny data, and a time limit of a millisecond: over before the first batch ends."""
    monkeypatch.setenv("TRANSFERLAB_DATA_DIR", str(tiny_data_root))
    monkeypatch.setenv("TRANSFERLAB_JOB_TIME_LIMIT_MIN_SECONDS", "0.001")
    monkeypatch.setenv("TRANSFERLAB_JOB_TIME_LIMIT_FLOPS_PER_SECOND", "1e30")
    db.reset_caches()


def test_a_keeper_stops_the_run_once_its_time_limit_has_passed(settings, sessions, make_job):
    lease = claimed(sessions, make_job)
    with keeper(sessions, lease) as k:
        k.limit_time(0.05)
        assert wait_for(k.should_stop) and k.reason == StopReason.time_limit
        assert k.elapsed_seconds >= 0.05


def test_a_keeper_within_its_time_limit_lets_the_run_go_on(settings, sessions, make_job):
    lease = claimed(sessions, make_job)
    with keeper(sessions, lease) as k:
        k.limit_time(60)
        time.sleep(0.1)
        assert not k.should_stop()


def test_a_run_that_already_ended_is_not_stopped_for_its_time_limit(settings, sessions, make_job):
    lease = claimed(sessions, make_job)
    with keeper(sessions, lease) as k:
        k.limit_time(0)
        k.stop()  # the run returned before any check saw the limit
        assert k.reason is None


def test_a_job_past_its_time_limit_fails_naming_the_limit_and_the_estimate(
    tiny_limit, sessions, make_job, job_reader
):
    job_id = make_job(spec=pretrain_spec())
    assert tasks.run_job(job_id) == "failed"
    job = job_reader(job_id)
    assert (job.status, job.attempts) == (JobStatus.failed, 1)
    assert re.match(r"stopped after \d+ s: over its time limit of 0 s, its estimated work", job.error)
    assert "FLOPs (simple_cnn, 2 epoch(s)" in job.error
    assert "TRANSFERLAB_JOB_TIME_LIMIT_MIN_SECONDS=0.001" in job.error and "Not retried" in job.error
    assert rows(sessions, Checkpoint, job_id) == 0


def test_a_job_failed_for_its_time_limit_is_not_retried(tiny_limit, settings, sessions, make_job, enqueued):
    job_id = make_job(spec=pretrain_spec())
    assert tasks.run_job(job_id) == "failed"
    with sessions() as session:
        reaped = reap(session, lease_seconds=0.001, max_attempts=3, enqueue=enqueued.append)
        again = claim_job(session, job_id, worker="other:1", device="cpu", lease_seconds=2, max_attempts=3)
    assert (reaped.requeued, reaped.resent, enqueued) == ([], [], [])
    assert again.lease is None and tasks.run_job(job_id) == "finished"
