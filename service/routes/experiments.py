"""Experiments: the seed's study in one request; follow it, compare its runs, read its report, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select

from core import budgets
from core.datasets import DataUnavailable
from core.experiments import orchestrate
from core.experiments.compare import BASELINE_STRATEGY, build_comparison
from core.experiments.plan import PlanError
from core.experiments.presets import PRESETS
from core.experiments.report import Block, Paragraph, build_report, to_html, to_markdown
from core.experiments.schemas import ExperimentCreate
from core.models import EXPERIMENT_TERMINAL, TERMINAL_STATUSES, Experiment, Job, JobRole, JobStatus
from engine.strategies import variant_name
from service.deps import MAX_SKIP, EnqueueDep, SessionDep, SettingsDep
from service.errors import Responses, get_or_404
from service.experiment_schemas import (
    ExperimentJobPublic,
    ExperimentLinks,
    ExperimentList,
    ExperimentPublic,
    ExperimentSummary,
)
from service.redact import redact, redact_optional
from service.schemas import ErrorPublic

router = APIRouter(prefix="/experiments", tags=["experiments"])

NOT_FOUND: Responses = {404: {"model": ErrorPublic, "description": "No experiment with that id."}}

CREATE_EXAMPLES: dict[str, Any] = {
    "seed": {
        "summary": "The seed's study: resnet18 on STL-10, three strategies, a sweep, controls",
        "value": PRESETS["seed"],
    },
    "reuse": {
        "summary": "Reuse a succeeded pretrain job; partial with two depths, plus lp_ft",
        "value": {
            "name": "depth of freezing",
            "pretrained_job": "3f2b6c1e9a8d4e0f8b7a6c5d4e3f2a1b",
            "strategies": ["partial", "lp_ft"],
            "frozen_blocks": [1, 3],
            "hyperparameters": {"epochs": 4, "lr": 0.001},
            "data": {"image_size": 32},
        },
    },
}


def _get(session: SessionDep, experiment_id: str) -> Experiment:
    return get_or_404(session, Experiment, experiment_id, "experiment")


def _jobs(session: SessionDep, experiment: Experiment) -> list[Job]:
    jobs = session.scalars(
        select(Job).where(Job.experiment_id == experiment.id).order_by(Job.created_at, Job.id)
    ).all()
    # The experiment's own pre-train first; a reused one is not its job.
    return sorted(jobs, key=lambda j: j.role != JobRole.pretrain)


def _summary_fields(experiment: Experiment, jobs: list[Job]) -> dict[str, Any]:
    counts = {s.value: 0 for s in JobStatus}
    for job in jobs:
        counts[job.status] += 1
    progress = sum(1.0 if job.status in (JobStatus.succeeded,) else job.progress for job in jobs)
    return {
        "id": experiment.id,
        "name": experiment.name,
        "status": experiment.status,
        "dataset": experiment.dataset,
        "architecture": experiment.architecture,
        "pretrain_job": experiment.pretrain_job_id,
        "error": redact_optional(experiment.error),
        "job_counts": counts,
        "progress": progress / len(jobs) if jobs else 0.0,
        "created_at": experiment.created_at,
        "finished_at": experiment.finished_at,
        "links": ExperimentLinks(
            self=f"/experiments/{experiment.id}",
            report=f"/experiments/{experiment.id}/report",
            artifacts=f"/experiments/{experiment.id}/artifacts",
            cancel=f"/experiments/{experiment.id}/cancel",
            pretrain_job=f"/jobs/{experiment.pretrain_job_id}" if experiment.pretrain_job_id else None,
        ),
    }


def _variant(job: Job) -> str | None:
    """As the comparison names it: the strategy variant, probe-k, pixels for a baseline; None for
    the pre-train."""
    if job.role == JobRole.baseline:
        return BASELINE_STRATEGY
    if not job.strategy:
        return None
    return variant_name(job.strategy, job.spec.get("frozen_blocks"), job.spec.get("probe_block"))


def _job_public(job: Job) -> ExperimentJobPublic:
    hp = job.spec.get("hyperparameters", {})
    return ExperimentJobPublic(
        id=job.id,
        role=job.role,
        strategy=job.strategy,
        variant=_variant(job),
        frozen_blocks=job.spec.get("frozen_blocks"),
        optimizer=hp.get("optimizer", "adam"),
        lr=hp.get("lr", 0.0),
        batch_size=hp.get("batch_size", 0),
        status=job.status,
        progress=job.progress,
        current_epoch=job.current_epoch,
        error=redact_optional(job.error),
    )


def _public(session: SessionDep, experiment: Experiment) -> ExperimentPublic:
    jobs = _jobs(session, experiment)
    comparison = build_comparison(session, experiment) if experiment.status in EXPERIMENT_TERMINAL else None
    return ExperimentPublic(
        **_summary_fields(experiment, jobs),
        request=experiment.request,
        jobs=[_job_public(j) for j in jobs],
        comparison=comparison,
        summary=comparison.summary if comparison is not None else None,
        layer_probes=comparison.layer_probes if comparison is not None and comparison.layer_probes else None,
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExperimentPublic,
    responses={
        404: {"model": ErrorPublic, "description": "pretrained_job does not exist."},
        409: {"model": ErrorPublic, "description": "pretrained_job is not a succeeded pretrain job."},
        429: {"model": ErrorPublic, "description": "TRANSFERLAB_MAX_ACTIVE_JOBS would be passed."},
        503: {
            "model": ErrorPublic,
            "description": "The queue refused a job (it was marked failed), or the database is unavailable.",
        },
    },
)
def create_experiment(
    request: Annotated[ExperimentCreate, Body(openapi_examples=CREATE_EXAMPLES)],
    session: SessionDep,
    enqueue: EnqueueDep,
    response: Response,
    settings: SettingsDep,
) -> ExperimentPublic:
    """Start a study. With `pretrain`, its pre-train job is queued now and the fine-tunes (each
    strategy variant x sweep point, each with a control) once it succeeds; with `pretrained_job`
    they are queued at once. Returns at once; follow `links.self`."""
    try:
        with budgets.admitting():  # the count of active jobs and the rows it admits, one request at a time
            experiment = orchestrate.create_experiment(session, request, enqueue, settings)
    except (PlanError, DataUnavailable) as exc:
        session.rollback()
        raise RequestValidationError([exc.as_error()]) from None
    except budgets.BudgetExceeded as exc:
        session.rollback()
        raise RequestValidationError([exc.as_error()]) from None
    except budgets.QueueFull as exc:
        session.rollback()
        headers = {"Retry-After": str(exc.retry_after_seconds)}
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=str(exc), headers=headers) from None
    except orchestrate.SourceNotFound as exc:
        session.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except orchestrate.SourceNotUsable as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    except orchestrate.QueueUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    response.headers["Location"] = f"/experiments/{experiment.id}"
    return _public(session, experiment)


@router.get("", response_model=ExperimentList)
def list_experiments(
    session: SessionDep,
    skip: Annotated[
        int, Query(ge=0, le=MAX_SKIP, description="Experiments to skip (newest first), 0..2147483647.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100, description="Experiments per page, 1..100.")] = 100,
) -> ExperimentList:
    """Experiments, newest first, with the total count for paging."""
    total = session.scalar(select(func.count()).select_from(Experiment)) or 0
    rows = session.scalars(
        select(Experiment)
        .order_by(Experiment.created_at.desc(), Experiment.id.desc())
        .offset(skip)
        .limit(limit)
    ).all()
    return ExperimentList(
        data=[ExperimentSummary(**_summary_fields(e, _jobs(session, e))) for e in rows], count=total
    )


@router.get("/{experiment_id}", response_model=ExperimentPublic, responses=NOT_FOUND)
def get_experiment(session: SessionDep, experiment_id: str) -> ExperimentPublic:
    """Status, jobs with their progress, and once every job has ended the comparison table.

    Reading changes nothing: experiments move on in the worker as their jobs end, and in the reaper
    (every stale window / 2) when a worker died before it could say so."""
    return _public(session, _get(session, experiment_id))


@router.post(
    "/{experiment_id}/cancel",
    response_model=ExperimentPublic,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorPublic, "description": "The experiment has already ended."},
    },
)
def cancel_experiment(session: SessionDep, experiment_id: str) -> ExperimentPublic:
    """Cancel the experiment: its queued jobs at once, its running jobs at their next batch."""
    experiment = _get(session, experiment_id)
    try:
        orchestrate.cancel_experiment(session, experiment)
    except orchestrate.NotCancellable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return _public(session, experiment)


@router.get(
    "/{experiment_id}/report",
    response_class=Response,  # no media type of its own: each status below says its content type
    responses={
        200: {
            "content": {
                "text/markdown": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
            "description": "The report: Markdown (plots linked), or with ?format=html HTML (plots embedded).",
        },
        **NOT_FOUND,
        409: {"model": ErrorPublic, "description": "The experiment has not ended yet."},
    },
)
def get_report(
    session: SessionDep,
    settings: SettingsDep,
    experiment_id: str,
    format: Annotated[
        str, Query(pattern="^(markdown|html)$", description="markdown (default) or html.")
    ] = "markdown",
) -> Response:
    """The report (seed sections 6-10), every number from the stored results. Available once the
    experiment has ended (succeeded, failed or cancelled; the last two say the report is partial)."""
    experiment = _get(session, experiment_id)
    if experiment.status not in EXPERIMENT_TERMINAL:
        jobs = _jobs(session, experiment)
        ended = sum(j.status in TERMINAL_STATUSES for j in jobs)
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"experiment {experiment_id!r} is {experiment.status} ({ended} of {len(jobs)} jobs "
            f"ended so far); the report is ready when it ends. Follow GET /experiments/{experiment_id}.",
        )
    blocks = _report_blocks(session, experiment)
    if format == "html":
        return HTMLResponse(to_html(blocks, experiment.name, settings))
    return Response(to_markdown(blocks), media_type="text/markdown; charset=utf-8")


def _report_blocks(session: SessionDep, experiment: Experiment) -> list[Block]:
    """The report, its quote of the experiment's error (a pre-train's may name a server path) redacted."""
    blocks = build_report(session, experiment)
    if experiment.error:
        shown = redact(experiment.error)
        for block in blocks:
            if isinstance(block, Paragraph):
                block.text = block.text.replace(experiment.error, shown)
    return blocks
