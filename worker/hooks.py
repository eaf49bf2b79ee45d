"""The engine's callbacks for one held job: progress, epochs and the start written through the lease,
and `should_stop` answered by the lease thread. A job whose lease is gone gets nothing written."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy.orm import Session

from core import persist
from core.jobs import Lease, record
from engine.results import EpochMetrics, Hooks, RunInfo
from worker.lease import LeaseKeeper

log = logging.getLogger(__name__)

PROGRESS_WRITE_SECONDS = 1.0  # progress is written at most this often; every batch would be too much


class JobHooks(Hooks):
    def __init__(
        self, lease: Lease, sessions: Callable[[], AbstractContextManager[Session]], keeper: LeaseKeeper
    ):
        self.lease = lease
        self.sessions = sessions
        self.keeper = keeper
        self.fraction = 0.0
        self._next_progress_write = 0.0

    def on_start(self, info: RunInfo) -> None:
        log.info(
            "job %s: %d epochs of %d steps on %s in %s, resuming after epoch %d",
            self.lease.job_id,
            info.total_epochs,
            info.steps_per_epoch,
            info.device,
            info.precision,
            info.resumed_from_epoch,
        )
        with self.sessions() as session:
            if record(
                session,
                self.lease,
                device=info.device,
                precision=info.precision,
                current_epoch=info.resumed_from_epoch,
            ):
                persist.drop_epochs_after(session, self.lease.job_id, info.resumed_from_epoch)
                session.commit()

    def on_epoch(self, metrics: list[EpochMetrics]) -> None:
        for m in metrics:  # the job's own log shows its curve (core/job_logs.py)
            log.info(
                "job %s: epoch %d %s loss %.4f accuracy %.4f lr %.3g, %.1f s, %.0f images/s",
                self.lease.job_id,
                m.epoch,
                m.phase,
                m.loss,
                m.accuracy,
                m.lr,
                m.seconds,
                m.images_per_second,
            )
        with self.sessions() as session:
            if record(session, self.lease, current_epoch=metrics[0].epoch, progress=self.fraction):
                persist.upsert_epochs(session, self.lease.job_id, metrics)
                session.commit()

    def on_progress(self, fraction: float) -> None:
        self.fraction = fraction
        if time.monotonic() < self._next_progress_write:
            return
        self._next_progress_write = time.monotonic() + PROGRESS_WRITE_SECONDS
        try:
            with self.sessions() as session:
                record(session, self.lease, progress=fraction)
                session.commit()
        except Exception:  # progress is cosmetic: never fail a training run over it
            log.exception("progress write for job %s failed", self.lease.job_id)

    def should_stop(self) -> bool:
        return self.keeper.should_stop()
