"""An experiment's life: create its jobs, fan out the fine-tunes once the pre-train succeeded, finish.

    experiment = create_experiment(session, request, enqueue)   # POST /experiments
    on_job_finished(session, job_id)                             # the worker, after a job ends
    advance(session, experiment_id)                              # the same step, by experiment

Every step is idempotent and each decision one conditional UPDATE on the experiment row, so the
worker's hook, a second worker, and GET /experiments/{id} (which calls advance as a safety net for a
hook that never ran: a worker killed after its last commit, a job failed by the reaper) can all call
it; only one of them fans out or finishes. Call it after the job's final status is committed, with a
fresh transaction: the last job to end then always sees every sibling ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.spec import PretrainSpec
from service.experiments.plan import PlanError, PlannedJob, check_request, plan_finetunes
from service.experiments.schemas import ExperimentCreate
from service.models import (
    EXPERIMENT_TERMINAL,
    TERMINAL_STATUSES,
    Experiment,
    ExperimentStatus,
    Job,
    JobRole,
    JobStatus,
    utcnow,
)

log = logging.getLogger(__name__)

Enqueue = Callable[[str], None]


class SourceNotFound(LookupError):
    """pretrained_job names no job (404)."""


class SourceNotUsable(RuntimeError):
    """pretrained_job is not a succeeded pretrain job with a checkpoint (409)."""


class NotCancellable(RuntimeError):
    """The experiment has already ended (409)."""


class QueueUnavailable(RuntimeError):
    """A job could not be sent to the broker; it was marked failed (503)."""


def _default_enqueue() -> Enqueue:
    from worker.celery_app import enqueue_run_job

    return enqueue_run_job


def _source_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise SourceNotFound(
            f"pretrained_job: job {job_id!r} not found; give the id of a succeeded pretrain job, "
            "or a 'pretrain' spec to run one"
        )
    if job.kind != "pretrain":
        raise SourceNotUsable(
            f"pretrained_job: job {job_id!r} is a {job.kind} job; give a succeeded pretrain job"
        )
    if job.status != JobStatus.succeeded or job.checkpoint is None:
        state = job.status if job.status != JobStatus.succeeded else "succeeded but has no checkpoint"
        raise SourceNotUsable(
            f"pretrained_job: job {job_id!r} is {state}; an experiment starts from a succeeded "
            "pretrain job with a checkpoint (wait for it, or give a 'pretrain' spec instead)"
        )
    return job


def _job_rows(experiment: Experiment, source: Job, planned: list[PlannedJob]) -> list[Job]:
    start = utcnow()
    return [
        Job(
            kind="finetune",
            status=JobStatus.queued,
            spec=p.spec.model_dump(mode="json"),
            dataset=p.spec.dataset.value,
            architecture=source.architecture,
            strategy=p.spec.strategy.value,
            source_job_id=source.id,
            experiment_id=experiment.id,
            role=p.role,
            # Distinct, increasing times keep the plan's order in every listing.
            created_at=start + timedelta(microseconds=i),
        )
        for i, p in enumerate(planned)
    ]


def _send(session: Session, job_ids: list[str], enqueue: Enqueue) -> list[str]:
    """Enqueue each job; one the broker refuses is failed (never left queued with no message).
    Returns the ids that could not be sent."""
    lost: list[str] = []
    for job_id in job_ids:
        try:
            enqueue(job_id)
        except Exception as exc:
            reason = f"could not be queued: {type(exc).__name__}: {exc}"
            log.error("job %s %s", job_id, reason)
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued)
                .values(status=JobStatus.failed, error=reason[:4000], finished_at=utcnow())
            )
            session.commit()
            lost.append(job_id)
    return lost


def create_experiment(session: Session, request: ExperimentCreate, enqueue: Enqueue) -> Experiment:
    """Validate, create and enqueue. Raises PlanError (422), SourceNotFound (404), SourceNotUsable
    (409) before anything is written, and QueueUnavailable (503) when the broker refused a job."""
    check_request(request)
    source = _source_job(session, request.pretrained_job) if request.pretrained_job else None
    architecture = request.pretrain.model.value if request.pretrain else source.architecture
    # Planned now even when the fine-tunes wait for the pre-train: a bad frozen_blocks is a 422 today,
    # not a failed experiment an hour from now.
    planned = plan_finetunes(request, architecture)

    experiment = Experiment(
        name=request.name,
        status=ExperimentStatus.pretraining if source is None else ExperimentStatus.running,
        request=request.model_dump(mode="json"),
        dataset=request.dataset.value,
        architecture=architecture,
        pretrain_job_id=source.id if source is not None else None,
    )
    session.add(experiment)
    session.flush()
    if source is None:
        spec = PretrainSpec.model_validate(request.pretrain.model_dump())
        pretrain = Job(
            kind="pretrain",
            status=JobStatus.queued,
            spec=spec.model_dump(mode="json"),
            dataset=spec.dataset.value,
            architecture=spec.model.value,
            strategy=None,
            experiment_id=experiment.id,
            role=JobRole.pretrain,
        )
        session.add(pretrain)
        session.flush()  # the job exists before the experiment points at it (the keys form a cycle)
        experiment.pretrain_job_id = pretrain.id
        to_send = [pretrain.id]
    else:
        rows = _job_rows(experiment, source, planned)
        session.add_all(rows)
        session.flush()
        to_send = [row.id for row in rows]
    session.commit()

    lost = _send(session, to_send, enqueue)
    if lost:
        advance(session, experiment.id, enqueue=enqueue)  # a failed pre-train fails the experiment
        raise QueueUnavailable(
            f"experiment {experiment.id}: {len(lost)} of {len(to_send)} job(s) could not be queued and "
            "were marked failed. Check the broker (GET /readyz) and post the experiment again."
        )
    session.refresh(experiment)
    return experiment


def on_job_finished(session: Session, job_id: str, enqueue: Enqueue | None = None) -> None:
    """Advance the experiment this job belongs to, if any. Commits. Safe to call more than once."""
    experiment_id = session.scalar(select(Job.experiment_id).where(Job.id == job_id))
    session.rollback()  # a fresh transaction for advance: see every sibling's committed status
    if experiment_id is not None:
        advance(session, experiment_id, enqueue=enqueue)


def _claim_step(session: Session, experiment_id: str, current: str, **values) -> bool:
    """Move the experiment on from `current`; False if someone else already did."""
    won = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == current)
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    return won == 1


def advance(session: Session, experiment_id: str, enqueue: Enqueue | None = None) -> str | None:
    """Take the next step the jobs' states allow; returns the experiment's status after it. Commits.

    pretraining + pre-train succeeded          -> running, fine-tunes and controls created and enqueued
    pretraining + pre-train failed / cancelled -> failed / cancelled
    running + every job ended                  -> succeeded (a fine-tune succeeded) or failed; the
                                                  experiment's plots are written
    """
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        return None
    session.refresh(experiment)
    if experiment.status in EXPERIMENT_TERMINAL:
        return experiment.status
    if experiment.status == ExperimentStatus.pretraining:
        return _after_pretrain(session, experiment, enqueue)
    return _maybe_finish(session, experiment)


def _after_pretrain(session: Session, experiment: Experiment, enqueue: Enqueue | None) -> str:
    pretrain = session.get(Job, experiment.pretrain_job_id)
    session.refresh(pretrain)
    if pretrain.status in (JobStatus.failed, JobStatus.cancelled):
        outcome = (
            ExperimentStatus.failed if pretrain.status == JobStatus.failed else ExperimentStatus.cancelled
        )
        error = f"pre-training job {pretrain.id} {pretrain.status}" + (
            f": {pretrain.error}" if pretrain.error else ""
        )
        if _claim_step(
            session,
            experiment.id,
            ExperimentStatus.pretraining,
            status=outcome,
            error=error[:4000],
            finished_at=utcnow(),
        ):
            log.info("experiment %s: %s", experiment.id, error)
        session.commit()
        session.refresh(experiment)
        return experiment.status
    if pretrain.status != JobStatus.succeeded:
        session.rollback()
        return experiment.status

    # The one caller that moves pretraining -> running creates the jobs, in the same transaction.
    if not _claim_step(session, experiment.id, ExperimentStatus.pretraining, status=ExperimentStatus.running):
        session.rollback()
        session.refresh(experiment)
        return experiment.status
    request = ExperimentCreate.model_validate(experiment.request)
    try:
        planned = plan_finetunes(request, pretrain.architecture)
    except PlanError as exc:  # checked at creation; only a changed engine rule can get here
        session.rollback()
        _claim_step(
            session,
            experiment.id,
            ExperimentStatus.pretraining,
            status=ExperimentStatus.failed,
            error=f"could not plan the fine-tunes: {exc}",
            finished_at=utcnow(),
        )
        session.commit()
        return ExperimentStatus.failed
    rows = _job_rows(experiment, pretrain, planned)
    session.add_all(rows)
    session.commit()
    log.info("experiment %s: pre-train %s succeeded; %d jobs queued", experiment.id, pretrain.id, len(rows))
    _send(session, [row.id for row in rows], enqueue or _default_enqueue())
    return _maybe_finish(session, experiment)


def _maybe_finish(session: Session, experiment: Experiment) -> str:
    statuses = session.execute(
        select(Job.role, Job.status).where(Job.experiment_id == experiment.id, Job.role != JobRole.pretrain)
    ).all()
    if not statuses or any(s not in TERMINAL_STATUSES for _, s in statuses):
        session.rollback()
        return experiment.status
    done = any(role == JobRole.finetune and s == JobStatus.succeeded for role, s in statuses)
    failed = sum(s != JobStatus.succeeded for _, s in statuses)
    # Plots first, committed with the final status: a client that sees the experiment ended finds
    # them. Rendered before the claim so that SQLite's write lock is not held while drawing.
    plots = _render_plots(session, experiment)
    won = _claim_step(
        session,
        experiment.id,
        ExperimentStatus.running,
        status=ExperimentStatus.succeeded if done else ExperimentStatus.failed,
        error=None if done else f"no fine-tune succeeded ({failed} of {len(statuses)} jobs did not)",
        finished_at=utcnow(),
    )
    if won:
        _save_plots(session, experiment.id, plots)
    session.commit()
    session.refresh(experiment)
    return experiment.status


def _render_plots(session: Session, experiment: Experiment) -> list[tuple[str, bytes]]:
    """The experiment's comparison plots; a plotting error is logged, never fails the experiment."""
    from service.artifacts import render_experiment_plots

    try:
        return render_experiment_plots(session, experiment)
    except Exception:
        log.exception("experiment %s: could not draw its plots", experiment.id)
        return []


def _save_plots(session: Session, experiment_id: str, plots: list[tuple[str, bytes]]) -> None:
    from service.artifacts import save_experiment_plots

    try:
        save_experiment_plots(session, experiment_id, plots)
    except OSError:  # a full or read-only disk: the experiment still ends, without its plots
        log.exception("experiment %s: could not write its plots", experiment_id)


def cancel_experiment(session: Session, experiment: Experiment) -> tuple[int, int]:
    """Cancel the experiment, its queued jobs at once and its running jobs at their next batch.
    Returns (jobs cancelled, jobs asked to stop). Raises NotCancellable when it has ended."""
    plots = _render_plots(session, experiment)  # what has finished is still worth a picture
    now = utcnow()
    won = session.execute(
        update(Experiment)
        .where(
            Experiment.id == experiment.id,
            Experiment.status.in_([ExperimentStatus.pretraining, ExperimentStatus.running]),
        )
        .values(status=ExperimentStatus.cancelled, finished_at=now, error="cancelled on request")
        .execution_options(synchronize_session=False)
    ).rowcount
    if not won:
        session.rollback()
        session.refresh(experiment)
        raise NotCancellable(
            f"experiment {experiment.id!r} is already {experiment.status}; only a pretraining or "
            "running experiment can be cancelled"
        )
    mine = Job.experiment_id == experiment.id
    cancelled = session.execute(
        update(Job)
        .where(mine, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    requested = session.execute(
        update(Job)
        .where(mine, Job.status == JobStatus.running)
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    ).rowcount
    _save_plots(session, experiment.id, plots)
    session.commit()
    session.refresh(experiment)
    return cancelled, requested


def notify_job_finished(job_id: str) -> None:
    """The worker's hook, after a job's final status is committed: its own session, never raises."""
    from service.db import get_sessionmaker

    try:
        with get_sessionmaker()() as session:
            on_job_finished(session, job_id)
    except Exception:
        log.exception("job %s: could not advance its experiment", job_id)
