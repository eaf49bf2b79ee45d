"""GET /jobs/{id}/logs: the job's own log lines (core/job_logs.py), as plain text."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse

from core.job_logs import read_job_log
from core.models import Job
from service.deps import SessionDep, SettingsDep
from service.errors import get_or_404
from service.schemas import ErrorPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])

MAX_TAIL_LINES = 100_000


@router.get(
    "/{job_id}/logs",
    response_class=Response,  # errors stay JSON; the 200 is text/plain
    responses={
        200: {"content": {"text/plain": {}}, "description": "The job's log lines, oldest first."},
        404: {"model": ErrorPublic, "description": "No job with that id."},
    },
)
def get_job_logs(
    session: SessionDep,
    settings: SettingsDep,
    job_id: str,
    tail: Annotated[
        int | None,
        Query(ge=0, le=MAX_TAIL_LINES, description="Only the last N lines, 0..100000 (default: all)."),
    ] = None,
) -> PlainTextResponse:
    """The job's own log: what its worker logged about it (start, epochs, warnings, the error or the
    traceback it failed with), every attempt, oldest first; empty before it starts. Kept up to its
    last TRANSFERLAB_JOB_LOG_MAX_BYTES; older lines are dropped, behind a line saying so."""
    get_or_404(session, Job, job_id, "job")
    session.close()  # the file is read without holding a pooled connection
    return PlainTextResponse(read_job_log(settings, job_id, tail_lines=tail))
