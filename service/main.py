"""The FastAPI app: create it, add the body limit, include the routers.

uvicorn service.main:app          # or: transferlab serve
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from core.settings import get_settings
from service.auth import TokenMiddleware
from service.body_limit import BodyLimitMiddleware
from service.deps import require_token
from service.routes import artifacts, checkpoints, experiments, health, jobs, predict

log = logging.getLogger(__name__)

DESCRIPTION = """
Transfer-learning experiments over HTTP: pre-train a CNN on a source data set (STL-10),
fine-tune its checkpoint on a target data set (MNIST) with a strategy (linear, partial, full,
lp_ft), read per-epoch metrics, the evaluation and the cost of every run, and classify images
with any checkpoint.

Jobs run on Celery workers; `POST /jobs` returns at once with a queued job to poll. When
`TRANSFERLAB_API_TOKEN` is set, every route but health and docs needs
`Authorization: Bearer <token>`. Errors are `{"detail": ...}`: a message for 4xx/5xx, and
FastAPI's list of `{loc, msg, type}` for 422.
"""

TAGS = [
    {
        "name": "jobs",
        "description": "Post pretrain and finetune runs, follow them, read metrics, cancel.",
    },
    {"name": "checkpoints", "description": "Trained models and the preprocessing each expects."},
    {
        "name": "experiments",
        "description": "The seed's study in one request: pre-train, strategies x sweep with controls, "
        "comparison table, report.",
    },
    {"name": "artifacts", "description": "PNG plots of jobs and experiments, by name."},
    {"name": "predict", "description": "Classify PNG/JPEG images with a checkpoint."},
    {"name": "health", "description": "Liveness and readiness probes (no token needed)."},
]


def _import_engine() -> None:
    try:
        import engine.predict  # noqa: F401
        import engine.run  # noqa: F401
    except Exception:
        log.exception("could not import the engine")


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # The engine imports torch (seconds): do it in the background at start, not in the first
    # finetune or predict request. Importing this module stays fast (`transferlab --help`).
    threading.Thread(target=_import_engine, name="engine-import", daemon=True).start()
    yield


def _version() -> str:
    try:
        return version("transferlab")
    except PackageNotFoundError:
        return "0.0.0+local"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for that class only
    # pydantic's message for a body without `kind` names neither the field nor the choices.
    for error in exc.errors():
        if (
            error.get("type") == "union_tag_not_found"
            and error.get("ctx", {}).get("discriminator") == "'kind'"
        ):
            error["loc"] = (*error["loc"], "kind")
            error["msg"] = "Field required: kind must be 'pretrain' or 'finetune'"
    return await request_validation_exception_handler(request, exc)


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)
    reason = (str(getattr(exc, "orig", exc)).strip().splitlines() or [""])[0][:200]
    return JSONResponse({"detail": f"database unavailable: {reason}; retry later"}, status_code=503)


async def _internal_error(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "internal server error; see the service log"}, status_code=500)


def create_app() -> FastAPI:
    app = FastAPI(
        title="transferlab",
        version=_version(),
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=_lifespan,
    )
    # A too-large upload is refused before any of it is read, and (added last, so outermost) a
    # request without the token before anything else happens.
    app.add_middleware(BodyLimitMiddleware, limits={"/predict": lambda: get_settings().max_upload_bytes})
    app.add_middleware(TokenMiddleware, token=lambda: get_settings().api_token)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _internal_error)

    authenticated = [Depends(require_token)]
    app.include_router(health.router)
    app.include_router(jobs.router, dependencies=authenticated)
    app.include_router(checkpoints.router, dependencies=authenticated)
    app.include_router(predict.router, dependencies=authenticated)
    app.include_router(experiments.router, dependencies=authenticated)
    app.include_router(artifacts.router, dependencies=authenticated)
    return app


app = create_app()
