"""`transferlab.run_job(job_id)`: claim the job, drive the engine, write what it reports.

The task never raises into Celery: every outcome (succeeded, failed, cancelled, a duplicate delivery
skipped) is written to the job row and the message is acknowledged, so nothing loops on redelivery.
A worker that dies mid-job leaves a stale heartbeat, and the reaper (worker/recovery.py) re-queues
it; the next attempt resumes from `runs/<job_id>`, the engine's per-epoch resume state.
"""

from __future__ import annotations

import gc
import logging
import shutil
import threading
import time
import traceback
from pathlib import Path

import torch
from celery import signals
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from engine.errors import CheckpointError, JobCancelled
from engine.results import EpochMetrics, Hooks, RunInfo
from engine.run import run_job as run_engine
from engine.spec import FinetuneSpec, JobSpec
from service.artifacts import record_job_artifacts
from service.config import Settings, get_settings
from service.db import get_sessionmaker
from service.experiments.orchestrate import notify_job_finished
from service.models import Checkpoint, Job, JobStatus, utcnow
from worker import persist
from worker.celery_app import TASK_NAME, celery_app, enqueue_run_job
from worker.lifecycle import (
    ClaimOutcome,
    Heartbeat,
    StopPoller,
    claim_job,
    finish_job,
    release_job,
    touch,
    worker_name,
)
from worker.recovery import start_reaper

log = logging.getLogger(__name__)

TERMINAL_OUTCOMES = {JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value}
PROGRESS_WRITE_SECONDS = 1.0  # progress is written at most this often; every batch would be too much
CANCEL_POLL_SECONDS = 1.0
DB_RETRY_SECONDS = 15

# Set when this worker starts a warm shutdown (SIGTERM, Ctrl-C): the running job is handed back to
# the queue at its next batch instead of holding the shutdown for hours.
shutting_down = threading.Event()


@signals.worker_shutting_down.connect
def _on_worker_shutting_down(**_) -> None:
    shutting_down.set()


@signals.worker_ready.connect
def _on_worker_ready(**_) -> None:
    start_reaper(get_settings(), get_sessionmaker())


_spec_adapter: TypeAdapter = TypeAdapter(JobSpec)


def parse_spec(stored: dict):
    """The engine spec stored with the job (a `source` key, the API's, is not part of it)."""
    return _spec_adapter.validate_python({k: v for k, v in stored.items() if k != "source"})


class JobHooks(Hooks):
    """The engine's callbacks, written to the job's rows."""

    def __init__(self, job_id: str, worker: str, sessions, should_stop: StopPoller):
        self.job_id = job_id
        self.worker = worker
        self.sessions = sessions
        self.poller = should_stop
        self.fraction = 0.0
        self._next_progress_write = 0.0

    def on_start(self, info: RunInfo) -> None:
        log.info(
            "job %s: %d epochs of %d steps on %s, resuming after epoch %d",
            self.job_id,
            info.total_epochs,
            info.steps_per_epoch,
            info.device,
            info.resumed_from_epoch,
        )
        with self.sessions() as session:
            if touch(
                session,
                self.job_id,
                self.worker,
                commit=False,
                device=info.device,
                precision=info.precision,
                current_epoch=info.resumed_from_epoch,
            ):
                persist.drop_epochs_after(session, self.job_id, info.resumed_from_epoch)
                session.commit()

    def on_epoch(self, metrics: list[EpochMetrics]) -> None:
        with self.sessions() as session:
            # A job taken away from this worker gets nothing written; the poller stops the run.
            if touch(
                session,
                self.job_id,
                self.worker,
                commit=False,
                current_epoch=metrics[0].epoch,
                progress=self.fraction,
            ):
                persist.upsert_epochs(session, self.job_id, metrics)
                session.commit()

    def on_progress(self, fraction: float) -> None:
        self.fraction = fraction
        if time.monotonic() >= self._next_progress_write:
            self._next_progress_write = time.monotonic() + PROGRESS_WRITE_SECONDS
            try:
                with self.sessions() as session:
                    touch(session, self.job_id, self.worker, progress=fraction)
            except Exception:  # progress is cosmetic: never fail a training run over it
                log.exception("progress write for job %s failed", self.job_id)

    def should_stop(self) -> bool:
        return self.poller()


@celery_app.task(name=TASK_NAME, bind=True)
def run_job(self, job_id: str) -> str:
    """Run one job; returns what happened (claimed outcomes and "succeeded", "failed", ...)."""
    try:
        return execute_job(job_id)
    except OperationalError as exc:
        # The database is unreachable (restarting, network): acknowledging now would drop the only
        # message of a queued job, so send it again later. A claimed job is left to the reaper.
        log.warning("job %s: database unavailable (%s); retrying in %d s", job_id, exc, DB_RETRY_SECONDS)
        raise self.retry(exc=exc, countdown=DB_RETRY_SECONDS, max_retries=None) from None


def execute_job(
    job_id: str, settings: Settings | None = None, *, shutdown: threading.Event | None = None
) -> str:
    settings = settings or get_settings()
    sessions = get_sessionmaker()
    me = worker_name()
    with sessions() as session:
        claim = claim_job(
            session,
            job_id,
            worker=me,
            device=settings.device,
            stale_after_seconds=settings.stale_after_seconds,
            max_attempts=settings.max_attempts,
        )
    if claim.outcome != ClaimOutcome.claimed:
        log.info("job %s not run: %s (attempts %d)", job_id, claim.outcome, claim.attempts)
        if claim.outcome in (ClaimOutcome.exhausted, ClaimOutcome.cancelled):
            shutil.rmtree(settings.runs_dir / job_id, ignore_errors=True)
            notify_job_finished(job_id)
        return claim.outcome.value
    log.info("job %s claimed by %s (attempt %d)", job_id, me, claim.attempts)
    try:
        with Heartbeat(sessions, job_id, me, settings.heartbeat_seconds) as heartbeat:
            poller = StopPoller(
                sessions,
                job_id,
                me,
                interval_seconds=CANCEL_POLL_SECONDS,
                lost=heartbeat.lost,
                shutdown=shutdown or shutting_down,
            )
            hooks = JobHooks(job_id, me, sessions, poller)
            outcome = _run_claimed(job_id, me, settings, sessions, hooks, heartbeat)
    except Exception as exc:
        log.error("job %s failed:\n%s", job_id, traceback.format_exc())
        error = f"{type(exc).__name__}: {exc}"
        del exc
        _free_memory()
        with sessions() as session:
            finish_job(session, job_id, me, JobStatus.failed, error=error[:4000])
        shutil.rmtree(settings.runs_dir / job_id, ignore_errors=True)
        outcome = JobStatus.failed.value
    log.info("job %s: %s", job_id, outcome)
    if outcome in TERMINAL_OUTCOMES:
        notify_job_finished(job_id)  # an experiment's next step: fan out, finish, or fail
    return outcome


def _source_checkpoint(session, job: Job, settings: Settings) -> tuple[Path, str]:
    row = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.source_job_id))
    if row is None:
        raise CheckpointError(
            f"source job {job.source_job_id} has no checkpoint; fine-tune from a job that succeeded"
        )
    return settings.checkpoints_dir / row.path, row.sha256


def _run_claimed(
    job_id: str, me: str, settings: Settings, sessions, hooks: JobHooks, heartbeat: Heartbeat
) -> str:
    with sessions() as session:
        job = session.get(Job, job_id)
        spec = parse_spec(job.spec)
        source_dir, source_sha256 = (
            _source_checkpoint(session, job, settings) if isinstance(spec, FinetuneSpec) else (None, None)
        )
    workdir = settings.runs_dir / job_id
    checkpoint_dir = settings.checkpoints_dir / persist.checkpoint_id_for(job_id)
    try:
        result = run_engine(
            spec,
            data_root=settings.data_root,
            workdir=workdir,
            checkpoint_dir=checkpoint_dir,
            source_checkpoint=source_dir,
            source_sha256=source_sha256,
            hooks=hooks,
            device=settings.device,
            download=settings.download,
            resume_every_seconds=settings.resume_every_seconds,
        )
    except JobCancelled:
        reason = hooks.poller.reason
    else:
        reason = None
    finally:
        heartbeat.stop()  # every write from here on is conditional on this worker holding the job
    if reason is not None:
        _free_memory()  # the engine's tensors went with the exception's frames
        return _stopped(job_id, me, reason, settings, sessions)
    record_job_artifacts(job_id, result)  # plots before "succeeded": a finished job has them; never raises

    with sessions() as session:
        if not touch(
            session,
            job_id,
            me,
            commit=False,
            status=JobStatus.succeeded,
            progress=1.0,
            current_epoch=max((m.epoch for m in result.epochs), default=0),
            device=result.device,
            precision=result.precision,
            error=None,
            finished_at=utcnow(),
        ):
            session.rollback()
            return "lost"
        persist.upsert_epochs(session, job_id, result.epochs)  # any an earlier attempt missed
        persist.save_evaluation(session, job_id, result.evaluation.to_dict())
        persist.save_cost(session, job_id, result.cost.to_dict())
        persist.save_checkpoint_row(
            session,
            session.get(Job, job_id),
            checkpoints_dir=settings.checkpoints_dir,
            directory=result.checkpoint.directory,
            sha256=result.checkpoint.sha256,
            meta=result.checkpoint.meta,
        )
        session.commit()
    shutil.rmtree(workdir, ignore_errors=True)
    return JobStatus.succeeded.value


def _stopped(job_id: str, me: str, reason: str, settings: Settings, sessions) -> str:
    if reason == "lost":  # another worker or the reaper owns the row now: touch nothing
        log.warning("job %s was taken away from %s; stopped", job_id, me)
        return "lost"
    if reason == "shutdown":
        with sessions() as session:
            try:
                if release_job(session, job_id, me, commit=False):
                    # A fresh message (this one is acknowledged as the task returns), sent before
                    # the commit: a queued job must never be left without one.
                    enqueue_run_job(job_id)
                session.commit()
            except Exception:
                session.rollback()  # still ours and running: the reaper re-queues it once stale
                log.exception("job %s could not be handed back; the reaper will re-queue it", job_id)
                return "abandoned"
        return "released"
    with sessions() as session:
        finish_job(session, job_id, me, JobStatus.cancelled)
    shutil.rmtree(settings.runs_dir / job_id, ignore_errors=True)
    return JobStatus.cancelled.value


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
