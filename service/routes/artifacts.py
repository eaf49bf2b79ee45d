"""Artifacts: the PNG plots of a job and of an experiment, listed and served by name.

A file is found through its row (owner and name), never from a path the client sent."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from core.artifacts import artifact_file
from core.job_plots import draw_missing_job_plots
from core.models import Artifact, Experiment, Job
from service.deps import SessionDep, SettingsDep
from service.errors import Responses, get_or_404
from service.experiment_schemas import ArtifactList, ArtifactPublic
from service.schemas import ErrorPublic

router = APIRouter(tags=["artifacts"])

NOT_FOUND: Responses = {404: {"model": ErrorPublic, "description": "No such job, experiment or artifact."}}
PNG_RESPONSE: Responses = {200: {"content": {"image/png": {}}, "description": "The file."}}


def _list(session: SessionDep, owner, base: str) -> ArtifactList:
    rows = session.scalars(select(Artifact).where(owner).order_by(Artifact.name)).all()
    return ArtifactList(
        data=[
            ArtifactPublic(
                name=row.name,
                title=row.title,
                media_type=row.media_type,
                size=row.size_bytes,
                url=f"{base}/{row.name}",
                created_at=row.created_at,
            )
            for row in rows
        ],
        count=len(rows),
    )


def _file(session: SessionDep, settings: SettingsDep, owner, name: str, what: str) -> FileResponse:
    row = session.scalar(select(Artifact).where(owner, Artifact.name == name))
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"{what} has no artifact named {name!r}; list them first"
        )
    try:
        path = artifact_file(settings, row)
    except ValueError:  # a stored path outside the artifacts folder: never served
        path = None
    if path is None or not path.is_file():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"artifact {name!r} of {what} is recorded but its file is gone"
        )
    return FileResponse(path, media_type=row.media_type, filename=row.name, content_disposition_type="inline")


def _job(session: SessionDep, job_id: str) -> Job:
    return get_or_404(session, Job, job_id, "job")


def _experiment(session: SessionDep, experiment_id: str) -> Experiment:
    return get_or_404(session, Experiment, experiment_id, "experiment")


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactList, responses=NOT_FOUND)
def list_job_artifacts(session: SessionDep, settings: SettingsDep, job_id: str) -> ArtifactList:
    """A job's plots: confusion matrix, correct and misclassified test images, loss/accuracy curves.
    A succeeded job's are drawn at its first listing (a fraction of a second), then served as files."""
    draw_missing_job_plots(session, settings, _job(session, job_id))
    return _list(session, Artifact.job_id == job_id, f"/jobs/{job_id}/artifacts")


@router.get(
    "/jobs/{job_id}/artifacts/{name}", response_class=FileResponse, responses={**PNG_RESPONSE, **NOT_FOUND}
)
def get_job_artifact(session: SessionDep, settings: SettingsDep, job_id: str, name: str) -> FileResponse:
    """One of a job's artifacts, by the name its list gives (drawn now if this is its first look)."""
    draw_missing_job_plots(session, settings, _job(session, job_id))
    return _file(session, settings, Artifact.job_id == job_id, name, f"job {job_id!r}")


@router.get("/experiments/{experiment_id}/artifacts", response_model=ArtifactList, responses=NOT_FOUND)
def list_experiment_artifacts(session: SessionDep, experiment_id: str) -> ArtifactList:
    """An experiment's plots: accuracy against training time and trainable parameters, per-class F1."""
    _experiment(session, experiment_id)
    return _list(session, Artifact.experiment_id == experiment_id, f"/experiments/{experiment_id}/artifacts")


@router.get(
    "/experiments/{experiment_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={**PNG_RESPONSE, **NOT_FOUND},
)
def get_experiment_artifact(
    session: SessionDep, settings: SettingsDep, experiment_id: str, name: str
) -> FileResponse:
    """One of an experiment's artifacts, by the name its list gives."""
    _experiment(session, experiment_id)
    return _file(
        session, settings, Artifact.experiment_id == experiment_id, name, f"experiment {experiment_id!r}"
    )
