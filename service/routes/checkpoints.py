"""Checkpoints: every trained model, with what it needs to answer /predict."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from core.deletion import checkpoint_disk_bytes
from core.models import Checkpoint
from core.settings import Settings, get_settings
from service.deps import MAX_SKIP, SessionDep
from service.errors import get_or_404
from service.schemas import CheckpointList, CheckpointPublic, ErrorPublic

router = APIRouter(prefix="/checkpoints", tags=["checkpoints"])


@router.get("", response_model=CheckpointList)
def list_checkpoints(
    session: SessionDep,
    skip: Annotated[
        int, Query(ge=0, le=MAX_SKIP, description="Checkpoints to skip (newest first), 0..2147483647.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100, description="Checkpoints per page, 1..100.")] = 100,
) -> CheckpointList:
    """Checkpoints, newest first, with the total count for paging."""
    count = session.scalar(select(func.count()).select_from(Checkpoint)) or 0
    rows = session.scalars(
        select(Checkpoint)
        .order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc())
        .offset(skip)
        .limit(limit)
    ).all()
    return CheckpointList(data=[_public(row, get_settings()) for row in rows], count=count)


@router.get(
    "/{checkpoint_id}",
    response_model=CheckpointPublic,
    responses={404: {"model": ErrorPublic, "description": "No checkpoint with that id."}},
)
def get_checkpoint(session: SessionDep, checkpoint_id: str) -> CheckpointPublic:
    """One checkpoint: job, architecture, data set, strategy, classes, input spec, sha256, size."""
    row = get_or_404(session, Checkpoint, checkpoint_id, "checkpoint")
    return _public(row, get_settings())


def _public(row: Checkpoint, settings: Settings) -> CheckpointPublic:
    """The row, with the bytes its folder takes on disk (disk_bytes)."""
    return CheckpointPublic.model_validate(row).model_copy(
        update={"disk_bytes": checkpoint_disk_bytes(settings, row)}
    )
