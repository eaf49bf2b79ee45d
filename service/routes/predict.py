"""Predict: classify uploaded PNG/JPEG images with any trained checkpoint.

A sync route, so FastAPI runs it in its threadpool: decoding and the forward pass are CPU-bound and
must not block the event loop. What a request may cost is checked cheapest first, and before the work
it bounds: the file count (413), the model-input pixels (422), a prediction slot (429), every file's
header (415/413), a load if the checkpoint is not cached (429 past the load rate); then the files
are decoded one at a time, in groups of at most one forward pass; those over a megapixel by one
thread for the whole process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy import select

from core.models import Checkpoint, Job
from engine.errors import CheckpointError
from service.deps import PredictorCacheDep, SessionDep, SettingsDep
from service.errors import get_or_404
from service.inference import PredictorCache
from service.lru import LRU
from service.metrics import PREDICT_BATCH
from service.predict_limits import PredictionSlotsDep, check_input_budget, decoding
from service.schemas import ErrorPublic, PredictionPublic, PredictionResponse, TopPrediction
from service.server_timing import ServerTiming
from service.uploads import ALLOWED_TYPES, CheckedUpload, check_uploads, decode

router = APIRouter(tags=["predict"])
log = logging.getLogger(__name__)

TOP_K = 3


def _exactly_one_error(checkpoint: str | None, job: str | None, model: str | None) -> RequestValidationError:
    given = sum(v is not None for v in (checkpoint, job, model))
    msg = (
        "give exactly one of the form fields checkpoint (a checkpoint id), job (the id of a job "
        f"with a checkpoint) or model (a checkpoint name); got {'none' if given == 0 else given}"
    )
    return RequestValidationError(
        [
            {"type": "value_error", "loc": ("body", field), "msg": msg, "input": value}
            for field, value in (("checkpoint", checkpoint), ("job", job), ("model", model))
        ]
    )


def _newest_named(session: SessionDep, name: str) -> Checkpoint:
    """The newest checkpoint called `name` (PATCH /checkpoints/{id} names them); 404 when none is."""
    row = session.scalar(
        select(Checkpoint)
        .where(Checkpoint.name == name)
        .order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc())
        .limit(1)
    )
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"model: no checkpoint is named {name!r}; name one with PATCH /checkpoints/{{id}}",
        )
    return row


def _find_checkpoint(session: SessionDep, checkpoint_id: str | None, job_id: str | None) -> Checkpoint:
    if checkpoint_id:
        return get_or_404(session, Checkpoint, checkpoint_id, "checkpoint:")
    assert job_id is not None  # checked by the caller: exactly one of checkpoint and job
    job = get_or_404(session, Job, job_id, "job:")
    if job.checkpoint is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"job: {job_id!r} is {job.status} and has no checkpoint; predict with a succeeded job",
        )
    return job.checkpoint


@dataclass(frozen=True)
class CheckpointRef:
    id: str
    path: str
    sha256: str
    image_size: int  # the model's input side: what each file costs the forward pass


VALIDATION_ERRORS = (
    "Not exactly one of checkpoint, job and model; files x the checkpoint's input pixels over "
    "TRANSFERLAB_MAX_PREDICT_INPUT_PIXELS (loc `files`, checked before any file is opened); or a file "
    "that cannot be decoded (loc `files`, its position)."
)

# Checkpoint rows by ("checkpoint", id) or ("job", id). A checkpoint row never changes once written (a
# job writes it once, when it succeeds), so a found one is kept: the SQLite lookup was 0.7 ms of a
# 6.4 ms /predict. The file's sha256 is still what the model cache keys on and checks at load.
_known_checkpoints = LRU(capacity=4096)


@router.post(
    "/predict",
    response_model=PredictionResponse,
    # Merged into FastAPI's own 422 (its list of {loc, msg, type}), which `responses` would replace.
    openapi_extra={"responses": {"422": {"description": VALIDATION_ERRORS}}},
    responses={
        200: {
            "headers": {
                "Server-Timing": {
                    "description": "Milliseconds spent in prepare, model and total.",
                    "schema": {"type": "string"},
                }
            }
        },
        404: {"model": ErrorPublic, "description": "No such checkpoint or job."},
        409: {"model": ErrorPublic, "description": "The job has no checkpoint (yet)."},
        413: {
            "model": ErrorPublic,
            "description": "Body, file count, image pixels or a PNG's metadata over the limit.",
        },
        415: {"model": ErrorPublic, "description": f"A file is not an image ({ALLOWED_TYPES})."},
        429: {
            "model": ErrorPublic,
            "description": "TRANSFERLAB_MAX_CONCURRENT_PREDICTIONS requests are already being served, "
            "or this uncached checkpoint would be one load more than "
            "TRANSFERLAB_MAX_MODEL_LOADS_PER_MINUTE; retry after `Retry-After` seconds.",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            },
        },
        500: {
            "model": ErrorPublic,
            "description": "The checkpoint failed its sha256 check; not loaded.",
        },
    },
)
def predict(
    session: SessionDep,
    settings: SettingsDep,
    cache: PredictorCacheDep,
    slots: PredictionSlotsDep,
    files: Annotated[
        list[UploadFile],
        File(
            min_length=1,
            description=f"One or more images ({ALLOWED_TYPES}) of any mode, within the size limits.",
        ),
    ],
    checkpoint: Annotated[
        str | None,
        Form(
            description="Checkpoint id. Give this or job.",
            examples=["9c1d7e5a3b2f4a6c8e0d1f3a5b7c9e1d"],
        ),
    ] = None,
    job: Annotated[
        str | None,
        Form(description="Id of a job with a checkpoint. Give this or checkpoint.", examples=[None]),
    ] = None,
    model: Annotated[
        str | None,
        Form(
            max_length=100,
            description="A checkpoint name: the newest checkpoint of that name answers. Instead of "
            "checkpoint or job.",
            examples=[None],
        ),
    ] = None,
) -> Response:
    """Classify images with a checkpoint's own preprocessing; loaded checkpoints stay cached.

    The `Server-Timing` header says where the time went: `prepare` (decoding and preprocessing),
    `model` (waiting for and running the shared forward pass) and `total`, in milliseconds."""
    timing = ServerTiming()
    checkpoint, job, model = checkpoint or None, job or None, model or None
    if sum(v is not None for v in (checkpoint, job, model)) != 1:
        raise _exactly_one_error(checkpoint, job, model)
    if len(files) > settings.max_files_per_request:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"files: {len(files)} files; the limit is {settings.max_files_per_request} "
            "per request (TRANSFERLAB_MAX_FILES_PER_REQUEST)",
        )
    key = ("checkpoint", checkpoint) if checkpoint else ("job", job)
    # A name is looked up every time: the newest of that name changes when another is named so.
    row = None if model else _known_checkpoints.get(key)
    if model:
        found = _newest_named(session, model)
        row = CheckpointRef(found.id, found.path, found.sha256, int(found.input_spec["image_size"]))
    elif row is None:
        found = _find_checkpoint(session, checkpoint, job)
        side = int(found.input_spec["image_size"])
        row = _known_checkpoints.put(key, CheckpointRef(found.id, found.path, found.sha256, side))
    session.close()  # the row's fields are loaded; don't hold a pooled connection through inference
    check_input_budget(len(files), row.image_size, settings.max_predict_input_pixels)
    with slots.hold():
        # Every header is checked (415/413) before the model is loaded or a pixel decoded.
        uploads = check_uploads([(f.filename, f.file) for f in files], settings.max_image_pixels)
        served = _served(cache, row, settings.checkpoints_dir)
        predictions = _classify(served, uploads, timing)
    # Serialised here, not by FastAPI: for a sync route FastAPI validates a returned model again, in a
    # second threadpool hop (each hop is a thread wake-up, slow on 2 busy cores). The model is built
    # from validated parts, and `response_model` above still documents it.
    PREDICT_BATCH.observe(len(predictions))
    body = PredictionResponse(checkpoint=row.id, predictions=predictions).model_dump_json()
    return Response(body, media_type="application/json", headers={"Server-Timing": timing.header()})


def forget_checkpoint(checkpoint_id: str, job_id: str) -> None:
    """A deleted checkpoint is looked up again (and not found) by the next /predict in this process."""
    _known_checkpoints.discard(("checkpoint", checkpoint_id))
    _known_checkpoints.discard(("job", job_id))


def _served(cache: PredictorCache, row: CheckpointRef, root: Path) -> Any:
    """The loaded checkpoint; 500 when its path or its sha256 is wrong, 429 past the load rate."""
    directory = (root / row.path).resolve()
    if not directory.is_relative_to(root):
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            detail=f"checkpoint {row.id}: its recorded path leaves the checkpoints folder; not loaded",
        )
    try:
        return cache.get(row.id, directory, row.sha256)
    except CheckpointError as exc:
        log.error("checkpoint %s refused: %s", row.id, exc)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            detail=f"checkpoint {row.id} cannot be used and was not loaded: {exc}",
        ) from None


def _classify(served: Any, uploads: list[CheckedUpload], timing: ServerTiming) -> list[PredictionPublic]:
    """Decode, prepare and classify the files in groups of at most one forward pass."""
    predictor = served.predictor
    rows = served.batcher.max_batch
    predictions: list[PredictionPublic] = []
    with served.batcher.request() as request:  # concurrent requests share one forward pass
        for start in range(0, len(uploads), rows):
            group = uploads[start : start + rows]
            with timing("prepare"):
                inputs = _prepare(predictor, group)
            with timing("model"):
                probabilities = request.submit(inputs)
            results = predictor.decode(probabilities, top_k=TOP_K)
            predictions += _public(group, results)
    return predictions


def _prepare(predictor: Any, group: list[CheckedUpload]) -> Any:
    """Model inputs for the group: each file is decoded, prepared and closed before the next opens
    (a large one in the process's decoding thread)."""
    import torch  # imported with the model; the app itself starts without it

    return torch.cat([decoding(upload.pixels, partial(_prepare_one, predictor, upload)) for upload in group])


def _prepare_one(predictor: Any, upload: CheckedUpload) -> Any:
    image = decode(upload)
    try:
        return predictor.prepare([image])
    finally:
        image.close()


def _public(group, results) -> list[PredictionPublic]:
    return [
        PredictionPublic(
            filename=upload.filename,
            label=result.label,
            index=result.index,
            probability=result.probability,
            top=[TopPrediction(label=label, probability=p) for label, p in result.top],
        )
        for upload, result in zip(group, results, strict=True)
    ]
