"""The reaper: running jobs whose lease ran out are queued again (or failed after max_attempts), and
queued jobs whose message was lost are sent again."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from core.jobs import MAX_RESEND_BACKOFF, resend_due
from core.models import Job, JobStatus, utcnow
from core.recovery import recover
from worker.reaper import start_reaper


def reap(sessions, settings, enqueue) -> list[str]:
    """One pass; the ids it re-queued or ended (running jobs whose lease ran out)."""
    with sessions() as session:
        reaped = recover(session, settings, enqueue)
        return reaped.requeued + reaped.ended


def resent(sessions, settings, enqueue, now=None) -> list[str]:
    from core.jobs import reap as reap_jobs

    with sessions() as session:
        return reap_jobs(
            session, lease_seconds=settings.stale_after_seconds, max_attempts=settings.max_attempts,
            enqueue=enqueue, now=now,
        ).resent  # fmt: skip


def age_sent_at(sessions, job_id, seconds):
    with sessions() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(sent_at=utcnow() - timedelta(seconds=seconds))
        )
        session.commit()


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
    assert "ran out before the job ended" in job.error and "last held by gpu-7:4242" in job.error


def test_an_orphaned_job_with_a_cancel_request_ends_cancelled(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.running, heartbeat_age=30, attempts=1, cancel_requested=True)
    sent: list[str] = []
    reap(sessions, settings, sent.append)
    assert sent == [] and job_reader(job_id).status == "cancelled"


def test_freshly_queued_and_finished_jobs_are_not_touched(settings, sessions, make_job, job_reader):
    ids = [
        make_job(status, sent_at=utcnow(), send_count=1)
        for status in ("queued", "succeeded", "failed", "cancelled")
    ]
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
    stop = start_reaper(settings, sessions, enqueued.append, interval_seconds=0.05)
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


def test_a_queued_job_unclaimed_for_the_stale_window_is_sent_again(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.queued, sent_at=utcnow(), send_count=1)
    sent: list[str] = []
    assert resent(sessions, settings, sent.append) == []  # just sent: a worker may be on its way
    age_sent_at(sessions, job_id, settings.stale_after_seconds + 1)
    assert resent(sessions, settings, sent.append) == [job_id] and sent == [job_id]
    job = job_reader(job_id)
    assert (job.status, job.send_count) == ("queued", 2)
    assert resent(sessions, settings, sent.append) == []  # one send per due time, not one per pass


def test_resends_back_off_so_a_long_queue_does_not_fill_the_broker():
    now = utcnow()
    window = 60.0
    assert resend_due(now - timedelta(seconds=61), 1, window, now)
    assert not resend_due(now - timedelta(seconds=61), 2, window, now)  # second resend waits 2 windows
    assert resend_due(now - timedelta(seconds=121), 2, window, now)
    cap = window * MAX_RESEND_BACKOFF
    assert resend_due(now - timedelta(seconds=cap + 1), 40, window, now)  # never longer than the cap


def test_a_queued_job_the_broker_refuses_to_resend_is_tried_again_next_pass(
    settings, sessions, make_job, job_reader
):
    job_id = make_job(JobStatus.queued, sent_at=utcnow() - timedelta(seconds=30), send_count=1)

    def broker_down(_job_id: str) -> None:
        raise ConnectionError("redis: connection refused")

    assert resent(sessions, settings, broker_down) == []
    assert job_reader(job_id).send_count == 1
    assert resent(sessions, settings, lambda _id: None) == [job_id]


def test_a_job_queued_before_sent_at_existed_counts_from_its_creation(settings, sessions, make_job):
    job_id = make_job(JobStatus.queued, created_at=utcnow() - timedelta(seconds=30))
    assert resent(sessions, settings, lambda _id: None) == [job_id]
