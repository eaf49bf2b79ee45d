"""The reaper loop: core.recovery.recover every stale window / 2, in a daemon thread.

Every worker runs one, and so does `transferlab serve`; each decision is a conditional UPDATE, so
any number of them can run at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy.orm import Session

from core.jobs import Enqueue
from core.recovery import recover
from core.settings import Settings

log = logging.getLogger(__name__)


def start_reaper(
    settings: Settings,
    sessions: Callable[[], AbstractContextManager[Session]],
    enqueue: Enqueue,
    *,
    interval_seconds: float | None = None,
) -> threading.Event:
    """Start the loop; set the returned event to stop it."""
    stop = threading.Event()
    interval = interval_seconds or settings.stale_after_seconds / 2

    def loop() -> None:
        while not stop.wait(interval):
            try:
                with sessions() as session:
                    recover(session, settings, enqueue)
            except Exception:  # the database may be restarting; try again next round
                log.exception("reaper pass failed")

    threading.Thread(target=loop, name="transferlab-reaper", daemon=True).start()
    return stop
