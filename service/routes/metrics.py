"""GET /metrics: Prometheus text format (service/metrics.py; README "Operations" explains each metric).

    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/metrics

Needs the API token when one is set, unless TRANSFERLAB_METRICS_PUBLIC=true (a scraper on a private
network). Left out of the OpenAPI document: it is for Prometheus, not for API clients.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST

from service.deps import SettingsDep, _bearer, require_token
from service.metrics import render

router = APIRouter(tags=["metrics"])


async def metrics_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The API token, unless TRANSFERLAB_METRICS_PUBLIC=true."""
    if not settings.metrics_public:
        await require_token(settings, credentials)


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_token)])
async def metrics(_request: Request) -> Response:
    """Every metric, read now (the database's in a few aggregate queries, off the event loop)."""
    return Response(await run_in_threadpool(render), media_type=CONTENT_TYPE_LATEST)
