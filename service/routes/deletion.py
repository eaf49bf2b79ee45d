"""DELETE /jobs/{id} and DELETE /experiments/{id}: rows and files of what is no longer wanted
(core/deletion.py decides what may go)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from core.deletion import Deleted, DeletionRefused, delete_experiment, delete_job
from service.deps import PredictorCacheDep, SessionDep, SettingsDep
from service.errors import Responses, not_found
from service.routes.predict import forget_checkpoint
from service.schemas import ErrorPublic

router = APIRouter()

FORCE = Query(
    description="Delete even though ended jobs or experiments use its checkpoint (they keep their "
    "results and lose the link). A queued or running one still refuses."
)


def _responses(what: str) -> Responses:
    return {
        204: {"description": f"The {what} and its files are gone; `X-Freed-Bytes` says how much disk."},
        404: {"model": ErrorPublic, "description": f"No {what} with that id."},
        409: {
            "model": ErrorPublic,
            "description": f"The {what} (or one of its jobs) is queued or running: cancel it first; or "
            "others depend on its checkpoint (see force).",
        },
    }


def _answer(
    delete: Callable[[], Deleted | None], what: str, what_id: str, cache: PredictorCacheDep
) -> Response:
    """Run the deletion and answer it: 409 when refused, 404 when absent, else 204 with the bytes
    freed, after the API forgets the deleted checkpoints (its model cache, predict's lookups)."""
    try:
        deleted = delete()
    except DeletionRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    if deleted is None:
        raise not_found(what, what_id)
    for checkpoint_id, job_id in deleted.checkpoints:
        forget_checkpoint(checkpoint_id, job_id)
        cache.forget(checkpoint_id)
    return Response(
        status_code=status.HTTP_204_NO_CONTENT, headers={"X-Freed-Bytes": str(deleted.bytes_freed)}
    )


@router.delete(
    "/jobs/{job_id}", tags=["jobs"], status_code=status.HTTP_204_NO_CONTENT, responses=_responses("job")
)
def delete_job_route(
    session: SessionDep,
    settings: SettingsDep,
    cache: PredictorCacheDep,
    job_id: str,
    force: Annotated[bool, FORCE] = False,
) -> Response:
    """Delete an ended job: its checkpoint, resume state, plots, log and rows."""
    return _answer(lambda: delete_job(session, settings, job_id, force=force), "job", job_id, cache)


@router.delete(
    "/experiments/{experiment_id}",
    tags=["experiments"],
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_responses("experiment"),
)
def delete_experiment_route(
    session: SessionDep,
    settings: SettingsDep,
    cache: PredictorCacheDep,
    experiment_id: str,
    force: Annotated[bool, FORCE] = False,
) -> Response:
    """Delete an ended experiment with its jobs (a reused pre-train is not one of them) and plots."""
    delete = lambda: delete_experiment(session, settings, experiment_id, force=force)  # noqa: E731
    return _answer(delete, "experiment", experiment_id, cache)
