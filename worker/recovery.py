"""The reaper: a job whose worker died is not left `running` forever.

A running job's heartbeat is stamped every `heartbeat_seconds`. One silent for `stale_after_seconds`
lost its worker (killed, out of memory, machine gone): it goes back to `queued` and is enqueued
again, and the next claim resumes it from its last finished epoch. A job already started
`max_attempts` times is failed instead, so a job that kills its worker every time cannot loop.

Every worker runs the reaper in a daemon thread (every stale_after/2 s), and so does `transferlab
serve`. Each decision is one conditional UPDATE on the row: two reapers never both re-queue a job.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.experiments.orchestrate import notify_job_finished
from service.models import Job, JobStatus, utcnow
from worker.lifecycle import lost_reason, stale_cutoff

log = logging.getLogger(__name__)


def recover_orphaned_jobs(
    session: Session,
    settings: Settings,
    *,
    enqueue: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Re-queue (and re-enqueue) or fail every running job with a stale heartbeat. Commits.

    Returns the ids of the jobs it changed. A job is committed as queued only after its message was
    sent: if the broker is down, the job stays running-and-stale and the next pass tries again.
    """
    if enqueue is None:
        from worker.celery_app import enqueue_run_job as enqueue
    now = now or utcnow()
    cutoff = stale_cutoff(settings.stale_after_seconds, now)
    stale = and_(
        Job.status == JobStatus.running,
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
    )
    candidates = session.execute(
        select(Job.id, Job.attempts, Job.worker, Job.cancel_requested).where(stale)
    ).all()
    session.rollback()  # end the read transaction before the row-by-row writes
    changed: list[str] = []
    for job in candidates:
        # The same staleness test again, in the UPDATE itself: a job that beat (or was taken by
        # another reaper) since the SELECT matches no row and is left alone.
        same_row = and_(Job.id == job.id, Job.attempts == job.attempts, stale)
        if job.cancel_requested:
            values = dict(status=JobStatus.cancelled, finished_at=now)
        elif job.attempts >= settings.max_attempts:
            values = dict(
                status=JobStatus.failed,
                finished_at=now,
                error=lost_reason(
                    job.attempts, job.worker, settings.stale_after_seconds, settings.max_attempts
                ),
            )
        else:
            values = dict(status=JobStatus.queued, heartbeat_at=None)
        try:
            won = session.execute(
                update(Job).where(same_row).values(**values).execution_options(synchronize_session=False)
            ).rowcount
            if won and values["status"] == JobStatus.queued:
                enqueue(job.id)  # before the commit: a lost message must not leave it queued forever
            session.commit()
        except Exception:
            session.rollback()
            log.exception("could not recover job %s; will retry", job.id)
            continue
        if won:
            changed.append(job.id)
            log.warning(
                "job %s: worker %s silent for over %g s after %d attempt(s) -> %s",
                job.id,
                job.worker,
                settings.stale_after_seconds,
                job.attempts,
                values["status"],
            )
            if values["status"] != JobStatus.queued:
                shutil.rmtree(settings.runs_dir / job.id, ignore_errors=True)
                notify_job_finished(job.id)  # its experiment may now be done, or failed
    return changed


def start_reaper(
    settings: Settings, session_factory, *, interval_seconds: float | None = None
) -> threading.Event:
    """Run recover_orphaned_jobs every stale_after/2 s in a daemon thread; set the event to stop."""
    stop = threading.Event()
    interval = interval_seconds or settings.stale_after_seconds / 2

    def loop() -> None:
        while not stop.wait(interval):
            try:
                with session_factory() as session:
                    recover_orphaned_jobs(session, settings)
            except Exception:  # the database may be restarting; try again next round
                log.exception("orphaned-job reaper failed")

    threading.Thread(target=loop, name="transferlab-reaper", daemon=True).start()
    return stop
