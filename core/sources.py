"""Where a fine-tune starts: a succeeded job's checkpoint, a checkpoint by id, or ImageNet weights.

    source = resolve_source(session, job_in, settings)   # SourceProblem naming the field otherwise
    Job(architecture=source.architecture, source_job_id=source.job_id, ...)

Checked when the job is posted, so that a 202 means the worker finds its source: an ImageNet weight
file that is absent (and may not be downloaded) is a 422 naming the file and how to get it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from core.models import Checkpoint, Job, JobStatus
from core.requests import FinetuneJobCreate
from core.settings import Settings
from engine.errors import CheckpointError
from engine.pretrained import WEIGHTS_FOLDER, how_to_get, weights_file_name


@dataclass(frozen=True)
class ResolvedSource:
    architecture: str
    job_id: str | None = None  # source (a job's id)
    checkpoint_id: str | None = None  # source_checkpoint


class SourceProblem(Exception):
    """A source that cannot be used: the HTTP status (404, 409, 422), the field, and what to do."""

    def __init__(self, status: int, field: str, message: str, value: object = None):
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.value = value


def weights_dir(settings: Settings) -> Path:
    """<data_root>/weights: torchvision's ImageNet weight files under their own names."""
    return settings.data_root / WEIGHTS_FOLDER


def check_imagenet_weights(architecture: str, settings: Settings) -> None:
    """SourceProblem(422) when the architecture has no ImageNet weights, or its file is absent and
    TRANSFERLAB_DOWNLOAD is off (the worker would fail on it)."""
    try:
        name = weights_file_name(architecture)
    except CheckpointError as exc:
        raise SourceProblem(422, "model", str(exc), architecture) from None
    if not settings.download and not (weights_dir(settings) / name).is_file():
        raise SourceProblem(422, "source_weights", how_to_get(architecture, name), "imagenet")


def resolve_source(session: Session, job_in: FinetuneJobCreate, settings: Settings) -> ResolvedSource:
    """The fine-tune's architecture and source, or SourceProblem naming what is wrong."""
    problem = job_in.source_error()
    if problem is not None:
        raise SourceProblem(422, problem[0], problem[1])
    if job_in.source_weights is not None:
        if job_in.model is None:
            raise SourceProblem(422, "model", "source_weights needs the architecture whose weights to use")
        check_imagenet_weights(job_in.model.value, settings)
        return ResolvedSource(job_in.model.value)
    if job_in.model is not None:
        raise SourceProblem(
            422, "model", "a fine-tune keeps its source's architecture; give model only with source_weights"
        )
    if job_in.source_checkpoint is not None:
        checkpoint = session.get(Checkpoint, job_in.source_checkpoint)
        if checkpoint is None:
            raise SourceProblem(
                404, "source_checkpoint", f"checkpoint {job_in.source_checkpoint!r} not found"
            )
        return ResolvedSource(checkpoint.architecture, checkpoint_id=checkpoint.id)
    source = session.get(Job, job_in.source)
    if source is None:
        raise SourceProblem(404, "source", f"job {job_in.source!r} not found; give the id of a succeeded job")
    if source.status != JobStatus.succeeded or source.checkpoint is None:
        raise SourceProblem(
            409,
            "source",
            f"job {source.id!r} is {source.status}"
            + ("" if source.status != JobStatus.succeeded else " but has no checkpoint")
            + "; fine-tuning needs a succeeded job with a checkpoint",
        )
    return ResolvedSource(source.architecture, job_id=source.id)
