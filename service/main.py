"""The FastAPI app: create it, add the body limit, include the routers.

uvicorn service.main:app          # or: transferlab serve
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from core.settings import get_settings
from service.auth import TokenMiddleware
from service.body_limit import BodyLimitMiddleware
from service.deps import require_token
from service.docs_assets import install_docs
from service.errors import json_safe
from service.metrics import MetricsMiddleware
from service.openapi import DATABASE_UNAVAILABLE, install_openapi
from service.redact import redact
from service.routes import (
    artifacts,
    checkpoints,
    datasets,
    deletion,
    events,
    experiments,
    health,
    job_logs,
    jobs,
    predict,
    weights,
)
from service.routes import metrics as metrics_route
from service.ui import routes as ui

log = logging.getLogger(__name__)

METRICS_PATHS = frozenset({"/metrics"})

DESCRIPTION = """
Transfer-learning experiments over HTTP: pre-train a CNN on a source data set (STL-10),
fine-tune its checkpoint on a target data set (MNIST) with a strategy (linear, partial, full,
lp_ft), read per-epoch metrics, the evaluation and the cost of every run, and classify images
with any checkpoint.

Jobs run on Celery workers; `POST /jobs` returns at once with a queued job to poll. When
`TRANSFERLAB_API_TOKEN` is set, every route but health and docs needs
`Authorization: Bearer <token>`. Errors are `{"detail": ...}`: a message for 4xx/5xx, and
FastAPI's list of `{loc, msg, type, input}` for 422. A body that does not parse (not JSON, not UTF-8,
broken multipart) is a 400; one that parses but breaks a rule is a 422 naming the field.
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
    {"name": "datasets", "description": "Built-in and folder data sets; upload your images as a zip or tar."},
    {"name": "predict", "description": "Classify PNG/JPEG images with a checkpoint."},
    {"name": "health", "description": "Liveness and readiness probes (no token needed)."},
]


def _import_engine() -> None:
    try:
        import engine.predict  # noqa: F401
        import engine.run  # noqa: F401
    except Exception:
        log.exception("could not import the engine")
        return
    # torch and its friends are hundreds of thousands of objects that live as long as the process:
    # out of the collector's reach, a full collection (set off by a request that builds many
    # objects, like a 1,000-job comparison) no longer walks them (bench/ui_render.py).
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # The engine imports torch (seconds): do it in the background at start, not in the first
    # finetune or predict request. Importing this module stays fast (`transferlab --help`).
    threading.Thread(target=_import_engine, name="engine-import", daemon=True).start()
    with events.ending_streams_on_exit_signals():  # open event streams must not hold up a shutdown
        yield


def _version() -> str:
    try:
        return version("transferlab")
    except PackageNotFoundError:
        return "0.0.0+local"


# FastAPI's own message when a body cannot be read (JSON that is not UTF-8, broken multipart).
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"
_SEND_INSTEAD = "send UTF-8 JSON with Content-Type: application/json (POST /predict: multipart/form-data)"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for that class only
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":  # unparsable, not invalid: a 400 like any other
            reason = error.get("ctx", {}).get("error", "JSON decode error")
            position = error["loc"][-1]
            detail = f"the body is not valid JSON ({reason} at character {position}); {_SEND_INSTEAD}"
            return JSONResponse({"detail": detail}, status_code=400)
        # pydantic's message for a body without `kind` names neither the field nor the choices.
        if (
            error.get("type") == "union_tag_not_found"
            and error.get("ctx", {}).get("discriminator") == "'kind'"
        ):
            error["loc"] = (*error["loc"], "kind")
            error["msg"] = "Field required: kind must be 'pretrain' or 'finetune'"
    # The echoed input is the client's own, but may hold what JSON cannot (NaN, bytes).
    return JSONResponse({"detail": jsonable_encoder(json_safe(errors))}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # registered for that class only
    if exc.status_code == 400 and exc.detail == _FASTAPI_PARSE_ERROR:
        exc.detail = f"the body could not be parsed; {_SEND_INSTEAD}"
    elif isinstance(exc.detail, str):  # messages may quote an exception: a path, a broker's host
        exc.detail = redact(exc.detail)
    return await http_exception_handler(request, exc)


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)  # the reason (host, port, file) is for the log only
    return JSONResponse({"detail": "database unavailable; retry later"}, status_code=503)


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
        docs_url=None,  # served by install_docs, with the assets from the package (no CDN)
        redoc_url=None,
    )
    # A too-large upload is refused before any of it is read, and (added last, so outermost) a
    # request without the token before anything else happens.
    limits = {
        "/predict": lambda: get_settings().max_upload_bytes,
        "/datasets": lambda: get_settings().max_dataset_upload_bytes,
        "/checkpoints": lambda: get_settings().max_checkpoint_import_bytes,  # POST: an archive to import
    }
    app.add_middleware(BodyLimitMiddleware, limits=limits)
    app.add_middleware(
        TokenMiddleware,
        token=lambda: get_settings().api_token,
        public_paths=lambda: METRICS_PATHS if get_settings().metrics_public else (),
    )
    app.add_middleware(MetricsMiddleware, router_app=app)  # outermost: a 401 is counted too
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _internal_error)

    authenticated = [Depends(require_token)]
    app.include_router(health.router)
    for router in (
        jobs.router,
        job_logs.router,
        deletion.router,
        checkpoints.router,
        predict.router,
        experiments.router,
        artifacts.router,
    ):
        app.include_router(router, dependencies=authenticated, responses=DATABASE_UNAVAILABLE)
    app.include_router(datasets.router, dependencies=authenticated, responses=DATABASE_UNAVAILABLE)
    app.include_router(events.router, dependencies=authenticated)  # documents its own JSON errors
    app.include_router(metrics_route.router)  # its own token check: TRANSFERLAB_METRICS_PUBLIC
    app.include_router(weights.router, dependencies=authenticated)  # ImageNet weight files (issue #14)
    install_openapi(app, token=lambda: get_settings().api_token)
    install_docs(app)
    ui.install(app)  # the dashboard at /ui (service/ui)
    return app


app = create_app()
