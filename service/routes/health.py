"""Health: /healthz says the process is up; /readyz that the database and the broker answer."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import text

from core.db import get_engine
from service.deps import BrokerCheckDep
from service.schemas import ErrorPublic, HealthPublic, ReadinessPublic

router = APIRouter(tags=["health"])


def _reason(exc: Exception) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line[:200]}"


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
    except Exception as exc:
        problems.append(f"database unreachable ({_reason(exc)})")
    try:
        broker_check()
    except Exception as exc:
        problems.append(f"broker unreachable ({_reason(exc)})")
    if problems:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="not ready: " + "; ".join(problems))
    return ReadinessPublic(status="ready", database="ok", broker="ok")
