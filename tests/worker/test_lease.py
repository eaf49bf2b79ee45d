"""The lease thread: it renews the lease, and tells the run to stop when the job is cancelled, taken
over, or its lease would have run out without a renewal."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from sqlalchemy import update

from core.jobs import Lease, claim_job
from core.models import Job
from worker.lease import LeaseKeeper, StopReason


def claimed(sessions, make_job, lease_seconds=2.0) -> Lease:
    job_id = make_job()
    with sessions() as session:
        claim = claim_job(
            session, job_id, worker="me:1", device="cpu", lease_seconds=lease_seconds, max_attempts=3
        )
    assert claim.lease is not None
    return claim.lease


def keeper(sessions, lease, **options) -> LeaseKeeper:
    options = {"lease_seconds": 2.0, "heartbeat_seconds": 0.05, "poll_seconds": 0.02, **options}
    return LeaseKeeper(sessions, lease, **options)


def wait_for(predicate, seconds=3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def set_values(sessions, job_id, **values) -> None:
    with sessions() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))
        session.commit()


def test_the_lease_is_renewed_while_the_job_runs(settings, sessions, make_job, job_reader):
    lease = claimed(sessions, make_job)
    first = job_reader(lease.job_id).lease_expires_at
    with keeper(sessions, lease) as k:
        assert wait_for(lambda: job_reader(lease.job_id).lease_expires_at > first)
        assert not k.should_stop()


def test_a_cancel_request_stops_the_run_and_the_lease_is_still_renewed(
    settings, sessions, make_job, job_reader
):
    lease = claimed(sessions, make_job)
    with keeper(sessions, lease) as k:
        set_values(sessions, lease.job_id, cancel_requested=True)
        assert wait_for(k.should_stop) and k.reason == StopReason.cancel
        renewed = job_reader(lease.job_id).lease_expires_at
        assert wait_for(lambda: job_reader(lease.job_id).lease_expires_at > renewed)


def test_a_take_over_is_noticed_as_lost(settings, sessions, make_job):
    lease = claimed(sessions, make_job)
    with keeper(sessions, lease, heartbeat_seconds=60) as k:  # noticed by the poll, not the renewal
        set_values(sessions, lease.job_id, worker="other:2", attempts=2)
        assert wait_for(k.should_stop) and k.reason == StopReason.lost


def test_a_lease_that_could_not_be_renewed_in_time_counts_as_lost(settings, sessions, make_job):
    lease = claimed(sessions, make_job)

    @contextmanager
    def database_down():
        raise ConnectionError("database unreachable")
        yield

    with keeper(database_down, lease, lease_seconds=0.3) as k:
        assert not k.should_stop()
        assert wait_for(k.should_stop) and k.reason == StopReason.lost


def test_a_shutdown_is_its_own_reason(settings, sessions, make_job):
    lease = claimed(sessions, make_job)
    shutdown = threading.Event()
    with keeper(sessions, lease, shutdown=shutdown) as k:
        assert not k.should_stop()
        shutdown.set()
        assert k.should_stop() and k.reason == StopReason.shutdown
