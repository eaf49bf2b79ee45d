"""Checkpoints: every trained (or imported) model, with what it needs to answer /predict; download,
import, name and tag them."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sqlalchemy import func, select
from starlette.background import BackgroundTask

from core.checkpoint_archive import ArchiveRefused, import_archive, record_import, write_archive
from core.checkpoint_labels import CheckpointLabels
from core.deletion import checkpoint_disk_bytes
from core.models import Checkpoint
from core.settings import Settings, get_settings
from engine.errors import CheckpointError
from service.deps import MAX_SKIP, SessionDep, SettingsDep
from service.errors import Responses, get_or_404
from service.redact import redact
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


# ---------------------------------------------------------------- in and out, names and tags (issue #14)

ARCHIVE_REFUSED: Responses = {
    413: {"model": ErrorPublic, "description": "Over TRANSFERLAB_MAX_CHECKPOINT_IMPORT_BYTES."},
}
# Merged into FastAPI's own 422 (its list of {loc, msg, type}), which `responses` would replace.
ARCHIVE_422 = (
    "loc `file`: not a zip of exactly model.safetensors and model.json; metadata invalid; weights whose "
    "sha256 differs from the metadata's, or whose keys, shapes or dtypes are not the architecture's. "
    "Nothing is written."
)


@router.get(
    "/{checkpoint_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "model.safetensors and model.json, zipped."},
        404: {"model": ErrorPublic, "description": "No checkpoint with that id."},
        500: {"model": ErrorPublic, "description": "The weights no longer match their sha256; not exported."},
    },
)
def download_checkpoint(session: SessionDep, settings: SettingsDep, checkpoint_id: str) -> FileResponse:
    """The checkpoint as one zip (weights as safetensors, metadata as JSON), which POST /checkpoints
    imports on another transferlab. The weights are checked against their sha256 first."""
    row = get_or_404(session, Checkpoint, checkpoint_id, "checkpoint")
    root = settings.checkpoints_dir
    directory = (root / row.path).resolve()
    filename = f"{row.name or row.id}.zip"
    session.close()
    exports = settings.home.resolve() / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"{checkpoint_id}-", suffix=".zip", dir=exports)
    os.close(handle)
    out = Path(name)
    try:
        if not directory.is_relative_to(root):
            raise CheckpointError("its recorded path leaves the checkpoints folder")
        write_archive(directory, row.sha256, out)
    except (CheckpointError, OSError) as exc:
        out.unlink(missing_ok=True)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            detail=f"checkpoint {checkpoint_id} cannot be exported: {exc}",
        ) from None
    return FileResponse(
        out,
        media_type="application/zip",
        filename=filename,
        background=BackgroundTask(out.unlink, missing_ok=True),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CheckpointPublic,
    responses=ARCHIVE_REFUSED,
    openapi_extra={"responses": {"422": {"description": ARCHIVE_422}}},
)
def import_checkpoint(
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="A zip as GET /checkpoints/{id}/download gives it.")],
    name: Annotated[str | None, Form(description="Optional name (see PATCH).")] = None,
) -> CheckpointPublic:
    """Import a checkpoint trained elsewhere; it can then serve /predict and be a fine-tune's
    source_checkpoint. Only safetensors weights are read; nothing is unpickled."""
    try:
        labels = CheckpointLabels(name=name or None)
    except ValidationError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "name"), "msg": exc.errors()[0]["msg"], "input": name}]
        ) from None
    try:
        imported = import_archive(
            file.file, settings.checkpoints_dir, max_bytes=settings.max_checkpoint_import_bytes
        )
    except ArchiveRefused as exc:
        if exc.status == 413:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc)) from None
        error = {"type": "value_error", "loc": ("body", "file"), "msg": redact(str(exc)), "input": None}
        raise RequestValidationError([error]) from None
    try:
        row = record_import(session, imported, settings.checkpoints_dir, labels)
        session.commit()
    except Exception:
        shutil.rmtree(imported.directory, ignore_errors=True)
        raise
    return _public(row, get_settings())


@router.patch(
    "/{checkpoint_id}",
    response_model=CheckpointPublic,
    responses={404: {"model": ErrorPublic, "description": "No checkpoint with that id."}},
)
def label_checkpoint(session: SessionDep, checkpoint_id: str, labels: CheckpointLabels) -> CheckpointPublic:
    """Set a checkpoint's name and/or tags (a field left out stays; name null removes it)."""
    row = get_or_404(session, Checkpoint, checkpoint_id, "checkpoint")
    if "name" in labels.model_fields_set:
        row.name = labels.name
    if "tags" in labels.model_fields_set:
        row.tags = labels.tags or []
    session.commit()
    return _public(row, get_settings())
