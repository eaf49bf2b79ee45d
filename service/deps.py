"""Typed dependencies: the database session, the settings, the token check, the predictor cache, and
the two things the API hands to the queue (enqueue, broker ping); tests swap them with
app.dependency_overrides."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core.db import get_sessionmaker
from core.settings import Settings, get_settings
from service.auth import UNAUTHORIZED, token_matches
from service.inference import PredictorCache, get_predictor_cache


# The cheap dependencies are `async def`: FastAPI runs a plain `def` dependency in its threadpool,
# and on /predict each such hop cost about a millisecond (profiled: 5 hops, 10.7 ms p50 on 2 cores).
# A session does no I/O until it is used, so opening it on the event loop blocks nothing.
async def get_db() -> AsyncIterator[Session]:
    with get_sessionmaker()() as session:
        yield session


async def settings_dependency() -> Settings:
    return get_settings()


async def predictor_cache_dependency() -> PredictorCache:
    return get_predictor_cache()


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(settings_dependency)]

MAX_SKIP = 2**31 - 1
"""Largest `skip` of a list route: more is a 422, not an OFFSET the database cannot hold (a 500)."""

_bearer = HTTPBearer(
    auto_error=False,
    description="Needed on every route but health and docs when TRANSFERLAB_API_TOKEN is set.",
)


async def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """When a token is set: 401 unless `Authorization: Bearer <TRANSFERLAB_API_TOKEN>` is sent.
    service/auth.py refuses such requests earlier, before their body is read; this documents the
    scheme in OpenAPI and guards a router mounted without that middleware."""
    if not settings.api_token:
        return
    header = f"Bearer {credentials.credentials}" if credentials is not None else None
    if not token_matches(header, settings.api_token):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=UNAUTHORIZED,
            headers={"WWW-Authenticate": "Bearer"},
        )


def get_enqueue() -> Callable[[str], None]:
    """Sends run_job(job_id) to the broker. Imported on first use: the app starts without Celery."""
    from core.queue import enqueue_run_job

    return enqueue_run_job


def get_broker_check() -> Callable[[], None]:
    """Raises when the broker cannot be reached within about two seconds."""
    from core.queue import check_broker

    return lambda: check_broker(timeout_seconds=2.0)


EnqueueDep = Annotated[Callable[[str], None], Depends(get_enqueue)]
BrokerCheckDep = Annotated[Callable[[], None], Depends(get_broker_check)]
PredictorCacheDep = Annotated[PredictorCache, Depends(predictor_cache_dependency)]
