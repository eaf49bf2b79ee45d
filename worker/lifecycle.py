"""A job's life in the database, seen from the worker: claim, heartbeat, poll for cancel, finish.

Every write is one conditional UPDATE, so two workers (or a worker and the reaper) racing for the
same row cannot both win: a claim succeeds only on a queued job or on a running one whose heartbeat
is stale, and every later write names the worker that holds the job. Times come from the worker's
clock (UTC); across machines keep clocks in sync (NTP) to well within `stale_after_seconds`.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from service.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def stale_cutoff(stale_after_seconds: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(seconds=stale_after_seconds)


def is_claimable(cutoff: datetime):
    """Queued, or running with a heartbeat older than `cutoff` (its worker is presumed dead)."""
    return or_(
        Job.status == JobStatus.queued,
        and_(
            Job.status == JobStatus.running,
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
        ),
    )


class ClaimOutcome(enum.StrEnum):
    claimed = "claimed"  # this worker now holds the job and must run it
    missing = "missing"  # no such job
    finished = "finished"  # succeeded, failed or cancelled already: a duplicate delivery
    held = "held"  # running under a live worker: a duplicate delivery
    cancelled = "cancelled"  # cancel was requested before the job started; now marked cancelled
    exhausted = "exhausted"  # started max_attempts times already; now marked failed


@dataclass
class Claim:
    outcome: ClaimOutcome
    attempts: int = 0


def claim_job(
    session: Session,
    job_id: str,
    *,
    worker: str,
    device: str,
    stale_after_seconds: float,
    max_attempts: int,
    now: datetime | None = None,
) -> Claim:
    """Take the job if nobody live holds it. Commits. Safe to call for every (duplicate) delivery.

    UPDATE jobs SET status='running', attempts=attempts+1, worker=?, device=?, heartbeat_at=now, ...
    WHERE id=? AND attempts < max_attempts AND NOT cancel_requested
      AND (status='queued' OR (status='running' AND heartbeat_at < now - stale_after))
    """
    now = now or utcnow()
    claimable = is_claimable(stale_cutoff(stale_after_seconds, now))
    claimed = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.attempts < max_attempts,
            Job.cancel_requested.is_(False),
            claimable,
        )
        .values(
            status=JobStatus.running,
            attempts=Job.attempts + 1,
            worker=worker,
            device=device,
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            error=None,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    row = session.execute(
        select(Job.status, Job.attempts, Job.worker, Job.cancel_requested).where(Job.id == job_id)
    ).one_or_none()
    if row is None:
        return Claim(ClaimOutcome.missing)
    if claimed == 1:
        return Claim(ClaimOutcome.claimed, row.attempts)
    if row.status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
        return Claim(ClaimOutcome.finished, row.attempts)

    # Not claimed and not finished: either live elsewhere, or claimable but refused above.
    if row.cancel_requested:
        done = _finish_if_claimable(session, job_id, claimable, now, status=JobStatus.cancelled, error=None)
        return Claim(ClaimOutcome.cancelled if done else ClaimOutcome.held, row.attempts)
    if row.attempts >= max_attempts:
        reason = lost_reason(row.attempts, row.worker, stale_after_seconds, max_attempts)
        done = _finish_if_claimable(session, job_id, claimable, now, status=JobStatus.failed, error=reason)
        return Claim(ClaimOutcome.exhausted if done else ClaimOutcome.held, row.attempts)
    return Claim(ClaimOutcome.held, row.attempts)


def lost_reason(attempts: int, worker: str | None, stale_after_seconds: float, max_attempts: int) -> str:
    """The error of a job whose worker kept dying: what happened, and what to try."""
    return (
        f"worker lost {attempts} times (no heartbeat for {stale_after_seconds:g} s); "
        f"last worker {worker or '?'}; gave up after TRANSFERLAB_MAX_ATTEMPTS={max_attempts}. "
        "Look for out-of-memory kills in the worker's log, or resubmit with a smaller batch_size "
        "or image_size."
    )


def _finish_if_claimable(session, job_id, claimable, now, *, status, error) -> bool:
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, claimable)
        .values(status=status, error=error, finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return done == 1


def _held_by(job_id: str, worker: str):
    return and_(Job.id == job_id, Job.status == JobStatus.running, Job.worker == worker)


def touch(session: Session, job_id: str, worker: str, *, commit: bool = True, **values) -> bool:
    """Update the job if `worker` still holds it. False means the job was taken away (reclaimed
    after this worker went stale, failed by the reaper, or deleted)."""
    done = session.execute(
        update(Job)
        .where(_held_by(job_id, worker))
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if commit:
        session.commit()
    return done == 1


def finish_job(
    session: Session,
    job_id: str,
    worker: str,
    status: JobStatus,
    *,
    error: str | None = None,
    **values,
) -> bool:
    """Move a held job to a terminal status (succeeded, failed, cancelled). Commits."""
    if status == JobStatus.succeeded:
        values.setdefault("progress", 1.0)
    return touch(session, job_id, worker, status=status, error=error, finished_at=utcnow(), **values)


def release_job(session: Session, job_id: str, worker: str, *, commit: bool = True) -> bool:
    """Give a held job back to the queue (worker shutting down); the start does not count."""
    return touch(
        session,
        job_id,
        worker,
        commit=commit,
        status=JobStatus.queued,
        attempts=Job.attempts - 1,
        heartbeat_at=None,
    )


class Heartbeat:
    """A daemon thread that stamps `heartbeat_at` every `interval_seconds` while the job runs.

    `lost` is set when the stamp finds the job no longer held by this worker; the run should stop.
    """

    def __init__(self, session_factory, job_id: str, worker: str, interval_seconds: float):
        self._session_factory = session_factory
        self._job_id = job_id
        self._worker = worker
        self._interval = interval_seconds
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop stamping (before the final write, so a last beat never races the finish)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._session_factory() as session:
                    alive = touch(session, self._job_id, self._worker, heartbeat_at=utcnow())
                    if not alive and not self._stop.is_set():
                        log.warning(
                            "job %s is no longer held by %s; stopping it",
                            self._job_id,
                            self._worker,
                        )
                        self.lost.set()
                        return
            except Exception:  # a database blip must not kill the heartbeat; the next beat retries
                log.exception("heartbeat for job %s failed", self._job_id)


class StopPoller:
    """should_stop for the engine: reads `cancel_requested` at most every `interval_seconds`.

    Stops for three reasons, told apart by `reason`: "cancel" (the API asked), "lost" (another
    worker or the reaper owns the job now) or "shutdown" (this worker is shutting down).
    """

    def __init__(
        self,
        session_factory,
        job_id: str,
        worker: str,
        *,
        interval_seconds: float = 1.0,
        lost: threading.Event | None = None,
        shutdown: threading.Event | None = None,
    ):
        self._session_factory = session_factory
        self._job_id = job_id
        self._worker = worker
        self._interval = interval_seconds
        self._lost = lost or threading.Event()
        self._shutdown = shutdown or threading.Event()
        self._next_poll = 0.0
        self.reason: str | None = None

    def __call__(self) -> bool:
        if self.reason:
            return True
        if self._lost.is_set():
            self.reason = "lost"
        elif self._shutdown.is_set():
            self.reason = "shutdown"
        elif time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self._interval
            self.reason = self._poll()
        return self.reason is not None

    def _poll(self) -> str | None:
        try:
            with self._session_factory() as session:
                row = session.execute(
                    select(Job.status, Job.worker, Job.cancel_requested).where(Job.id == self._job_id)
                ).one_or_none()
        except Exception:
            log.exception("cancel poll for job %s failed", self._job_id)
            return None
        if row is None or row.status != JobStatus.running or row.worker != self._worker:
            return "cancel" if row is not None and row.status == JobStatus.cancelled else "lost"
        return "cancel" if row.cancel_requested else None
