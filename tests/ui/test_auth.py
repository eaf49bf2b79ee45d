"""With TRANSFERLAB_API_TOKEN set: the dashboard's login form takes the token once and keeps an
HttpOnly, SameSite=Strict session cookie; forms carry a CSRF token; the JSON API keeps bearer tokens
and takes the cookie only with the CSRF header."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from core.models import JobStatus
from service import deps
from service.main import create_app
from service.ui import session as ui_session
from tests.ui.conftest import TOKEN


@pytest.fixture
def browser(settings, env, enqueued):
    """A client as a browser: it keeps cookies; no Authorization header."""
    env(API_TOKEN=TOKEN)
    app = create_app()
    app.dependency_overrides[deps.get_enqueue] = lambda: enqueued.append
    app.dependency_overrides[deps.get_broker_check] = lambda: lambda: None
    with TestClient(app, follow_redirects=False) as client:
        yield client


def log_in(browser: TestClient, next_page: str = "/ui") -> str:
    """Log in; the CSRF token of the session."""
    response = browser.post("/ui/login", data={"token": TOKEN, "next": next_page})
    assert response.status_code == 303, response.text
    page = browser.get("/ui/jobs/new").text
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_a_dashboard_page_without_a_session_goes_to_the_login_form(browser):
    response = browser.get("/ui/jobs?status=running")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstatus%3Drunning"
    assert browser.get(response.headers["location"]).status_code == 200


def test_htmx_without_a_session_is_told_to_go_to_the_login_form(browser):
    response = browser.get("/ui", headers={"HX-Request": "true"})
    assert response.status_code == 401 and response.headers["hx-redirect"].startswith("/ui/login?next=")


def test_the_login_form_and_static_files_need_no_session(browser):
    assert browser.get("/ui/login").status_code == 200
    assert browser.get("/ui/static/app.js").status_code == 200
    assert browser.get("/docs/assets/swagger-ui.css").status_code == 200


def test_a_wrong_token_is_refused_beside_the_field(browser):
    response = browser.post("/ui/login", data={"token": "wrong", "next": "/ui"})
    assert response.status_code == 401 and 'id="error-token"' in response.text
    assert "set-cookie" not in response.headers


def test_the_right_token_gives_an_httponly_samesite_strict_session_and_goes_on(browser):
    response = browser.post("/ui/login", data={"token": TOKEN, "next": "/ui/checkpoints"})

    assert response.status_code == 303 and response.headers["location"] == "/ui/checkpoints"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{ui_session.COOKIE}=") and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert browser.get("/ui/checkpoints").status_code == 200


def test_login_never_sends_the_browser_to_another_site(browser):
    for target in ("//evil.example/ui", "https://evil.example/", "/jobs"):
        response = browser.post("/ui/login", data={"token": TOKEN, "next": target})
        assert response.headers["location"] == "/ui", target


def test_the_json_api_takes_the_cookie_only_with_the_csrf_header(browser, enqueued):
    csrf = log_in(browser)

    assert browser.get("/jobs").status_code == 401  # the cookie alone
    assert browser.get("/jobs", headers={"X-CSRF-Token": "0" * 40}).status_code == 401
    assert browser.get("/jobs", headers={"X-CSRF-Token": csrf}).status_code == 200
    response = browser.post("/jobs", json={"kind": "pretrain"}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 202 and len(enqueued) == 1


def test_bearer_tokens_keep_working_everywhere(browser, auth_headers):
    assert browser.get("/jobs", headers=auth_headers).status_code == 200
    assert browser.get("/ui", headers=auth_headers).status_code == 200


def test_dashboard_forms_need_the_sessions_csrf_token(browser, enqueued):
    csrf = log_in(browser)
    form = {"kind": "pretrain", "model": "simple_cnn"}

    assert browser.post("/ui/jobs/new", data=form).status_code == 403
    assert browser.post("/ui/jobs/new", data={**form, "csrf_token": "0" * 40}).status_code == 403
    assert enqueued == []
    assert browser.post("/ui/jobs/new", data={**form, "csrf_token": csrf}).status_code == 303
    assert len(enqueued) == 1


def test_the_event_stream_of_the_dashboard_takes_the_cookie(browser, make_job):
    job = make_job(status=JobStatus.succeeded)
    assert browser.get(f"/ui/jobs/{job.id}/events").status_code == 303  # no session yet
    log_in(browser)
    response = browser.get(f"/ui/jobs/{job.id}/events")
    assert response.status_code == 200 and "event: end" in response.text
    assert browser.get(f"/jobs/{job.id}/events").status_code == 401  # the API's own needs the token


def test_a_session_signed_for_another_token_or_expired_is_no_session(browser, env):
    other = ui_session.new_session("another token")
    expired = ui_session.new_session(TOKEN, now=0)
    for cookie in (other, expired, "garbage", ""):
        browser.cookies.set(ui_session.COOKIE, cookie)
        assert browser.get("/ui").status_code == 303, cookie


def test_logging_out_ends_the_session_in_the_browser(browser):
    csrf = log_in(browser)
    response = browser.post("/ui/logout", data={"csrf_token": csrf})
    assert response.status_code == 303 and "Max-Age=0" in response.headers["set-cookie"]
    browser.cookies.clear()
    assert browser.get("/ui").status_code == 303


def test_without_a_token_there_is_no_login_but_forms_still_need_their_csrf_token(client, enqueued):
    assert client.get("/ui/login", follow_redirects=False).headers["location"] == "/ui"
    page = client.get("/ui/jobs/new")
    assert "SameSite=Strict" in page.headers["set-cookie"]  # the session that carries the CSRF token
    assert client.post("/ui/jobs/new", data={"kind": "pretrain"}).status_code == 403
