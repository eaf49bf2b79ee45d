"""Health: /healthz says the process is up; /readyz that the database and the broker answer.

Both need no token, so they name which dependency is down and nothing more: its error (a host, a
port, a file) goes to the service log."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import text

from core.db import get_engine
from service.deps import BrokerCheckDep
from service.schemas import ErrorPublic, HealthPublic, ReadinessPublic

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic)
def healthz() -> HealthPublic:
    """200 while the process is up (liveness)."""
    return HealthPublic(status="ok")


@router.get(
    "/readyz",
    response_model=ReadinessPublic,
    responses={503: {"model": ErrorPublic, "description": "The database or the broker is unreachable."}},
)
def readyz(broker_check: BrokerCheckDep) -> ReadinessPublic:
    """200 when the database answers SELECT 1 and the broker a connection; else 503 naming which."""
    problems = []
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        log.warning("readyz: the database is unreachable", exc_info=True)
        problems.append("database unreachable")
    try:
        broker_check()
    except Exception:
        log.warning("readyz: the broker is unreachable", exc_info=True)
        problems.append("broker unreachable")
    if problems:
        detail = f"not ready: {'; '.join(problems)}; the service log says why"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=detail)
    return ReadinessPublic(status="ready", database="ok", broker="ok")
