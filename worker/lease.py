"""One thread per running job: it renews the job's lease every heartbeat and polls for a cancel.

The training thread only reads `should_stop()`, which does no I/O: the thread has already decided.
It stops the run for one of four reasons (`StopReason`): the API asked (`cancel`), the lease no
longer holds (`lost`: taken over, reaped, or not renewed before it ran out, for example while the
database was unreachable), this worker is shutting down (`shutdown`), or the attempt has run past
the time limit it was given with `limit_time` (`time_limit`, core.budgets.time_limit).
"""

from __future__ import annotations

import contextvars
import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy.orm import Session

from core.jobs import Lease, lease_state, renew_lease

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how soon a cancel or a take-over is noticed


class StopReason(enum.StrEnum):
    cancel = "cancel"
    lost = "lost"
    shutdown = "shutdown"
    time_limit = "time_limit"


class LeaseKeeper:
    def __init__(
        self,
        sessions: Callable[[], AbstractContextManager[Session]],
        lease: Lease,
        *,
        lease_seconds: float,
        heartbeat_seconds: float,
        poll_seconds: float | None = None,
        shutdown: threading.Event | None = None,
    ):
        self._sessions = sessions
        self.lease = lease
        self._lease_seconds = lease_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._poll_seconds = min(POLL_SECONDS if poll_seconds is None else poll_seconds, heartbeat_seconds)
        self._shutdown = shutdown or threading.Event()
        self._stop = threading.Event()
        self._reason: StopReason | None = None
        # The claim granted a lease of lease_seconds from now; each renewal moves this on.
        self._started = time.monotonic()
        self._lease_ends = self._started + lease_seconds
        self._deadline = math.inf  # the time limit's end (limit_time)
        # Run in a copy of this context: the thread's lines carry the job's id (core.logs).
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._run,),
            name=f"lease-{lease.job_id}",
            daemon=True,
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def reason(self) -> StopReason | None:
        if self._reason is None and self._shutdown.is_set():
            return StopReason.shutdown
        if self._reason is None and time.monotonic() >= self._lease_ends:
            self._reason = StopReason.lost  # not renewed in time: another worker may hold it already
        if self._reason is None and not self._stop.is_set() and time.monotonic() >= self._deadline:
            self._decide(StopReason.time_limit)  # a run that already ended is not stopped after the fact
        return self._reason

    @property
    def elapsed_seconds(self) -> float:
        """Seconds since this attempt started (the keeper was made right after the claim)."""
        return time.monotonic() - self._started

    def limit_time(self, seconds: float) -> None:
        """Stop the run once `seconds` have passed since the attempt started."""
        self._deadline = self._started + seconds

    def should_stop(self) -> bool:
        return self.reason is not None

    def stop(self) -> None:
        """Stop renewing (before the final write, which names the lease itself)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._poll_seconds + 30)

    def _decide(self, reason: StopReason) -> None:
        if self._reason is None:
            self._reason = reason
            log.warning("job %s (attempt %d): stopping: %s", self.lease.job_id, self.lease.attempt, reason)

    def _run(self) -> None:
        next_renewal = time.monotonic() + self._heartbeat_seconds
        while not self._stop.wait(self._poll_seconds):
            try:
                with self._sessions() as session:
                    if time.monotonic() >= next_renewal:
                        started = time.monotonic()
                        if not renew_lease(session, self.lease, lease_seconds=self._lease_seconds):
                            self._decide(StopReason.lost)
                            return
                        self._lease_ends = started + self._lease_seconds
                        next_renewal = started + self._heartbeat_seconds
                    state = lease_state(session, self.lease)  # one read a poll for both questions
                    if not state.held:
                        self._decide(StopReason.lost)
                        return
                    if self._reason is None and state.cancel_requested:
                        self._decide(StopReason.cancel)  # and keep renewing while the run winds down
            except Exception:  # a database blip must not end the job; the lease's end is the limit
                log.exception("lease of job %s: renewal or poll failed; trying again", self.lease.job_id)
