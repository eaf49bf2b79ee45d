"""Claiming a job: one conditional UPDATE decides who runs it, so duplicate deliveries are harmless."""

from __future__ import annotations

import threading
import time

from sqlalchemy import update

from service.models import Job, JobStatus
from worker.lifecycle import ClaimOutcome, Heartbeat, StopPoller, claim_job, release_job, touch


def claim(sessions, settings, job_id, worker="host:1"):
    with sessions() as session:
        return claim_job(
            session,
            job_id,
            worker=worker,
            device="cpu",
            stale_after_seconds=settings.stale_after_seconds,
            max_attempts=settings.max_attempts,
        )


def test_claim_moves_a_queued_job_to_running_and_counts_the_attempt(settings, sessions, make_job, job_reader):
    job_id = make_job()
    result = claim(sessions, settings, job_id)
    job = job_reader(job_id)
    assert result.outcome == ClaimOutcome.claimed
    assert (job.status, job.attempts, job.worker, job.device) == ("running", 1, "host:1", "cpu")
    assert job.started_at is not None and job.heartbeat_at is not None


def test_a_second_delivery_of_a_claimed_job_does_nothing(settings, sessions, make_job, job_reader):
    job_id = make_job()
    claim(sessions, settings, job_id, worker="host:1")
    result = claim(sessions, settings, job_id, worker="host:2")
    assert result.outcome == ClaimOutcome.held
    job = job_reader(job_id)
    assert (job.worker, job.attempts) == ("host:1", 1)


def test_claim_skips_a_cancelled_job(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.cancelled, cancel_requested=True)
    assert claim(sessions, settings, job_id).outcome == ClaimOutcome.finished
    assert job_reader(job_id).attempts == 0


def test_claim_skips_a_finished_job(settings, sessions, make_job, job_reader):
    for status in (JobStatus.succeeded, JobStatus.failed):
        job_id = make_job(status, attempts=1)
        assert claim(sessions, settings, job_id).outcome == ClaimOutcome.finished
        assert job_reader(job_id).status == status


def test_claim_leaves_a_job_with_a_live_heartbeat_alone(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.running, heartbeat_age=0.1, attempts=1, worker="other:9")
    assert claim(sessions, settings, job_id).outcome == ClaimOutcome.held
    assert job_reader(job_id).worker == "other:9"


def test_claim_takes_over_a_running_job_whose_heartbeat_is_stale(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.running, heartbeat_age=30, attempts=1, worker="dead:9")
    result = claim(sessions, settings, job_id)
    job = job_reader(job_id)
    assert result.outcome == ClaimOutcome.claimed
    assert (job.status, job.attempts, job.worker) == ("running", 2, "host:1")


def test_claim_fails_a_job_that_used_up_its_attempts(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.queued, attempts=3, worker="dead:9")
    result = claim(sessions, settings, job_id)
    job = job_reader(job_id)
    assert result.outcome == ClaimOutcome.exhausted
    assert job.status == "failed" and job.attempts == 3 and job.finished_at is not None
    assert "worker lost 3 times" in job.error and "last worker dead:9" in job.error


def test_claim_cancels_a_queued_job_whose_cancel_was_requested(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.queued, cancel_requested=True)
    assert claim(sessions, settings, job_id).outcome == ClaimOutcome.cancelled
    assert job_reader(job_id).status == "cancelled"


def test_claim_of_an_unknown_job_is_a_no_op(settings, sessions):
    assert claim(sessions, settings, "0" * 32).outcome == ClaimOutcome.missing


def test_only_one_of_many_concurrent_claims_wins(settings, sessions, make_job, job_reader):
    job_id = make_job()
    outcomes: list[ClaimOutcome] = []
    start = threading.Barrier(6)

    def contender(n: int) -> None:
        start.wait()
        outcomes.append(claim(sessions, settings, job_id, worker=f"host:{n}").outcome)

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count(ClaimOutcome.claimed) == 1
    assert job_reader(job_id).attempts == 1


def test_release_puts_the_job_back_and_does_not_count_the_start(settings, sessions, make_job, job_reader):
    job_id = make_job()
    claim(sessions, settings, job_id)
    with sessions() as session:
        assert release_job(session, job_id, "host:1")
    job = job_reader(job_id)
    assert (job.status, job.attempts, job.heartbeat_at) == ("queued", 0, None)


def test_writes_from_a_worker_that_lost_the_job_change_nothing(settings, sessions, make_job, job_reader):
    job_id = make_job()
    claim(sessions, settings, job_id, worker="host:1")
    with sessions() as session:
        assert not touch(session, job_id, "host:2", progress=0.5)
    assert job_reader(job_id).progress == 0.0


def test_heartbeat_stamps_the_job_while_it_runs(settings, sessions, make_job, job_reader):
    job_id = make_job()
    claim(sessions, settings, job_id)
    first = job_reader(job_id).heartbeat_at
    with Heartbeat(sessions, job_id, "host:1", interval_seconds=0.05) as heartbeat:
        time.sleep(0.3)
    assert job_reader(job_id).heartbeat_at > first
    assert not heartbeat.lost.is_set()


def test_heartbeat_notices_when_the_job_was_taken_away(settings, sessions, make_job):
    job_id = make_job()
    claim(sessions, settings, job_id, worker="host:1")
    with sessions() as session:  # the reaper re-queued it and host:2 claimed it
        session.execute(update(Job).where(Job.id == job_id).values(worker="host:2"))
        session.commit()
    with Heartbeat(sessions, job_id, "host:1", interval_seconds=0.05) as heartbeat:
        assert heartbeat.lost.wait(2)


def test_stop_poller_reports_a_cancel_request(settings, sessions, make_job):
    job_id = make_job()
    claim(sessions, settings, job_id)
    poller = StopPoller(sessions, job_id, "host:1", interval_seconds=0)
    assert poller() is False
    with sessions() as session:
        touch(session, job_id, "host:1", cancel_requested=True)
    assert poller() is True and poller.reason == "cancel"


def test_stop_poller_reads_the_database_at_most_once_per_interval(settings, sessions, make_job):
    job_id = make_job()
    claim(sessions, settings, job_id)
    poller = StopPoller(sessions, job_id, "host:1", interval_seconds=60)
    assert poller() is False
    with sessions() as session:
        touch(session, job_id, "host:1", cancel_requested=True)
    assert poller() is False  # not re-read within the interval: per-batch calls stay cheap


def test_stop_poller_tells_a_lost_job_and_a_shutdown_apart_from_a_cancel(settings, sessions, make_job):
    job_id = make_job()
    claim(sessions, settings, job_id, worker="host:1")
    lost = StopPoller(sessions, job_id, "host:2", interval_seconds=0)
    assert lost() and lost.reason == "lost"
    shutdown = threading.Event()
    shutdown.set()
    poller = StopPoller(sessions, job_id, "host:1", interval_seconds=0, shutdown=shutdown)
    assert poller() and poller.reason == "shutdown"
