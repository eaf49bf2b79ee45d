"""The reaper: running jobs whose heartbeat went silent are re-queued, or failed after max_attempts."""

from __future__ import annotations

import threading

import pytest

from service.models import JobStatus
from worker.recovery import recover_orphaned_jobs, start_reaper


def reap(sessions, settings, enqueue) -> list[str]:
    with sessions() as session:
        return recover_orphaned_jobs(session, settings, enqueue=enqueue)


def test_a_stale_running_job_is_queued_again_and_re_enqueued(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.running, heartbeat_age=30, attempts=1, worker="dead:1")
    sent: list[str] = []
    assert reap(sessions, settings, sent.append) == [job_id]
    job = job_reader(job_id)
    assert sent == [job_id]
    assert (job.status, job.attempts) == ("queued", 1)  # the next claim counts the next start


def test_a_live_running_job_is_left_alone(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.running, heartbeat_age=0.1, attempts=1, worker="live:1")
    sent: list[str] = []
    assert reap(sessions, settings, sent.append) == []
    assert sent == [] and job_reader(job_id).status == "running"


def test_a_job_whose_worker_died_max_attempts_times_is_failed_with_the_reason(
    settings, sessions, make_job, job_reader
):
    job_id = make_job(JobStatus.running, heartbeat_age=30, attempts=3, worker="gpu-7:4242")
    sent: list[str] = []
    assert reap(sessions, settings, sent.append) == [job_id]
    job = job_reader(job_id)
    assert sent == []
    assert job.status == "failed" and job.finished_at is not None
    assert "worker lost 3 times" in job.error and "last worker gpu-7:4242" in job.error


def test_an_orphaned_job_with_a_cancel_request_ends_cancelled(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.running, heartbeat_age=30, attempts=1, cancel_requested=True)
    sent: list[str] = []
    reap(sessions, settings, sent.append)
    assert sent == [] and job_reader(job_id).status == "cancelled"


def test_queued_and_finished_jobs_are_not_touched(settings, sessions, make_job, job_reader):
    ids = [make_job(status) for status in ("queued", "succeeded", "failed", "cancelled")]
    assert reap(sessions, settings, lambda _id: None) == []
    assert [job_reader(i).status for i in ids] == ["queued", "succeeded", "failed", "cancelled"]


def test_when_the_broker_is_down_the_job_stays_running_for_the_next_pass(
    settings, sessions, make_job, job_reader
):
    job_id = make_job(JobStatus.running, heartbeat_age=30, attempts=1)

    def broker_down(_job_id: str) -> None:
        raise ConnectionError("redis: connection refused")

    assert reap(sessions, settings, broker_down) == []
    assert job_reader(job_id).status == "running"  # never queued without a message
    sent: list[str] = []
    assert reap(sessions, settings, sent.append) == [job_id]
    assert job_reader(job_id).status == "queued"


def test_two_reapers_racing_re_enqueue_each_job_once(settings, sessions, make_job):
    ids = [make_job(JobStatus.running, heartbeat_age=30, attempts=1) for _ in range(10)]
    sent: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(3)

    def enqueue(job_id: str) -> None:
        with lock:
            sent.append(job_id)

    def reaper() -> None:
        start.wait()
        reap(sessions, settings, enqueue)

    threads = [threading.Thread(target=reaper) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sent) == sorted(ids)


def test_the_reaper_thread_runs_until_stopped(settings, sessions, make_job, job_reader, enqueued):
    job_id = make_job(JobStatus.running, heartbeat_age=30, attempts=1)
    stop = start_reaper(settings, sessions, interval_seconds=0.05)
    try:
        for _ in range(100):
            if job_reader(job_id).status == "queued":
                break
            threading.Event().wait(0.05)
    finally:
        stop.set()
    assert job_reader(job_id).status == "queued" and enqueued == [job_id]


@pytest.mark.parametrize("attempts, status", [(2, "queued"), (3, "failed")])
def test_the_attempt_limit_comes_from_settings(settings, sessions, make_job, job_reader, attempts, status):
    job_id = make_job(JobStatus.running, heartbeat_age=30, attempts=attempts)
    reap(sessions, settings, lambda _id: None)
    assert job_reader(job_id).status == status
