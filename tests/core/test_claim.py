"""Claiming a job: one conditional UPDATE decides who runs it, so duplicate deliveries are harmless;
every later write names the lease (worker and attempt) that holds it."""

from __future__ import annotations

import threading
from datetime import timedelta

from core.jobs import ClaimOutcome, Lease, claim_job, record, release, renew_lease
from core.models import JobStatus


def claim(sessions, settings, job_id, worker="host:1"):
    with sessions() as session:
        return claim_job(
            session,
            job_id,
            worker=worker,
            device="cpu",
            lease_seconds=settings.stale_after_seconds,
            max_attempts=settings.max_attempts,
        )


def test_claim_moves_a_queued_job_to_running_and_counts_the_attempt(settings, sessions, make_job, job_reader):
    job_id = make_job()
    result = claim(sessions, settings, job_id)
    job = job_reader(job_id)
    assert result.outcome == ClaimOutcome.claimed
    assert (job.status, job.attempts, job.worker, job.device) == ("running", 1, "host:1", "cpu")
    assert job.started_at is not None and job.heartbeat_at is not None
    assert result.lease == Lease(job_id, "host:1", 1)
    assert job.lease_expires_at - job.started_at == timedelta(seconds=settings.stale_after_seconds)


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


def test_claim_leaves_a_job_with_a_live_lease_alone(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.running, heartbeat_age=0.1, attempts=1, worker="other:9")
    assert claim(sessions, settings, job_id).outcome == ClaimOutcome.held
    assert job_reader(job_id).worker == "other:9"


def test_claim_takes_over_a_running_job_whose_lease_ran_out(settings, sessions, make_job, job_reader):
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
    assert "lease of each of its 3 attempt(s) ran out" in job.error and "last held by dead:9" in job.error
    assert "out-of-memory" not in job.error  # what is known, not a guess


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
    sent: list[str] = []
    with sessions() as session:
        assert release(session, Lease(job_id, "host:1", 1), sent.append)
    job = job_reader(job_id)
    assert (job.status, job.attempts, job.heartbeat_at, job.lease_expires_at) == ("queued", 0, None, None)
    assert sent == [job_id]  # a queued job always has a message


def test_writes_from_a_worker_that_lost_the_job_change_nothing(settings, sessions, make_job, job_reader):
    job_id = make_job()
    claim(sessions, settings, job_id, worker="host:1")
    with sessions() as session:
        assert not record(session, Lease(job_id, "host:2", 1), progress=0.5)
        assert not record(
            session, Lease(job_id, "host:1", 2), progress=0.5
        )  # the same worker, an old attempt
        session.commit()
    assert job_reader(job_id).progress == 0.0


def test_processes_with_different_stale_settings_agree_through_the_lease(
    settings, sessions, make_job, job_reader
):
    # A worker renews with its own 60 s window; a claimer whose own setting is 3 s still sees it held.
    job_id = make_job()
    with sessions() as session:
        claim = claim_job(session, job_id, worker="slow:1", device="cpu", lease_seconds=60, max_attempts=3)
        assert renew_lease(session, claim.lease, lease_seconds=60)
        other = claim_job(
            session, job_id, worker="fast:2", device="cpu", lease_seconds=3, max_attempts=3,
            now=job_reader(job_id).heartbeat_at + timedelta(seconds=20),
        )  # fmt: skip
    assert other.outcome == ClaimOutcome.held and job_reader(job_id).attempts == 1


def test_a_renewal_by_a_lease_that_was_taken_over_fails(settings, sessions, make_job, job_reader):
    job_id = make_job(JobStatus.running, heartbeat_age=30, attempts=1, worker="old:1")
    claim(sessions, settings, job_id, worker="new:2")
    with sessions() as session:
        assert not renew_lease(session, Lease(job_id, "old:1", 1), lease_seconds=60)
    assert job_reader(job_id).worker == "new:2"
