"""Every transition of a job row, each one conditional UPDATE named for what it does.

    job_ids, lost = create_and_send(session, [job], enqueue)   # API and orchestration: insert, send
    claim = claim_job(session, job_id, worker=..., device=..., lease_seconds=60, max_attempts=3)
    renew_lease(session, claim.lease, lease_seconds=60)        # the worker's heartbeat
    finish(session, claim.lease, JobStatus.succeeded)          # the holder's last write
    cancel(session, job_id)                                     # POST /jobs/{id}/cancel
    delete_ended(session, job_ids)                              # DELETE /jobs/{id} (core/deletion.py)
    reap(session, lease_seconds=60, max_attempts=3, enqueue=...)   # expired leases, stranded messages

`TRANSITIONS` below is the whole state machine: from which statuses, to which, who makes the move and
what the UPDATE's WHERE carries besides the status. `_apply` is the only code that writes `status`, and
it refuses a move the table does not list, so the table cannot drift from what the code does.

A running job is held through a lease: `(worker, attempt)` and `lease_expires_at`. The holder renews
the lease every heartbeat to now + its own stale window; claim and reaper compare the column with the
clock. Processes with different settings therefore agree on who holds a job, and a worker whose lease
was taken over can write nothing more: every holder write names its worker and attempt. Times come
from each process's clock (UTC); keep clocks in sync (NTP) to well within the stale window.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from core.models import (
    TERMINAL_STATUSES,
    Artifact,
    Checkpoint,
    Cost,
    EpochMetric,
    Evaluation,
    Job,
    JobStatus,
    utcnow,
)

log = logging.getLogger(__name__)

Enqueue = Callable[[str], None]
ERROR_CHARS = 4000  # longest error text kept on a row
# A queued job unclaimed for the stale window is sent again; each further send waits twice as long,
# up to this many stale windows (about an hour at the default 60 s): a job that waits behind a long
# queue collects a handful of duplicate messages, not one per reaper pass.
MAX_RESEND_BACKOFF = 64

Q, R = JobStatus.queued, JobStatus.running
S, F, C = JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled


class Transition(enum.StrEnum):
    create = "create"
    send_failed = "send_failed"
    resend = "resend"
    claim = "claim"
    take_over = "take_over"
    renew_lease = "renew_lease"
    record = "record"
    succeed = "succeed"
    fail = "fail"
    stop_cancelled = "stop_cancelled"
    release = "release"
    cancel_queued = "cancel_queued"
    request_cancel = "request_cancel"
    refuse_cancelled = "refuse_cancelled"
    refuse_exhausted = "refuse_exhausted"
    reap_requeue = "reap_requeue"
    reap_cancelled = "reap_cancelled"
    reap_exhausted = "reap_exhausted"
    delete = "delete"


@dataclass(frozen=True)
class Rule:
    sources: frozenset[JobStatus | None]  # None: the row does not exist yet
    target: JobStatus | None  # None: the row is deleted
    actor: str
    condition: str  # what the UPDATE's WHERE carries besides the status, for people (docs/architecture.md)


def _rule(sources: Iterable[JobStatus | None], target: JobStatus | None, actor: str, condition: str) -> Rule:
    return Rule(frozenset(sources), target, actor, condition)


HELD = "held: worker and attempt are the caller's"
EXPIRED = "lease_expires_at is null or past"
TRANSITIONS: dict[Transition, Rule] = {
    Transition.create: _rule([None], Q, "API, orchestration", "insert; sent_at = now"),
    Transition.send_failed: _rule([Q], F, "API, orchestration, reaper", "the broker refused the message"),
    Transition.resend: _rule([Q], Q, "reaper", "sent_at and send_count unchanged since read; back-off"),
    Transition.claim: _rule([Q], R, "worker", "attempts < max_attempts, not cancel_requested"),
    Transition.take_over: _rule([R], R, "worker", f"{EXPIRED}, attempts < max, not cancel_requested"),
    Transition.renew_lease: _rule([R], R, "worker (heartbeat)", HELD),
    Transition.record: _rule([R], R, "worker (progress, epochs)", HELD),
    Transition.succeed: _rule([R], S, "worker", f"{HELD}, not cancel_requested"),
    Transition.fail: _rule([R], F, "worker", HELD),
    Transition.stop_cancelled: _rule([R], C, "worker", f"{HELD} (after cancel_requested)"),
    Transition.release: _rule([R], Q, "worker (warm shutdown)", f"{HELD}; attempts - 1"),
    Transition.cancel_queued: _rule([Q], C, "API", "none"),
    Transition.request_cancel: _rule([R], R, "API", "sets cancel_requested"),
    Transition.refuse_cancelled: _rule([Q, R], C, "worker (claim)", f"cancel_requested; running: {EXPIRED}"),
    Transition.refuse_exhausted: _rule([Q, R], F, "worker (claim)", f"attempts >= max; running: {EXPIRED}"),
    Transition.reap_requeue: _rule([R], Q, "reaper", f"{EXPIRED}, attempts unchanged, < max; then sent"),
    Transition.reap_cancelled: _rule([R], C, "reaper", f"{EXPIRED}, cancel_requested"),
    Transition.reap_exhausted: _rule([R], F, "reaper", f"{EXPIRED}, attempts >= max"),
    Transition.delete: _rule(
        [S, F, C], None, "API (DELETE)", "ended; its epochs, evaluation, cost, checkpoint and plots with it"
    ),
}


class TransitionRefused(ValueError):
    """A transition asked from a status the table does not allow (a programming error)."""


def allowed(transition: Transition, status: JobStatus | None) -> bool:
    return status in TRANSITIONS[transition].sources


def _apply(
    session: Session,
    job_id: str,
    transition: Transition,
    *conditions: ColumnElement[bool],
    from_status: Iterable[JobStatus] | None = None,
    **values: Any,
) -> bool:
    """UPDATE jobs SET status=<target>, ... WHERE id=? AND status IN <sources> AND <conditions>.
    True when the row moved. Leaves committing to the caller."""
    rule = TRANSITIONS[transition]
    if rule.target is None:
        raise TransitionRefused(f"{transition} deletes the row: use delete_ended")
    sources = set(from_status) if from_status is not None else {s for s in rule.sources if s is not None}
    if not sources or not sources <= rule.sources:
        raise TransitionRefused(f"{transition}: from {sorted(map(str, sources))} is not in the table")
    if rule.target in TERMINAL_STATUSES:
        values.setdefault("finished_at", utcnow())
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(sources), *conditions)
        .values(status=rule.target, **values)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount == 1


def lease_expired(now: datetime) -> ColumnElement[bool]:
    """The one stale predicate: the lease's end is unknown or past."""
    return or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)


# ---------------------------------------------------------------- create and send


def send(session: Session, job_ids: Iterable[str], enqueue: Enqueue) -> list[str]:
    """Send each committed queued job; one the broker refuses is failed at once (never left queued
    with no message). Commits each failure. Returns the ids that could not be sent."""
    lost: list[str] = []
    for job_id in job_ids:
        try:
            enqueue(job_id)
        except Exception as exc:
            reason = f"could not be queued: {type(exc).__name__}: {exc}"
            log.error("job %s %s", job_id, reason)
            _apply(session, job_id, Transition.send_failed, error=reason[:ERROR_CHARS])
            session.commit()
            lost.append(job_id)
    return lost


def create_and_send(session: Session, jobs: list[Job], enqueue: Enqueue) -> list[str]:
    """Insert the jobs as queued, commit, then send each. Returns the ids the broker refused (those
    are failed now). The message goes out after the commit, so a worker never receives an id that is
    not in the database yet; a crash between the two is healed by the reaper's resend."""
    now = utcnow()
    for job in jobs:
        job.status = JobStatus.queued
        job.sent_at = now
        job.send_count = 1
    session.add_all(jobs)
    session.commit()
    lost = send(session, [job.id for job in jobs], enqueue)
    for job in jobs:
        if job.id in lost:
            session.refresh(job)  # the caller's objects show the failure the UPDATE wrote
    return lost


# ---------------------------------------------------------------- the worker's side


@dataclass(frozen=True)
class Lease:
    """What a holder names in every write: the job, the worker, and which of its attempts this is."""

    job_id: str
    worker: str
    attempt: int


def _held(lease: Lease) -> ColumnElement[bool]:
    return and_(Job.worker == lease.worker, Job.attempts == lease.attempt)


class ClaimOutcome(enum.StrEnum):
    claimed = "claimed"  # this worker now holds the job and must run it
    missing = "missing"  # no such job
    finished = "finished"  # succeeded, failed or cancelled already: a duplicate delivery
    held = "held"  # running under a live lease: a duplicate delivery
    cancelled = "cancelled"  # cancel was requested before the job started; now marked cancelled
    exhausted = "exhausted"  # started max_attempts times already; now marked failed


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    attempts: int = 0
    lease: Lease | None = None


def claim_job(
    session: Session,
    job_id: str,
    *,
    worker: str,
    device: str,
    lease_seconds: float,
    max_attempts: int,
    now: datetime | None = None,
) -> Claim:
    """Take the job if nobody holds a live lease on it. Commits. Safe for every (duplicate) delivery:
    the caller acknowledges the message whatever the outcome."""
    now = now or utcnow()
    startable = (Job.attempts < max_attempts, Job.cancel_requested.is_(False))
    values: dict[str, Any] = dict(
        attempts=Job.attempts + 1,
        worker=worker,
        device=device,
        started_at=now,
        heartbeat_at=now,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        finished_at=None,
        error=None,
    )
    won = _apply(session, job_id, Transition.claim, *startable, **values) or _apply(
        session, job_id, Transition.take_over, lease_expired(now), *startable, **values
    )
    session.commit()
    row = session.execute(
        select(Job.status, Job.attempts, Job.worker, Job.cancel_requested, Job.lease_expires_at).where(
            Job.id == job_id
        )
    ).one_or_none()
    if row is None:
        return Claim(ClaimOutcome.missing)
    if won:
        return Claim(ClaimOutcome.claimed, row.attempts, Lease(job_id, worker, row.attempts))
    if row.status in TERMINAL_STATUSES:
        return Claim(ClaimOutcome.finished, row.attempts)
    # Not claimed and not ended: either a live lease elsewhere, or startable rows refused above.
    free = or_(Job.status == JobStatus.queued, lease_expired(now))
    if row.cancel_requested:
        done = _apply(session, job_id, Transition.refuse_cancelled, free)
        session.commit()
        return Claim(ClaimOutcome.cancelled if done else ClaimOutcome.held, row.attempts)
    if row.attempts >= max_attempts:
        reason = lost_reason(row.attempts, row.worker, row.lease_expires_at, max_attempts)
        done = _apply(session, job_id, Transition.refuse_exhausted, free, error=reason)
        session.commit()
        return Claim(ClaimOutcome.exhausted if done else ClaimOutcome.held, row.attempts)
    return Claim(ClaimOutcome.held, row.attempts)


def lost_reason(
    attempts: int,
    worker: str | None,
    lease_expired_at: datetime | None,
    max_attempts: int,
    *,
    kernel_log: str | None = None,
) -> str:
    """The error of a job whose leases kept running out: what is known, and where to look. When the
    last worker ran on this machine and the kernel killed it for lack of memory, that is said;
    `kernel_log` None reads this machine's log (core.recovery.oom_kill)."""
    from core.recovery import oom_kill, oom_note  # core.recovery imports this module

    when = lease_expired_at.isoformat(timespec="seconds") if lease_expired_at else "unknown"
    lost = (
        f"the lease of each of its {attempts} attempt(s) ran out before the job ended (last held by "
        f"{worker or 'an unknown worker'}, lease expired at {when} UTC); gave up after "
        f"TRANSFERLAB_MAX_ATTEMPTS={max_attempts}. "
    )
    kill = oom_kill(worker, lease_expired_at, kernel_log)
    if kill is None:
        return lost + "That worker's log says why it stopped renewing."
    return lost + oom_note(kill, (worker or "").rpartition(":")[0])


def renew_lease(session: Session, lease: Lease, *, lease_seconds: float, now: datetime | None = None) -> bool:
    """The heartbeat: extend the lease to now + this worker's stale window. Commits. False when the
    job is no longer held by this lease (taken over, reaped, cancelled by the reaper, deleted)."""
    now = now or utcnow()
    held = _apply(
        session,
        lease.job_id,
        Transition.renew_lease,
        _held(lease),
        heartbeat_at=now,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
    )
    session.commit()
    return held


def record(session: Session, lease: Lease, **values: Any) -> bool:
    """Write progress, epoch, device... if the lease still holds. Leaves committing to the caller, so
    rows written beside it (epoch metrics) go in the same transaction or not at all."""
    if "status" in values:
        raise TransitionRefused("record: the status changes only through a named transition")
    return _apply(session, lease.job_id, Transition.record, _held(lease), **values)


@dataclass(frozen=True)
class LeaseState:
    held: bool  # the job is running under this lease
    cancel_requested: bool


def lease_state(session: Session, lease: Lease) -> LeaseState:
    """The worker's poll, in one read: does this lease still hold the job, and was a cancel asked for?"""
    row = session.execute(
        select(Job.status, Job.worker, Job.attempts, Job.cancel_requested).where(Job.id == lease.job_id)
    ).one_or_none()
    if row is None:
        return LeaseState(held=False, cancel_requested=False)
    held = row.status == JobStatus.running and (row.worker, row.attempts) == (lease.worker, lease.attempt)
    return LeaseState(held=held, cancel_requested=bool(row.cancel_requested))


def finish(
    session: Session, lease: Lease, status: JobStatus, *, error: str | None = None, **values: Any
) -> JobStatus | None:
    """The holder's final transition; leaves committing to the caller. Returns the status written,
    or None when the lease no longer holds (write nothing else then).

    A success asked for after a cancel was accepted becomes `cancelled`: the 202 of a cancel wins
    over any finish not yet written.
    """
    if status == JobStatus.succeeded:
        values.setdefault("progress", 1.0)
        if _apply(
            session,
            lease.job_id,
            Transition.succeed,
            _held(lease),
            Job.cancel_requested.is_(False),
            error=None,
            **values,
        ):
            return JobStatus.succeeded
        status, values = JobStatus.cancelled, {}
    transition = {
        JobStatus.failed: Transition.fail,
        JobStatus.cancelled: Transition.stop_cancelled,
    }[status]
    if error is not None:
        values["error"] = error[:ERROR_CHARS]
    return status if _apply(session, lease.job_id, transition, _held(lease), **values) else None


def release(session: Session, lease: Lease, enqueue: Enqueue) -> bool:
    """Hand a held job back to the queue (this worker is shutting down); the start does not count.
    The new message is sent before the commit: a queued job is never left without one. Commits."""
    now = utcnow()
    try:
        released = _apply(
            session,
            lease.job_id,
            Transition.release,
            _held(lease),
            attempts=Job.attempts - 1,
            heartbeat_at=None,
            lease_expires_at=None,
            sent_at=now,
            send_count=Job.send_count + 1,
        )
        if released:
            enqueue(lease.job_id)
        session.commit()
        return released
    except Exception:
        session.rollback()
        raise


# ---------------------------------------------------------------- the API's side


class CancelOutcome(enum.StrEnum):
    cancelled = "cancelled"  # it was queued; it is cancelled now (200)
    requested = "requested"  # it is running; it stops at its next check, and cannot succeed now (202)
    ended = "ended"  # it had already ended (409)
    missing = "missing"  # no such job (404)


def cancel(session: Session, job_id: str) -> CancelOutcome:
    """Cancel a queued job now, or ask a running one to stop. Commits."""
    if _apply(session, job_id, Transition.cancel_queued, cancel_requested=True):
        session.commit()
        return CancelOutcome.cancelled
    if _apply(session, job_id, Transition.request_cancel, cancel_requested=True):
        session.commit()
        return CancelOutcome.requested
    session.rollback()
    exists = session.scalar(select(func.count()).select_from(Job).where(Job.id == job_id))
    return CancelOutcome.ended if exists else CancelOutcome.missing


def cancel_experiment_jobs(session: Session, experiment_id: str) -> tuple[int, int]:
    """Cancel an experiment's queued jobs and ask its running ones to stop; the caller commits.
    Returns (cancelled, asked to stop)."""
    ids = session.scalars(
        select(Job.id).where(Job.experiment_id == experiment_id, Job.status.in_([Q, R]))
    ).all()
    cancelled = requested = 0
    for job_id in ids:
        if _apply(session, job_id, Transition.cancel_queued, cancel_requested=True):
            cancelled += 1
        elif _apply(session, job_id, Transition.request_cancel, cancel_requested=True):
            requested += 1
    return cancelled, requested


# ---------------------------------------------------------------- deleting (core/deletion.py decides)


def detach_dependents(session: Session, job_ids: Collection[str]) -> int:
    """Forget that other jobs were fine-tuned from these (their source becomes null): the rows of a
    forced deletion. Leaves committing to the caller; returns the jobs changed."""
    result = session.execute(
        update(Job)
        .where(Job.source_job_id.in_(job_ids), Job.id.not_in(job_ids))
        .values(source_job_id=None)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount


def delete_ended(session: Session, job_ids: Collection[str]) -> list[str]:
    """Delete the rows of those jobs that have ended, with their epochs, evaluation, cost, checkpoint
    row and artifact rows; a queued or running one is left alone. Returns the ids deleted. Leaves
    committing to the caller (who removes the files after the commit: a failed commit keeps rows
    that still point at their files)."""
    sources = [s for s in TRANSITIONS[Transition.delete].sources if s is not None]
    ended = list(session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.status.in_(sources))))
    if not ended:
        return []
    for child in (EpochMetric, Evaluation, Cost, Checkpoint, Artifact):
        session.execute(
            delete(child).where(child.job_id.in_(ended)).execution_options(synchronize_session=False)
        )
    # Within the set, a fine-tune may name another as its source: one statement deletes them all.
    session.execute(
        update(Job)
        .where(Job.id.in_(ended))
        .values(source_job_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(Job)
        .where(Job.id.in_(ended), Job.status.in_(sources))
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    return ended


# ---------------------------------------------------------------- the reaper


@dataclass
class Reaped:
    requeued: list[str]
    ended: list[str]  # failed or cancelled: their experiments may move on
    resent: list[str]


def reap(
    session: Session,
    *,
    lease_seconds: float,
    max_attempts: int,
    enqueue: Enqueue,
    now: datetime | None = None,
) -> Reaped:
    """One pass: re-queue, fail or cancel each running job whose lease ran out, and send again each
    queued job unclaimed for longer than its back-off. Commits per job; a job the broker refuses is
    left as it was and tried again on the next pass."""
    now = now or utcnow()
    reaped = Reaped([], [], [])
    reap_expired(session, max_attempts, enqueue, now, reaped)
    resend_stranded(session, lease_seconds, enqueue, now, reaped)
    return reaped


def reap_expired(session: Session, max_attempts: int, enqueue: Enqueue, now: datetime, out: Reaped) -> None:
    """Running jobs whose lease ran out: queued and sent again, failed, or cancelled. Commits per job."""
    candidates = session.execute(
        select(Job.id, Job.attempts, Job.worker, Job.cancel_requested, Job.lease_expires_at).where(
            Job.status == JobStatus.running, lease_expired(now)
        )
    ).all()
    session.rollback()  # end the read transaction before the row-by-row writes
    for job in candidates:
        # The same test again in the UPDATE: a job renewed or taken since the SELECT is left alone.
        same = (lease_expired(now), Job.attempts == job.attempts)
        try:
            if job.cancel_requested:
                moved, ended = _apply(session, job.id, Transition.reap_cancelled, *same), True
            elif job.attempts >= max_attempts:
                reason = lost_reason(job.attempts, job.worker, job.lease_expires_at, max_attempts)
                moved, ended = _apply(session, job.id, Transition.reap_exhausted, *same, error=reason), True
            else:
                moved = _apply(
                    session,
                    job.id,
                    Transition.reap_requeue,
                    *same,
                    heartbeat_at=None,
                    lease_expires_at=None,
                    sent_at=now,
                    send_count=Job.send_count + 1,
                )
                ended = False
                if moved:
                    enqueue(job.id)  # before the commit: a broker error keeps it running-and-expired
            session.commit()
        except Exception:
            session.rollback()
            log.exception("could not reap job %s; the next pass tries again", job.id)
            continue
        if moved:
            log.warning(
                "job %s: the lease of worker %s ran out (attempt %d) -> %s",
                job.id,
                job.worker,
                job.attempts,
                "ended" if ended else "queued again",
            )
            (out.ended if ended else out.requeued).append(job.id)


def resend_due(sent_at: datetime, send_count: int, lease_seconds: float, now: datetime) -> bool:
    """A queued job is sent again after one stale window, then after 2, 4, ... up to the cap."""
    backoff = min(2 ** max(send_count - 1, 0), MAX_RESEND_BACKOFF)
    return now - sent_at >= timedelta(seconds=lease_seconds * backoff)


def resend_stranded(
    session: Session, lease_seconds: float, enqueue: Enqueue, now: datetime, out: Reaped
) -> None:
    """Queued jobs unclaimed past their back-off: sent again (a lost message). Commits per job."""
    last_sent = func.coalesce(Job.sent_at, Job.created_at)
    candidates = session.execute(
        select(Job.id, Job.sent_at, Job.created_at, Job.send_count).where(
            Job.status == JobStatus.queued, last_sent < now - timedelta(seconds=lease_seconds)
        )
    ).all()
    session.rollback()
    for job in candidates:
        sent_at = job.sent_at or job.created_at
        if not resend_due(sent_at, job.send_count, lease_seconds, now):
            continue
        try:
            moved = _apply(
                session,
                job.id,
                Transition.resend,
                Job.send_count == job.send_count,  # another reaper's send since the read wins
                sent_at=now,
                send_count=job.send_count + 1,
            )
            if moved:
                enqueue(job.id)
            session.commit()
        except Exception:
            session.rollback()
            log.exception("could not send job %s again; the next pass tries again", job.id)
            continue
        if moved:
            log.warning("job %s: queued since %s without a claim; sent again", job.id, sent_at.isoformat())
            out.resent.append(job.id)


def transitions_markdown() -> str:
    """TRANSITIONS as the Markdown table docs/architecture.md shows (a test keeps the two equal)."""
    lines = ["| transition | from | to | who | the UPDATE's condition |", "|---|---|---|---|---|"]
    for transition, rule in TRANSITIONS.items():
        sources = ", ".join(sorted("(new)" if s is None else str(s) for s in rule.sources))
        target = "(deleted)" if rule.target is None else rule.target
        lines.append(f"| `{transition}` | {sources} | {target} | {rule.actor} | {rule.condition} |")
    return "\n".join(lines)
