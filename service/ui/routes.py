"""The dashboard at /ui: pages rendered on the server (Jinja2), htmx for forms and fragments, uPlot
for curves, live updates from the event streams (service/routes/events.py). Every page reads through
the API's own route functions (views.py), and reads fine with JavaScript off.

    install(app)    # in create_app: the routes, "/" -> /ui, and /ui/static

Pages: /ui (experiments), /ui/jobs, /ui/experiments/{id}, /ui/jobs/{id}, /ui/checkpoints,
/ui/compare?jobs=a,b, /ui/jobs/new, /ui/experiments/new, /ui/login. The browser reaches the event
streams, plots and report through /ui/... twins of the API's routes, which take the session cookie;
POSTs here need the session's CSRF token (service/ui/session.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import FormData

from core.experiments import table
from core.experiments.presets import PRESETS
from core.experiments.schemas import ExperimentCreate
from core.models import JobStatus
from core.settings import Settings
from service.deps import EnqueueDep, SessionDep, SettingsDep
from service.lru import LRU
from service.routes import artifacts as artifact_routes
from service.routes import events
from service.routes import experiments as experiment_routes
from service.routes import jobs as job_routes
from service.schemas import JobCreate
from service.ui import forms, views
from service.ui.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    clear_cookie_header,
    csrf_matches,
    csrf_token,
    new_session,
    safe_next,
    session_id,
    set_cookie_header,
)

HERE = Path(__file__).parent
STATIC = HERE / "static"

router = APIRouter(prefix="/ui", include_in_schema=False)
root_router = APIRouter(include_in_schema=False)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def _static_version() -> str:
    """Changes with our own static files: their URLs carry it, so a browser never runs stale code."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.glob("*.*")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)
templates.filters.update(
    pct=table.pct,
    points=lambda x: table.points(x, unit=False),
    seconds=table.seconds,
    count=table.count,
    mib=table.mib,
    f1=table.f1,
    when=_when,
    short=lambda identifier: (identifier or "")[:8],
    as_json=views.as_json,
)
templates.globals.update(
    static_version=_static_version(), presets=sorted(PRESETS), is_terminal=views.is_terminal
)


# ---------------------------------------------------------------- session, rendering


@dataclass
class UiSession:
    cookie: str
    new: bool
    csrf: str
    token_set: bool


def ui_session(request: Request, token: str | None) -> UiSession:
    """The browser's session, or a new one (the request got here authenticated, or no token is set)."""
    cookie = request.cookies.get(COOKIE)
    new = session_id(cookie, token) is None
    if new or cookie is None:
        cookie = new_session(token)
    return UiSession(cookie, new, csrf_token(cookie, token), bool(token))


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    token: str | None,
    status_code: int = 200,
    *,
    with_session: bool = True,
) -> HTMLResponse:
    """The template with the page's session: its CSRF token, and a new cookie when it had none.
    with_session=False (the login form) leaves the browser's cookie alone."""
    session = ui_session(request, token) if with_session else None
    html = templates.get_template(template).render(
        **context,
        base=request.scope.get("root_path", ""),
        csrf=session.csrf if session else "",
        csrf_field=CSRF_FIELD,
        token_set=session.token_set if session else True,
        path=request.url.path,
    )
    response = HTMLResponse(html, status_code=status_code)
    if session is not None and session.new:
        response.headers.append(
            "set-cookie", set_cookie_header(session.cookie, request.url.scheme == "https")
        )
    return response


def error_page(request: Request, exc: HTTPException, token: str | None) -> HTMLResponse:
    return render(
        request, "error.html", {"status": exc.status_code, "detail": exc.detail}, token, exc.status_code
    )


def page(
    request: Request, template: str, token: str | None, build: Callable[[], Mapping[str, Any]]
) -> Response:
    """The page, or the API's 4xx as an HTML page."""
    try:
        context = build()
    except HTTPException as exc:
        return error_page(request, exc, token)
    return render(request, template, context, token)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def redirect(request: Request, path: str) -> Response:
    """After a POST: HX-Redirect for htmx (a full page load), 303 otherwise."""
    target = request.scope.get("root_path", "") + path
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)


async def form_data(request: Request) -> FormData:
    return await request.form()


FormDep = Annotated[FormData, Depends(form_data)]


def form_lists(form: FormData) -> dict[str, list[str]]:
    return {key: [v for v in form.getlist(key) if isinstance(v, str)] for key in form}


def csrf_refused(request: Request, form: FormData, token: str | None) -> Response | None:
    """A 403 page unless the form (or the X-CSRF-Token header) carries this session's CSRF token."""
    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if csrf_matches(request.cookies.get(COOKIE), token, given if isinstance(given, str) else None):
        return None
    detail = "this form's CSRF token is missing or stale (a new session?); reload the page and submit again"
    return error_page(request, HTTPException(status.HTTP_403_FORBIDDEN, detail=detail), token)


# ---------------------------------------------------------------- lists


@root_router.get("/")
def root(request: Request) -> RedirectResponse:
    return RedirectResponse(
        request.scope.get("root_path", "") + "/ui", status_code=status.HTTP_307_TEMPORARY_REDIRECT
    )


Skip = Annotated[int, Query(ge=0, le=2**31 - 1)]


@router.get("")
def experiments_list(
    request: Request, session: SessionDep, settings: SettingsDep, skip: Skip = 0
) -> Response:
    template = "_experiment_rows.html" if is_htmx(request) else "experiments.html"
    return page(request, template, settings.api_token, lambda: views.experiments_page(session, skip))


@router.get("/jobs")
def jobs_list(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    status_: Annotated[str, Query(alias="status")] = "",
    kind: str = "",
    skip: Skip = 0,
) -> Response:
    """The filter form sends "" for "any"."""
    if status_ not in ("", *JobStatus) or kind not in ("", "pretrain", "finetune"):
        detail = f"status must be one of {', '.join(JobStatus)} and kind pretrain or finetune (or neither)"
        return error_page(
            request, HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail), settings.api_token
        )
    template = "_job_rows.html" if is_htmx(request) else "jobs.html"
    job_status = JobStatus(status_) if status_ else None
    build = lambda: views.jobs_page(session, job_status, kind or None, skip)  # noqa: E731
    return page(request, template, settings.api_token, build)


@router.get("/checkpoints")
def checkpoints(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    skip: Skip = 0,
    checkpoint: str | None = None,
) -> Response:
    return page(
        request,
        "checkpoints.html",
        settings.api_token,
        lambda: views.checkpoints_page(session, skip, checkpoint),
    )


@router.get("/compare")
def compare(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    jobs: Annotated[list[str], Query()] = [],  # noqa: B006
) -> Response:
    ids = list(dict.fromkeys(part.strip() for value in jobs for part in value.split(",") if part.strip()))
    if not views.COMPARE_MIN <= len(ids) <= views.COMPARE_MAX:
        problem = f"give {views.COMPARE_MIN} to {views.COMPARE_MAX} job ids (jobs=a,b); got {len(ids)}"
        return render(request, "compare.html", {"problem": problem, "ids": ids}, settings.api_token, 422)
    return page(request, "compare.html", settings.api_token, lambda: views.compare_page(session, ids))


# ---------------------------------------------------------------- forms


def _job_form_context(
    session: SessionDep, values: Mapping[str, Any], errors: forms.FormErrors | None
) -> dict:
    return {
        "fields": forms.JOB_FIELDS,
        "values": values,
        "errors": errors or forms.FormErrors({}, []),
        "choices": {"source": views.source_choices(session), "dataset": views.dataset_choices()},
    }


@router.get("/jobs/new")
def new_job(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    kind: Literal["pretrain", "finetune"] = "pretrain",
    source: str | None = None,
) -> Response:
    body: dict[str, Any] = {"kind": kind, "dataset": "stl10" if kind == "pretrain" else "mnist"}
    if source:
        body["source"] = source
    values = forms.form_values(forms.JOB_FIELDS, body)
    return render(request, "job_new.html", _job_form_context(session, values, None), settings.api_token)


@router.post("/jobs/new")
def post_new_job(
    request: Request, session: SessionDep, settings: SettingsDep, enqueue: EnqueueDep, form: FormDep
) -> Response:
    if refused := csrf_refused(request, form, settings.api_token):
        return refused
    submitted = form_lists(form)
    body = forms.job_body(submitted)
    kind = str(body.get("kind", ""))
    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    try:
        job_in = TypeAdapter(JobCreate).validate_python(body)
        job = job_routes.create_job(
            job_in=job_in, session=session, enqueue=enqueue, response=Response(), settings=settings
        )
    except (ValidationError, RequestValidationError) as exc:
        errors = forms.field_errors(forms.JOB_FIELDS, exc.errors(), tag=kind)
    except HTTPException as exc:
        errors, status_code = forms.detail_errors(forms.JOB_FIELDS, str(exc.detail)), exc.status_code
    else:
        return redirect(request, f"/ui/jobs/{job.id}")
    values = {f.name: _submitted(f, submitted) for f in forms.JOB_FIELDS}
    template = "_job_form.html" if is_htmx(request) else "job_new.html"
    context = _job_form_context(session, values, errors)
    return render(request, template, context, settings.api_token, status_code)


def _submitted(field: forms.Field, submitted: Mapping[str, Sequence[str]]) -> Any:
    values = submitted.get(field.name, [])
    if field.widget == "choices":
        return list(values)
    if field.widget == "checkbox":
        return bool(values)
    return values[-1] if values else ""


def _experiment_form_context(
    session: SessionDep, preset: str, values: Mapping[str, Any], errors: forms.FormErrors | None
) -> dict:
    datasets = views.dataset_choices()  # one scan of the data root for both selects
    return {
        "fields": forms.EXPERIMENT_FIELDS,
        "values": values,
        "errors": errors or forms.FormErrors({}, []),
        "preset": preset,
        "choices": {
            "pretrained_job": views.source_choices(session, kind="pretrain"),
            "dataset": datasets,
            "pretrain.dataset": datasets,
        },
    }


@router.get("/experiments/new")
def new_experiment(
    request: Request, session: SessionDep, settings: SettingsDep, preset: str = "quick"
) -> Response:
    preset = preset if preset in PRESETS else ""
    body = PRESETS.get(preset) or ExperimentCreate(name="my study").model_dump(mode="json")
    values = forms.form_values(forms.EXPERIMENT_FIELDS, body)
    context = _experiment_form_context(session, preset, values, None)
    return render(request, "experiment_new.html", context, settings.api_token)


@router.post("/experiments/new")
def post_new_experiment(
    request: Request, session: SessionDep, settings: SettingsDep, enqueue: EnqueueDep, form: FormDep
) -> Response:
    if refused := csrf_refused(request, form, settings.api_token):
        return refused
    submitted = form_lists(form)
    body = forms.experiment_body(submitted)
    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    try:
        request_in = ExperimentCreate.model_validate(body)
        experiment = experiment_routes.create_experiment(
            request=request_in, session=session, enqueue=enqueue, response=Response(), settings=settings
        )
    except (ValidationError, RequestValidationError) as exc:
        errors = forms.field_errors(forms.EXPERIMENT_FIELDS, exc.errors())
    except HTTPException as exc:
        errors, status_code = forms.detail_errors(forms.EXPERIMENT_FIELDS, str(exc.detail)), exc.status_code
    else:
        return redirect(request, f"/ui/experiments/{experiment.id}")
    values = {f.name: _submitted(f, submitted) for f in forms.EXPERIMENT_FIELDS}
    preset = (submitted.get("preset") or [""])[-1]
    template = "_experiment_form.html" if is_htmx(request) else "experiment_new.html"
    context = _experiment_form_context(session, preset, values, errors)
    return render(request, template, context, settings.api_token, status_code)


# ---------------------------------------------------------------- one experiment


# The results part of an ended experiment's page never changes: kept as HTML, per root path. A warm
# render of 1,000 jobs is then a few milliseconds, and allocates too little to set off a full garbage
# collection of the process (which made one render in ten take 0.5 s; bench/ui_render.py).
_ended_results_html = LRU(capacity=64)


def experiment_results_html(request: Request, context: Mapping[str, Any]) -> Markup:
    base = request.scope.get("root_path", "")
    key = (context["experiment"].id, base)
    html = _ended_results_html.get(key) if context["terminal"] else None
    if html is None:
        html = Markup(templates.get_template("_experiment_results.html").render(**context, base=base))
        if context["terminal"]:
            _ended_results_html.put(key, html)
    return html


def _experiment_context(request: Request, session: SessionDep, experiment_id: str) -> dict[str, Any]:
    context = views.experiment_page(session, experiment_id)
    return {**context, "results_html": experiment_results_html(request, context)}


@router.get("/experiments/{experiment_id}")
def experiment(request: Request, session: SessionDep, settings: SettingsDep, experiment_id: str) -> Response:
    build = lambda: _experiment_context(request, session, experiment_id)  # noqa: E731
    return page(request, "experiment.html", settings.api_token, build)


@router.get("/experiments/{experiment_id}/results")
def experiment_results(
    request: Request, session: SessionDep, settings: SettingsDep, experiment_id: str
) -> Response:
    """The part of the page that exists once it has ended (the live page swaps it in)."""
    try:
        context = views.experiment_page(session, experiment_id)
    except HTTPException as exc:
        return error_page(request, exc, settings.api_token)
    return HTMLResponse(experiment_results_html(request, context))


@router.get("/experiments/{experiment_id}/events")
async def experiment_events(
    experiment_id: str,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int, Query(ge=0, le=events.MAX_ROW_ID)] = 0,
) -> Response:
    return await events.experiment_stream(experiment_id, last_event_id, after)


@router.get("/experiments/{experiment_id}/artifacts/{name}")
def experiment_artifact(
    session: SessionDep, settings: SettingsDep, experiment_id: str, name: str
) -> Response:
    return artifact_routes.get_experiment_artifact(
        session=session, settings=settings, experiment_id=experiment_id, name=name
    )


@router.get("/experiments/{experiment_id}/report")
def experiment_report(
    request: Request, session: SessionDep, settings: SettingsDep, experiment_id: str
) -> Response:
    try:
        return experiment_routes.get_report(
            session=session, settings=settings, experiment_id=experiment_id, format="html"
        )
    except HTTPException as exc:
        return error_page(request, exc, settings.api_token)


def _cancel_from_form(
    request: Request, form: FormData, settings: Settings, cancel: Callable[[], object], page_path: str
) -> Response:
    """A cancel button: checks the CSRF token, cancels, then shows the page (or 204 for htmx, whose
    live page shows the change as it streams in). Already ended (409) is not an error: the page says so."""
    if refused := csrf_refused(request, form, settings.api_token):
        return refused
    try:
        cancel()
    except HTTPException as exc:
        if exc.status_code != status.HTTP_409_CONFLICT:
            return error_page(request, exc, settings.api_token)
    if is_htmx(request):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return redirect(request, page_path)


@router.post("/experiments/{experiment_id}/cancel")
def cancel_experiment(
    request: Request, session: SessionDep, settings: SettingsDep, experiment_id: str, form: FormDep
) -> Response:
    cancel = lambda: experiment_routes.cancel_experiment(session=session, experiment_id=experiment_id)  # noqa: E731
    return _cancel_from_form(request, form, settings, cancel, f"/ui/experiments/{experiment_id}")


# ---------------------------------------------------------------- one job


@router.get("/jobs/{job_id}")
def job(request: Request, session: SessionDep, settings: SettingsDep, job_id: str) -> Response:
    return page(request, "job.html", settings.api_token, lambda: views.job_page(session, job_id))


@router.get("/jobs/{job_id}/results")
def job_results(request: Request, session: SessionDep, settings: SettingsDep, job_id: str) -> Response:
    return page(
        request, "_job_results.html", settings.api_token, lambda: views.job_results_page(session, job_id)
    )


@router.get("/jobs/{job_id}/events")
async def job_events(
    job_id: str,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int, Query(ge=0, le=events.MAX_ROW_ID)] = 0,
) -> Response:
    return await events.job_stream(job_id, last_event_id, after)


@router.get("/jobs/{job_id}/artifacts/{name}")
def job_artifact(session: SessionDep, settings: SettingsDep, job_id: str, name: str) -> Response:
    return artifact_routes.get_job_artifact(session=session, settings=settings, job_id=job_id, name=name)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(
    request: Request, session: SessionDep, settings: SettingsDep, job_id: str, form: FormDep
) -> Response:
    cancel = lambda: job_routes.cancel_job(session=session, job_id=job_id, response=Response())  # noqa: E731
    return _cancel_from_form(request, form, settings, cancel, f"/ui/jobs/{job_id}")


# ---------------------------------------------------------------- login


@router.get("/login")
def login(request: Request, settings: SettingsDep, next: str | None = None) -> Response:  # noqa: A002
    if not settings.api_token:
        return RedirectResponse(
            request.scope.get("root_path", "") + safe_next(next), status.HTTP_303_SEE_OTHER
        )
    return render(request, "login.html", {"next": safe_next(next), "wrong": False}, None, with_session=False)


@router.post("/login")
def post_login(request: Request, settings: SettingsDep, form: FormDep) -> Response:
    """Takes the API token once; the browser then holds a session cookie instead of the token."""
    import hmac

    given, target = form.get("token"), safe_next(str(form.get("next") or ""))
    token = settings.api_token
    if not token:
        return RedirectResponse(request.scope.get("root_path", "") + target, status.HTTP_303_SEE_OTHER)
    if not isinstance(given, str) or not hmac.compare_digest(given.strip().encode(), token.encode()):
        context = {"next": target, "wrong": True}
        return render(request, "login.html", context, None, status.HTTP_401_UNAUTHORIZED, with_session=False)
    response = RedirectResponse(request.scope.get("root_path", "") + target, status.HTTP_303_SEE_OTHER)
    response.headers.append(
        "set-cookie", set_cookie_header(new_session(token), request.url.scheme == "https")
    )
    return response


@router.post("/logout")
def logout(request: Request, settings: SettingsDep, form: FormDep) -> Response:
    if refused := csrf_refused(request, form, settings.api_token):
        return refused
    response = RedirectResponse(request.scope.get("root_path", "") + "/ui/login", status.HTTP_303_SEE_OTHER)
    response.headers.append("set-cookie", clear_cookie_header(request.url.scheme == "https"))
    return response


def install(app: FastAPI) -> None:
    """The dashboard's routes, the redirect of "/" and its static files (htmx, uPlot, app.js)."""
    app.include_router(router)
    app.include_router(root_router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
