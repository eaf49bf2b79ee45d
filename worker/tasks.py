"""`transferlab.run_job(job_id)`: claim the job, drive the engine under a lease, write what it reports.

The task never raises into Celery: every outcome (succeeded, failed, cancelled, a duplicate delivery
refused) is written to the job row and the message is acknowledged, so nothing loops on redelivery.
A worker that dies mid-job stops renewing its lease, and the reaper (core/recovery.py) queues the job
again; the next attempt resumes from `runs/<job_id>`, the engine's per-epoch resume state.

Only the lease's holder writes: epoch rows through the lease, and the checkpoint into an
attempt-unique temporary folder that the holder renames into place in the transaction of its final
status. A worker whose lease was taken over stops at its next check and leaves nothing behind.

Each attempt has a time limit from the job's estimated work (core.budgets.time_limit); past it the
run stops at its next check and the holder fails the job with the limit and the estimate in its
error. A failed job is never queued again, so the limit is not retried around.
"""

from __future__ import annotations

import enum
import gc
import logging
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from celery import signals
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core import persist
from core.budgets import TimeLimit, estimate_job, time_limit
from core.datasets import folder_limits
from core.db import get_sessionmaker
from core.experiments.orchestrate import notify_job_finished
from core.job_logs import capture_job_log
from core.job_plots import pick_examples_safely, save_examples
from core.jobs import ClaimOutcome, Lease, claim_job, finish, release
from core.logs import job_context
from core.models import Checkpoint, Job, JobStatus
from core.queue import TASK_NAME, enqueue_run_job
from core.recovery import forget_run_state
from core.settings import Settings, get_settings
from engine.errors import CheckpointError, EngineError, JobCancelled
from engine.results import RunResult
from engine.run import CalibrationOptions
from engine.run import run_job as run_engine
from engine.spec import FinetuneSpec, JobSpec, PretrainSpec
from worker.celery_app import celery_app
from worker.hooks import JobHooks
from worker.lease import LeaseKeeper, StopReason
from worker.reaper import start_reaper

log = logging.getLogger(__name__)

DB_RETRY_SECONDS = 15

# Set when this worker starts a warm shutdown (SIGTERM, Ctrl-C): the running job is handed back to
# the queue at its next check instead of holding the shutdown for hours.
shutting_down = threading.Event()


class RunOutcome(enum.StrEnum):
    """What one delivery of run_job ended in (the task's return value, for logs and tests)."""

    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    lost = "lost"  # the lease was taken over or ran out: nothing more was written
    released = "released"  # handed back to the queue at a warm shutdown
    abandoned = "abandoned"  # could not be handed back; the reaper queues it once its lease runs out
    # A delivery that was not run (core.jobs.ClaimOutcome): a duplicate, or refused and ended now.
    missing = "missing"
    finished = "finished"
    held = "held"
    refused_cancelled = "refused_cancelled"
    exhausted = "exhausted"


TERMINAL_OUTCOMES = {RunOutcome.succeeded, RunOutcome.failed, RunOutcome.cancelled}
_FROM_CLAIM = {
    ClaimOutcome.missing: RunOutcome.missing,
    ClaimOutcome.finished: RunOutcome.finished,
    ClaimOutcome.held: RunOutcome.held,
    ClaimOutcome.cancelled: RunOutcome.refused_cancelled,
    ClaimOutcome.exhausted: RunOutcome.exhausted,
}


@signals.worker_shutting_down.connect
def _on_worker_shutting_down(**_: object) -> None:
    shutting_down.set()


@signals.worker_ready.connect
def _on_worker_ready(**_: object) -> None:
    # torch and the rest of the imports are hundreds of thousands of objects that live as long as the
    # process: frozen out of the collector's reach (before any pool forks), the full collection that
    # ends every job (engine.run.release_memory) no longer walks them: 0.44-0.67 s a job -> see
    # docs/performance.md (issue 15), as service/main.py does for the API.
    gc.collect()
    gc.freeze()
    start_reaper(get_settings(), get_sessionmaker(), enqueue_run_job)


_spec_adapter: TypeAdapter[PretrainSpec | FinetuneSpec] = TypeAdapter(JobSpec)


def parse_spec(stored: dict) -> PretrainSpec | FinetuneSpec:
    """The engine spec stored with the job (a `source` key, the API's, is not part of it)."""
    return _spec_adapter.validate_python({k: v for k, v in stored.items() if k != "source"})


@celery_app.task(name=TASK_NAME, bind=True)
def run_job(self, job_id: str) -> str:  # self: celery's bound task
    """Run one job; returns what happened (a RunOutcome)."""
    try:
        return execute_job(job_id).value
    except OperationalError as exc:
        # The database is unreachable (restarting, network): acknowledging now would drop the only
        # message of a queued job, so send it again later. A claimed job is left to the reaper.
        log.warning("job %s: database unavailable (%s); retrying in %d s", job_id, exc, DB_RETRY_SECONDS)
        raise self.retry(exc=exc, countdown=DB_RETRY_SECONDS, max_retries=None) from None


def execute_job(
    job_id: str, settings: Settings | None = None, *, shutdown: threading.Event | None = None
) -> RunOutcome:
    """Claim, run and finish one job in this process. Every line logged meanwhile carries the job's
    id, and those of a claimed job are kept in its own log (GET /jobs/{id}/logs)."""
    started = time.perf_counter()  # the job's phase split counts from here (startup: up to the engine)
    settings = settings or get_settings()
    with job_context(job_id):
        return _execute_job(job_id, settings, shutdown, started)


def _execute_job(
    job_id: str, settings: Settings, shutdown: threading.Event | None, started: float
) -> RunOutcome:
    sessions = get_sessionmaker()
    me = worker_name()
    with sessions() as session:
        claim = claim_job(
            session,
            job_id,
            worker=me,
            device=settings.device,
            lease_seconds=settings.stale_after_seconds,
            max_attempts=settings.max_attempts,
        )
    if claim.lease is None:
        log.info("job %s not run: %s (attempts %d)", job_id, claim.outcome, claim.attempts)
        if claim.outcome in (ClaimOutcome.exhausted, ClaimOutcome.cancelled):
            forget_run_state(settings, job_id)
            notify_job_finished(job_id, enqueue_run_job)
        return _FROM_CLAIM[claim.outcome]
    with capture_job_log(settings, job_id):
        outcome = _run_claimed(claim.lease, settings, sessions, shutdown, started)
    if outcome in TERMINAL_OUTCOMES:
        forget_run_state(settings, job_id)
        notify_job_finished(job_id, enqueue_run_job)  # an experiment's next step: fan out, finish, fail
    return outcome


def _run_claimed(
    lease: Lease,
    settings: Settings,
    sessions: Callable[[], AbstractContextManager[Session]],
    shutdown: threading.Event | None,
    started: float,
) -> RunOutcome:
    job_id = lease.job_id
    log.info("job %s claimed by %s (attempt %d)", job_id, lease.worker, lease.attempt)
    with LeaseKeeper(
        sessions,
        lease,
        lease_seconds=settings.stale_after_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        shutdown=shutdown or shutting_down,
    ) as keeper:
        run = ClaimedRun(lease, settings, sessions, keeper, started=started)
        try:
            outcome = run.execute()
        except Exception as exc:
            outcome = run.fail(exc)
        finally:
            run.discard_temporary_checkpoint()
    log.info("job %s: %s", job_id, outcome)
    return outcome


def worker_name() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class ClaimedRun:
    """One attempt of a held job, as named steps: prepare, train, then finish or stop."""

    lease: Lease
    settings: Settings
    sessions: Callable[[], AbstractContextManager[Session]]
    keeper: LeaseKeeper
    limit: TimeLimit | None = None  # set by start_time_limit once the spec is read
    started: float = field(default_factory=time.perf_counter)  # perf_counter() when the delivery began
    engine_started: float | None = None  # perf_counter() when the engine's run began

    @property
    def checkpoint_id(self) -> str:
        return persist.checkpoint_id_for(self.lease.job_id)

    @property
    def final_checkpoint_dir(self) -> Path:
        return self.settings.checkpoints_dir / self.checkpoint_id

    @property
    def temporary_checkpoint_dir(self) -> Path:
        """Unique to this attempt in this process: a displaced worker never writes the holder's files."""
        name = f".{self.checkpoint_id}.attempt-{self.lease.attempt}.{os.getpid()}.tmp"
        return self.settings.checkpoints_dir / name

    def _session(self) -> AbstractContextManager[Session]:
        return self.sessions()

    def execute(self) -> RunOutcome:
        spec, architecture, source_dir, source_sha256 = self.prepare()
        self.start_time_limit(spec, architecture)
        try:
            result = self.train(spec, source_dir, source_sha256)
        except JobCancelled:
            result = None
        self.keeper.stop()  # every write from here on names the lease itself
        reason = self.keeper.reason
        if reason is not None or result is None:
            _free_memory()  # the engine's tensors went with the exception's frames
            return self.stopped(reason or StopReason.lost)
        return self.finish_succeeded(result)

    def prepare(self) -> tuple[PretrainSpec | FinetuneSpec, str, Path | None, str | None]:
        """Read the job's spec and architecture and, for a fine-tune, where its source checkpoint is."""
        with self._session() as session:
            job = session.get(Job, self.lease.job_id)
            if job is None:
                raise LookupError(f"job {self.lease.job_id} was deleted while it was claimed")
            spec = parse_spec(job.spec)
            if not isinstance(spec, FinetuneSpec) or spec.source_weights is not None:
                return spec, job.architecture, None, None  # ImageNet weights: the engine finds the file
            if job.source_job_id is None:  # a checkpoint named by id (POST /checkpoints imports them)
                row = session.get(Checkpoint, job.source_checkpoint_id) if job.source_checkpoint_id else None
                if row is None:
                    raise CheckpointError("the source checkpoint no longer exists; fine-tune from another")
            else:
                row = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.source_job_id))
                if row is None:
                    raise CheckpointError(
                        f"source job {job.source_job_id} has no checkpoint; fine-tune from a job that "
                        "succeeded"
                    )
            return spec, job.architecture, self.settings.checkpoints_dir / row.path, row.sha256

    def start_time_limit(self, spec: PretrainSpec | FinetuneSpec, architecture: str) -> None:
        """This attempt may run as long as the job's estimated work allows (core.budgets)."""
        self.limit = time_limit(estimate_job(spec, architecture), self.settings)
        self.keeper.limit_time(self.limit.seconds)
        log.info("job %s: time limit %.0f s", self.lease.job_id, self.limit.seconds)

    def train(
        self, spec: PretrainSpec | FinetuneSpec, source_dir: Path | None, source_sha256: str | None
    ) -> RunResult:
        """The engine's run, resuming from runs/<job_id>, writing its checkpoint to this attempt's folder."""
        self.engine_started = time.perf_counter()
        return run_engine(
            spec,
            data_root=self.settings.data_root,
            workdir=self.settings.runs_dir / self.lease.job_id,
            checkpoint_dir=self.temporary_checkpoint_dir,
            source_checkpoint=source_dir,
            source_sha256=source_sha256,
            hooks=JobHooks(self.lease, self.sessions, self.keeper),
            device=self.settings.device,
            download=self.settings.download,
            resume_every_seconds=self.settings.resume_every_seconds,
            calibration=CalibrationOptions(
                cache_path=self.settings.calibration_cache,
                budget_seconds=self.settings.calibration_budget_seconds,
                compile_on_cpu=self.settings.calibration_compile_on_cpu,
            ),
            folder_limits=folder_limits(self.settings),
        )

    def phase_seconds(self, engine: dict[str, float], examples_seconds: float, record_seconds: float) -> dict:
        """The engine's phases with the worker's around them: startup (claim, spec, lease, up to the
        engine), examples (the test images the plots will show), record (the final write), other
        (what no phase names), total (the delivery)."""
        now = time.perf_counter()
        phases = {k: v for k, v in engine.items() if k != "engine_total"}
        phases["startup"] = (self.engine_started or self.started) - self.started
        phases["examples"], phases["record"] = examples_seconds, record_seconds
        phases["total"] = now - self.started
        phases["other"] = max(phases["total"] - sum(v for k, v in phases.items() if k != "total"), 0.0)
        return {k: round(v, 4) for k, v in phases.items()}

    def finish_succeeded(self, result: RunResult) -> RunOutcome:
        """The plots' example images picked first (no lock held), then one transaction: the final
        status, the rows, the checkpoint folder renamed into place, the examples stored; all of it or
        nothing. The plots themselves are drawn on their first look (core/job_plots.py)."""
        job_id = self.lease.job_id
        with self._session() as session:
            picking = time.perf_counter()
            examples = pick_examples_safely(session, self.settings, job_id, result.evaluation)
            recording = time.perf_counter()
            status = finish(
                session,
                self.lease,
                JobStatus.succeeded,
                current_epoch=max((m.epoch for m in result.epochs), default=0),
                device=result.device,
                precision=result.precision,
            )
            if status is None:
                session.rollback()
                return RunOutcome.lost
            if status == JobStatus.cancelled:  # a cancel accepted before this write wins
                session.commit()
                return RunOutcome.cancelled
            persist.upsert_epochs(session, job_id, result.epochs)  # any an earlier attempt missed
            persist.save_evaluation(session, job_id, result.evaluation.to_dict())
            persist.save_cost(session, job_id, result.cost.to_dict())
            final = self.final_checkpoint_dir
            shutil.rmtree(final, ignore_errors=True)  # an earlier attempt's folder is never referenced
            os.replace(result.checkpoint.directory, final)
            job = session.get(Job, job_id)
            assert job is not None
            persist.save_checkpoint_row(
                session,
                job,
                checkpoints_dir=self.settings.checkpoints_dir,
                directory=final,
                sha256=result.checkpoint.sha256,
                meta=result.checkpoint.meta,
            )
            try:
                save_examples(self.settings, job_id, examples)
            except OSError:  # a full disk loses the pictures, not the job
                log.exception("job %s: could not store its example images", job_id)
            phases = self.phase_seconds(
                result.cost.phase_seconds, recording - picking, time.perf_counter() - recording
            )
            persist.save_cost_details(
                session, job_id, {"phase_seconds": phases, "numerics": result.cost.numerics}
            )
            try:
                session.commit()
            except Exception:
                shutil.rmtree(final, ignore_errors=True)
                raise
        return RunOutcome.succeeded

    def stopped(self, reason: StopReason) -> RunOutcome:
        """The run stopped before its end: lost (write nothing), shutdown (hand back), cancel, or
        past its time limit (failed)."""
        if reason == StopReason.time_limit and self.limit is not None:
            error = self.limit.reason(self.keeper.elapsed_seconds)
            log.error("job %s %s", self.lease.job_id, error)
            return self.finish_failed(error)
        if reason == StopReason.lost:
            log.warning(
                "job %s: the lease of %s no longer holds; stopped", self.lease.job_id, self.lease.worker
            )
            return RunOutcome.lost
        with self._session() as session:
            if reason == StopReason.shutdown:
                try:
                    return (
                        RunOutcome.released
                        if release(session, self.lease, enqueue_run_job)
                        else RunOutcome.lost
                    )
                except Exception:  # still ours and running: the reaper queues it once the lease runs out
                    log.exception("job %s could not be handed back; the reaper will", self.lease.job_id)
                    return RunOutcome.abandoned
            status = finish(session, self.lease, JobStatus.cancelled)
            session.commit()
        return RunOutcome.cancelled if status else RunOutcome.lost

    def fail(self, exc: Exception) -> RunOutcome:
        """The run raised: the job fails with the error's type and message. An engine error (missing
        data, a refused spec or checkpoint, a full disk) is expected and says what to do: one line;
        anything else is a bug, logged with its traceback."""
        if isinstance(exc, EngineError):
            log.error("job %s failed: %s: %s", self.lease.job_id, type(exc).__name__, exc)
        else:
            log.error("job %s failed:\n%s", self.lease.job_id, traceback.format_exc())
        error = f"{type(exc).__name__}: {exc}"
        del exc
        _free_memory()
        self.keeper.stop()
        return self.finish_failed(error)

    def finish_failed(self, error: str) -> RunOutcome:
        """The holder fails the job with `error`: a final status, never queued again."""
        with self._session() as session:
            status = finish(session, self.lease, JobStatus.failed, error=error)
            session.commit()
        return RunOutcome.failed if status else RunOutcome.lost

    def discard_temporary_checkpoint(self) -> None:
        shutil.rmtree(self.temporary_checkpoint_dir, ignore_errors=True)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
