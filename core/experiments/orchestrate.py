"""An experiment's life: create its jobs, fan out the fine-tunes once the pre-train succeeded, finish.

    experiment = create_experiment(session, request, enqueue, settings)   # POST /experiments
    on_job_finished(session, job_id, enqueue)                    # the worker, after a job ends
    advance_open(session, enqueue)                               # the reaper, every pass

`EXPERIMENT_TRANSITIONS` is the experiment's state machine; `_move` is the only code that writes an
experiment's status, one conditional UPDATE each. Every step is idempotent, so the worker's hook, a
second worker and the reaper (the safety net for a hook that never ran: a worker killed after its
last commit, a job failed by the reaper) can all call it; only one of them fans out or finishes.
Requests never advance an experiment. Call it after the job's final status is committed, with a
fresh transaction: the last job to end then always sees every sibling ended. Job rows change only
through core.jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from core import budgets, datasets, jobs
from core.db import get_sessionmaker
from core.experiments.plan import PlanError, PlannedJob, check_request, plan_finetunes
from core.experiments.plots import render_experiment_plots, save_experiment_plots
from core.experiments.schemas import ExperimentCreate
from core.models import (
    EXPERIMENT_TERMINAL,
    TERMINAL_STATUSES,
    Experiment,
    ExperimentStatus,
    Job,
    JobRole,
    JobStatus,
    utcnow,
)
from core.settings import Settings
from core.sources import SourceProblem, check_imagenet_weights
from engine.spec import FinetuneSpec, PretrainSpec

log = logging.getLogger(__name__)

Enqueue = Callable[[str], None]
E = ExperimentStatus


@dataclass(frozen=True)
class ExperimentRule:
    sources: frozenset[ExperimentStatus]
    target: ExperimentStatus
    when: str  # for people (docs/architecture.md)


EXPERIMENT_TRANSITIONS: dict[str, ExperimentRule] = {
    "fan_out": ExperimentRule(frozenset([E.pretraining]), E.running, "its pre-train succeeded; jobs created"),
    "pretrain_failed": ExperimentRule(frozenset([E.pretraining]), E.failed, "its pre-train failed"),
    "pretrain_cancelled": ExperimentRule(
        frozenset([E.pretraining]), E.cancelled, "its pre-train was cancelled"
    ),
    "plan_failed": ExperimentRule(frozenset([E.pretraining]), E.failed, "the fine-tunes cannot be planned"),
    "succeed": ExperimentRule(frozenset([E.running]), E.succeeded, "every job ended, a fine-tune succeeded"),
    "fail": ExperimentRule(frozenset([E.running]), E.failed, "every job ended, no fine-tune succeeded"),
    "cancel": ExperimentRule(frozenset([E.pretraining, E.running]), E.cancelled, "POST .../cancel"),
}


class SourceNotFound(LookupError):
    """pretrained_job names no job (404)."""


class SourceNotUsable(RuntimeError):
    """pretrained_job is not a succeeded pretrain job with a checkpoint (409)."""


class NotCancellable(RuntimeError):
    """The experiment has already ended (409)."""


class QueueUnavailable(RuntimeError):
    """A job could not be sent to the broker; it was marked failed (503)."""


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
    rows: list[Job] = []
    for p in planned:
        if not isinstance(p.spec, FinetuneSpec):  # a baseline: its own model, from scratch
            rows.append(
                Job(
                    kind="pretrain",
                    spec=p.spec.model_dump(mode="json"),
                    dataset=p.spec.dataset,
                    architecture=p.spec.model.value,
                    strategy=None,
                    experiment_id=experiment.id,
                    role=p.role,
                    created_at=start + timedelta(microseconds=len(rows)),
                )
            )
            continue
        imagenet = p.spec.source_weights is not None  # no source job: the weights file is the source
        rows.append(
            Job(
                kind="finetune",
                spec=p.spec.model_dump(mode="json"),
                dataset=p.spec.dataset,
                architecture=source.architecture,
                strategy=p.spec.strategy.value,
                source_job_id=None if imagenet else source.id,
                experiment_id=experiment.id,
                role=p.role,
                # Distinct, increasing times keep the plan's order in every listing.
                created_at=start + timedelta(microseconds=len(rows)),
            )
        )
    return rows


def create_experiment(
    session: Session, request: ExperimentCreate, enqueue: Enqueue, settings: Settings
) -> Experiment:
    """Validate, create and enqueue. Raises PlanError and budgets.BudgetExceeded (422),
    SourceNotFound (404), SourceNotUsable (409), core.datasets.DataUnavailable (422) and
    budgets.QueueFull (429) before anything is written, and QueueUnavailable (503) when the broker
    refused a job. Call it inside budgets.admitting()."""
    check_request(request)
    if request.pretrain is not None:
        datasets.check_job_data(settings, request.pretrain.dataset, ("body", "pretrain", "dataset"))
    datasets.check_job_data(settings, request.dataset, ("body", "dataset"))
    source = _source_job(session, request.pretrained_job) if request.pretrained_job else None
    if request.pretrain is not None:
        architecture = request.pretrain.model.value
    elif source is not None:
        architecture = source.architecture
    else:  # check_request guarantees one of the two
        raise PlanError(("pretrain",), "give either pretrain or pretrained_job")
    # Planned now even when the fine-tunes wait for the pre-train: a bad frozen_blocks is a 422 today,
    # not a failed experiment an hour from now.
    planned = plan_finetunes(request, architecture)
    if request.imagenet:  # the weights file is there now, or may be downloaded: not a failure later
        try:
            check_imagenet_weights(architecture, settings)
        except SourceProblem as exc:
            raise PlanError(("imagenet",), str(exc), True) from None
    new_jobs = budgets.check_experiment(request, planned, architecture, settings)
    budgets.check_capacity(session, settings, new_jobs)

    experiment = Experiment(
        name=request.name,
        status=ExperimentStatus.pretraining if source is None else ExperimentStatus.running,
        request=request.model_dump(mode="json"),
        dataset=request.dataset,
        architecture=architecture,
        pretrain_job_id=source.id if source is not None else None,
    )
    session.add(experiment)
    session.flush()
    if source is None:
        assert request.pretrain is not None
        spec = PretrainSpec.model_validate(request.pretrain.model_dump())
        pretrain = Job(
            kind="pretrain",
            spec=spec.model_dump(mode="json"),
            dataset=spec.dataset,
            architecture=spec.model.value,
            strategy=None,
            experiment_id=experiment.id,
            role=JobRole.pretrain,
            status=JobStatus.queued,
        )
        session.add(pretrain)
        session.flush()  # the job exists before the experiment points at it (the keys form a cycle)
        experiment.pretrain_job_id = pretrain.id
        to_create = [pretrain]
    else:
        to_create = _job_rows(experiment, source, planned)
    lost = jobs.create_and_send(session, to_create, enqueue)
    if lost:
        advance(session, experiment.id, enqueue)  # a failed pre-train fails the experiment
        raise QueueUnavailable(
            f"experiment {experiment.id}: {len(lost)} of {len(to_create)} job(s) could not be queued and "
            "were marked failed. Check the broker (GET /readyz) and post the experiment again."
        )
    session.refresh(experiment)
    return experiment


def on_job_finished(session: Session, job_id: str, enqueue: Enqueue) -> None:
    """Advance the experiment this job belongs to, if any. Commits. Safe to call more than once."""
    experiment_id = session.scalar(select(Job.experiment_id).where(Job.id == job_id))
    session.rollback()  # a fresh transaction for advance: see every sibling's committed status
    if experiment_id is not None:
        advance(session, experiment_id, enqueue)


def _move(session: Session, experiment_id: str, transition: str, **values: object) -> bool:
    """The experiment's one status write: UPDATE ... WHERE status IN <sources>. False if another
    caller already moved it. Leaves committing to the caller."""
    rule = EXPERIMENT_TRANSITIONS[transition]
    if rule.target in EXPERIMENT_TERMINAL:
        values.setdefault("finished_at", utcnow())
    result = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status.in_(rule.sources))
        .values(status=rule.target, **values)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount == 1


def advance(session: Session, experiment_id: str, enqueue: Enqueue) -> str | None:
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


def advance_open(session: Session, enqueue: Enqueue) -> None:
    """advance() every experiment that has not ended (the reaper's safety net). Commits."""
    open_ids = session.scalars(
        select(Experiment.id).where(Experiment.status.not_in(EXPERIMENT_TERMINAL))
    ).all()
    session.rollback()
    for experiment_id in open_ids:
        try:
            advance(session, experiment_id, enqueue)
        except Exception:
            session.rollback()
            log.exception("experiment %s: could not advance; the next pass tries again", experiment_id)


def _after_pretrain(session: Session, experiment: Experiment, enqueue: Enqueue) -> str:
    pretrain = session.get(Job, experiment.pretrain_job_id)
    if pretrain is None:  # the pre-train row is written before the experiment points at it
        raise LookupError(f"experiment {experiment.id}: its pre-train job is missing")
    session.refresh(pretrain)
    if pretrain.status in (JobStatus.failed, JobStatus.cancelled):
        transition = "pretrain_failed" if pretrain.status == JobStatus.failed else "pretrain_cancelled"
        error = f"pre-training job {pretrain.id} {pretrain.status}" + (
            f": {pretrain.error}" if pretrain.error else ""
        )
        if _move(session, experiment.id, transition, error=error[:4000]):
            log.info("experiment %s: %s", experiment.id, error)
        session.commit()
        session.refresh(experiment)
        return experiment.status
    if pretrain.status != JobStatus.succeeded:
        session.rollback()
        return experiment.status

    request = ExperimentCreate.model_validate(experiment.request)
    try:
        planned = plan_finetunes(request, pretrain.architecture)
    except PlanError as exc:  # checked at creation; only a changed engine rule can get here
        _move(session, experiment.id, "plan_failed", error=f"could not plan the fine-tunes: {exc}")
        session.commit()
        return ExperimentStatus.failed
    # The one caller that moves pretraining -> running creates the jobs, in the same transaction.
    if not _move(session, experiment.id, "fan_out"):
        session.rollback()
        session.refresh(experiment)
        return experiment.status
    rows = _job_rows(experiment, pretrain, planned)
    jobs.create_and_send(session, rows, enqueue)  # a refused send fails that job; the rest go on
    log.info("experiment %s: pre-train %s succeeded; %d jobs queued", experiment.id, pretrain.id, len(rows))
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
    # them. Rendered before the move so that SQLite's write lock is not held while drawing.
    plots = _render_plots(session, experiment)
    if done:
        won = _move(session, experiment.id, "succeed", error=None)
    else:
        won = _move(
            session,
            experiment.id,
            "fail",
            error=f"no fine-tune succeeded ({failed} of {len(statuses)} jobs did not)",
        )
    if won:
        _save_plots(session, experiment.id, plots)
    session.commit()
    session.refresh(experiment)
    return experiment.status


def _render_plots(session: Session, experiment: Experiment) -> list[tuple[str, bytes]]:
    """The experiment's comparison plots; a plotting error is logged, never fails the experiment."""
    try:
        return render_experiment_plots(session, experiment)
    except Exception:
        log.exception("experiment %s: could not draw its plots", experiment.id)
        return []


def _save_plots(session: Session, experiment_id: str, plots: list[tuple[str, bytes]]) -> None:
    try:
        save_experiment_plots(session, experiment_id, plots)
    except OSError:  # a full or read-only disk: the experiment still ends, without its plots
        log.exception("experiment %s: could not write its plots", experiment_id)


def cancel_experiment(session: Session, experiment: Experiment) -> tuple[int, int]:
    """Cancel the experiment, its queued jobs at once and its running jobs at their next check.
    Returns (jobs cancelled, jobs asked to stop). Raises NotCancellable when it has ended."""
    plots = _render_plots(session, experiment)  # what has finished is still worth a picture
    if not _move(session, experiment.id, "cancel", error="cancelled on request"):
        session.rollback()
        session.refresh(experiment)
        raise NotCancellable(
            f"experiment {experiment.id!r} is already {experiment.status}; only a pretraining or "
            "running experiment can be cancelled"
        )
    counts = jobs.cancel_experiment_jobs(session, experiment.id)
    _save_plots(session, experiment.id, plots)
    session.commit()
    session.refresh(experiment)
    return counts


def notify_job_finished(job_id: str, enqueue: Enqueue) -> None:
    """The worker's hook, after a job's final status is committed: its own session, never raises."""
    try:
        with get_sessionmaker()() as session:
            on_job_finished(session, job_id, enqueue)
    except Exception:
        log.exception("job %s: could not advance its experiment", job_id)


def transitions_markdown() -> str:
    """EXPERIMENT_TRANSITIONS as the Markdown table docs/architecture.md shows (a test keeps them equal)."""
    lines = ["| transition | from | to | when |", "|---|---|---|---|"]
    for name, rule in EXPERIMENT_TRANSITIONS.items():
        lines.append(
            f"| `{name}` | {', '.join(sorted(map(str, rule.sources)))} | {rule.target} | {rule.when} |"
        )
    return "\n".join(lines)
