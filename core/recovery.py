"""The reaper's pass, as the worker's loop and `transferlab serve` run it every stale window / 2:

    recover(session, settings, enqueue)

1. jobs whose lease ran out: queued and sent again (resumed from their last saved epoch by the next
   claim), failed after TRANSFERLAB_MAX_ATTEMPTS, or cancelled when a cancel was pending;
2. queued jobs no worker claimed within the stale window (a lost broker message): sent again;
3. experiments that can move on (a hook that never ran: a worker killed after its last commit): the
   step their jobs allow is taken. No GET request ever does this.
Every change is a conditional UPDATE: any number of reapers can run at once.
"""

from __future__ import annotations

import logging
import shutil

from sqlalchemy.orm import Session

from core.experiments.orchestrate import advance_open
from core.jobs import Enqueue, Reaped, reap
from core.settings import Settings

log = logging.getLogger(__name__)


def forget_run_state(settings: Settings, job_id: str) -> None:
    """Remove an ended job's resume state (runs/<job_id>): nothing will resume it any more."""
    shutil.rmtree(settings.runs_dir / job_id, ignore_errors=True)


def recover(session: Session, settings: Settings, enqueue: Enqueue) -> Reaped:
    """One reaper pass over jobs and experiments. Commits."""
    reaped = reap(
        session,
        lease_seconds=settings.stale_after_seconds,
        max_attempts=settings.max_attempts,
        enqueue=enqueue,
    )
    for job_id in reaped.ended:
        forget_run_state(settings, job_id)
    advance_open(session, enqueue)
    return reaped
