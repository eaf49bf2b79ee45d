"""Jobs: post a pretrain or finetune run, follow it, read its metrics, cancel it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from core import budgets, datasets
from core.cost_record import read_legacy_cost_details
from core.deletion import job_disk_bytes
from core.jobs import CancelOutcome, cancel, create_and_send
from core.models import Cost, EpochMetric, Evaluation, Job, JobStatus
from core.settings import get_settings
from core.sources import ResolvedSource, SourceProblem, resolve_source
from engine.spec import PretrainSpec
from service.deps import MAX_SKIP, EnqueueDep, SessionDep, SettingsDep
from service.errors import Responses, get_or_404, not_found
from service.schemas import (
    ErrorPublic,
    FinetuneJobCreate,
    JobCreate,
    JobList,
    JobPublic,
    MetricsPublic,
    PretrainJobCreate,
)

router = APIRouter(prefix="/jobs", tags=["jobs"])

NOT_FOUND: Responses = {404: {"model": ErrorPublic, "description": "No job with that id."}}

CREATE_EXAMPLES: dict[str, Any] = {
    "pretrain": {
        "summary": "Pre-train resnet18 on STL-10",
        "description": "The seed's source model: 96x96 STL-10, augmented, cosine schedule.",
        "value": {
            "kind": "pretrain",
            "dataset": "stl10",
            "model": "resnet18",
            "hyperparameters": {"epochs": 30, "batch_size": 128, "optimizer": "adam", "lr": 0.001},
            "data": {"image_size": 96, "val_fraction": 0.1, "augment": True},
        },
    },
    "finetune": {
        "summary": "Fine-tune it on MNIST, first two blocks frozen",
        "description": "source: the id of a succeeded job; frozen_blocks is for strategy partial.",
        "value": {
            "kind": "finetune",
            "source": "3f2b6c1e9a8d4e0f8b7a6c5d4e3f2a1b",
            "dataset": "mnist",
            "strategy": "partial",
            "frozen_blocks": 2,
            "hyperparameters": {
                "epochs": 5,
                "batch_size": 128,
                "lr": 0.001,
                "extractor_lr_factor": 0.1,
            },
            "data": {"image_size": 96, "train_samples": 10000},
            "random_init": False,
        },
    },
}


def _get_job(session: SessionDep, job_id: str) -> Job:
    return get_or_404(session, Job, job_id, "job")


def _check_source(session: SessionDep, job_in: FinetuneJobCreate, settings: SettingsDep) -> ResolvedSource:
    """The fine-tune's source (core.sources), or its problem as a 404, 409 or 422 naming the field."""
    try:
        source = resolve_source(session, job_in, settings)
    except SourceProblem as exc:
        if exc.status == 422:
            error = {
                "type": "value_error",
                "loc": ("body", "finetune", exc.field),
                "msg": str(exc),
                "input": exc.value,
            }
            raise RequestValidationError([error]) from None
        raise HTTPException(exc.status, detail=str(exc)) from None
    _check_spec(job_in, source.architecture)
    return source


def _check_spec(job_in: PretrainJobCreate | FinetuneJobCreate, architecture: str) -> None:
    """The engine's own rules for what the spec's bounds cannot see (frozen_blocks against the model's
    blocks, lp_ft's two phases, nesterov without sgd): a 422 naming the field, so that a 202 means the
    worker accepts the spec."""
    from engine.errors import SpecError
    from engine.run import validate_spec  # imports torch: only on this path

    body = job_in.model_dump(mode="json")
    spec = job_in.to_spec() if isinstance(job_in, FinetuneJobCreate) else PretrainSpec.model_validate(body)
    try:
        validate_spec(spec, architecture)
    except SpecError as exc:
        path = exc.field.split(".")
        value: Any = body
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        error = {"type": "value_error", "loc": ("body", job_in.kind, *path), "msg": str(exc), "input": value}
        raise RequestValidationError([error]) from None


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={
        404: {"model": ErrorPublic, "description": "finetune: the source job or checkpoint does not exist."},
        409: {"model": ErrorPublic, "description": "finetune: the source job has not succeeded."},
        429: {"model": ErrorPublic, "description": "TRANSFERLAB_MAX_ACTIVE_JOBS are queued or running."},
        503: {
            "model": ErrorPublic,
            "description": "The queue is unreachable (the job was marked failed), or the database is.",
        },
    },
)
def create_job(
    job_in: Annotated[JobCreate, Body(openapi_examples=CREATE_EXAMPLES)],
    session: SessionDep,
    enqueue: EnqueueDep,
    response: Response,
    settings: SettingsDep,
) -> JobPublic:
    """Queue a pretrain or finetune run. Returns at once with the queued job; follow its `links`."""
    if isinstance(job_in, FinetuneJobCreate):
        source = _check_source(session, job_in, settings)
        finetune = job_in.to_spec()
        job = Job(
            kind="finetune",
            dataset=finetune.dataset,
            architecture=source.architecture,
            strategy=finetune.strategy.value,
            source_job_id=source.job_id,
            source_checkpoint_id=source.checkpoint_id,
            spec=finetune.model_dump(mode="json"),
        )
    else:
        _check_spec(job_in, job_in.model.value)
        pretrain = PretrainSpec.model_validate(job_in.model_dump())
        job = Job(
            kind="pretrain",
            dataset=pretrain.dataset,
            architecture=pretrain.model.value,
            strategy=None,
            spec=pretrain.model_dump(mode="json"),
        )
    try:  # its data under the data root (or downloadable), usable
        datasets.check_job_data(settings, job.dataset, ("body", job_in.kind, "dataset"))
    except datasets.DataUnavailable as exc:
        raise RequestValidationError([exc.as_error()]) from None
    try:  # its estimated work and memory, within the TRANSFERLAB_MAX_JOB_* limits
        estimate = budgets.estimate_job(
            job_in, job.architecture, datasets.split_images(settings, job.dataset)
        )
        budgets.check_job(estimate, settings)
    except budgets.BudgetExceeded as exc:
        raise RequestValidationError([exc.as_error(job_in.kind)]) from None
    with budgets.admitting():
        try:
            budgets.check_capacity(session, settings, new_jobs=1)
        except budgets.QueueFull as exc:
            session.rollback()
            headers = {"Retry-After": str(exc.retry_after_seconds)}
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=str(exc), headers=headers) from None
        lost = create_and_send(session, [job], enqueue)
    if lost:  # never leave a job queued that no worker will receive
        session.refresh(job)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"job {job.id} {job.error}; it was marked failed. Check the broker "
            "(GET /readyz) and post the job again.",
        )

    response.headers["Location"] = f"/jobs/{job.id}"
    session.refresh(job)
    return JobPublic.from_row(job)


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    status_: Annotated[
        JobStatus | None, Query(alias="status", description="Only jobs in this status.")
    ] = None,
    kind: Annotated[Literal["pretrain", "finetune"] | None, Query(description="Only this kind.")] = None,
    skip: Annotated[
        int, Query(ge=0, le=MAX_SKIP, description="Jobs to skip (newest first), 0..2147483647.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page, 1..100.")] = 100,
) -> JobList:
    """Jobs, newest first, with the total count for paging."""
    conditions = []
    if status_ is not None:
        conditions.append(Job.status == status_)
    if kind is not None:
        conditions.append(Job.kind == kind)
    count = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
    rows = session.scalars(
        select(Job)
        .where(*conditions)
        .options(selectinload(Job.checkpoint))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .offset(skip)
        .limit(limit)
    ).all()
    return JobList(data=[JobPublic.from_row(row) for row in rows], count=count)


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_FOUND)
def get_job(session: SessionDep, job_id: str) -> JobPublic:
    """One job: status, progress, epoch, attempts, error, timestamps, worker, device, spec, and the
    bytes its files take (`disk_bytes`)."""
    job = _get_job(session, job_id)
    return JobPublic.from_row(job).model_copy(update={"disk_bytes": job_disk_bytes(get_settings(), job)})


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses={
        200: {"description": "The job was queued and is now cancelled."},
        202: {
            "model": JobPublic,
            "description": "The job is running; it stops at its next check (within about a second) "
            "and ends cancelled: a cancel accepted here wins over a finish not yet written.",
        },
        **NOT_FOUND,
        409: {"model": ErrorPublic, "description": "The job has already finished."},
    },
)
def cancel_job(session: SessionDep, job_id: str, response: Response) -> JobPublic:
    """Cancel a job: a queued one at once (200), a running one at its next batch (202)."""
    outcome = cancel(session, job_id)
    if outcome == CancelOutcome.missing:
        raise not_found("job", job_id)
    job = _get_job(session, job_id)
    if outcome == CancelOutcome.cancelled:
        response.status_code = status.HTTP_200_OK
        return JobPublic.from_row(job)
    if outcome == CancelOutcome.requested:
        response.status_code = status.HTTP_202_ACCEPTED
        return JobPublic.from_row(job)
    raise HTTPException(
        status.HTTP_409_CONFLICT,
        detail=f"job {job_id!r} is already {job.status}; only queued or running jobs can be cancelled",
    )


@router.get("/{job_id}/metrics", response_model=MetricsPublic, responses=NOT_FOUND)
def get_metrics(
    session: SessionDep,
    job_id: str,
    since_epoch: Annotated[
        int, Query(ge=0, le=1000, description="Only epochs after this one (polling: the last one you have).")
    ] = 0,
    settings: SettingsDep = None,  # type: ignore[assignment]  # the dashboard calls it without
) -> MetricsPublic:
    """Loss and accuracy per epoch and phase (so far, while running), then evaluation and cost.
    Polling a running job: pass `since_epoch` (or follow GET /jobs/{id}/events instead)."""
    _get_job(session, job_id)
    epochs = session.scalars(
        select(EpochMetric)
        .where(EpochMetric.job_id == job_id, EpochMetric.epoch > since_epoch)
        .order_by(EpochMetric.epoch, EpochMetric.phase)
    ).all()
    evaluation = session.get(Evaluation, job_id)
    cost = session.get(Cost, job_id)
    metrics = MetricsPublic.model_validate(
        {"epochs": epochs, "evaluation": evaluation, "cost": cost}, from_attributes=True
    )
    if metrics.cost is not None and cost is not None:  # both or neither; the second is for mypy
        details = cost.details
        if details is None and settings is not None:  # finished before migration 0006: its file
            details = read_legacy_cost_details(settings, job_id)
        metrics.cost.phase_seconds = (details or {}).get("phase_seconds")
        metrics.cost.numerics = (details or {}).get("numerics")
    return metrics
