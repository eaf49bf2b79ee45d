"""Fuzzing the API from its own OpenAPI schema (schemathesis, in-process over ASGI), without a token
configured and with one: no request may get a server error, and every answer must be one the schema
documents (status code, content type, body schema). Bounded: FUZZ_EXAMPLES cases per operation and
auth mode, a couple of minutes on 2 cores; `TRANSFERLAB_FUZZ_EXAMPLES=500` digs deeper by hand."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from core import migrate
from core.db import reset_caches
from service import deps
from service.main import create_app
from tests.service.conftest import TOKEN

FUZZ_EXAMPLES = int(os.environ.get("TRANSFERLAB_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every CI run: a failure reproduces
    suppress_health_check=list(HealthCheck),
)
SENT: list[str] = []  # what the API enqueued; nothing is sent to a broker


@contextmanager
def _token(value: str | None) -> Iterator[None]:
    saved = os.environ.get("TRANSFERLAB_API_TOKEN")
    if value is None:
        os.environ.pop("TRANSFERLAB_API_TOKEN", None)
    else:
        os.environ["TRANSFERLAB_API_TOKEN"] = value
    reset_caches()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRANSFERLAB_API_TOKEN", None)
        else:
            os.environ["TRANSFERLAB_API_TOKEN"] = saved
        reset_caches()


def _api(token: str | None) -> schemathesis.BaseSchema:
    """The app and the schema it serves when `token` is (or is not) configured."""
    app = create_app()
    app.dependency_overrides[deps.get_enqueue] = lambda: SENT.append
    app.dependency_overrides[deps.get_broker_check] = lambda: lambda: None
    with _token(token):
        return schemathesis.openapi.from_asgi("/openapi.json", app)


open_api = _api(None)
token_api = _api(TOKEN)


@pytest.fixture(autouse=True)
def _database(env) -> None:
    """A fresh migrated SQLite database under tmp for each operation's run."""
    migrate.upgrade()


@open_api.parametrize()
@FUZZ_SETTINGS
def test_no_request_without_a_token_configured_gets_a_server_error_or_an_undocumented_answer(case):
    case.call_and_validate(checks=CHECKS)


@token_api.parametrize()
@FUZZ_SETTINGS
def test_no_request_with_a_token_gets_a_server_error_or_an_undocumented_answer(case, env):
    env(API_TOKEN=TOKEN)
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)


@token_api.parametrize()
@FUZZ_SETTINGS
def test_no_request_lacking_the_token_gets_a_server_error_or_an_undocumented_answer(case, env):
    env(API_TOKEN=TOKEN)
    case.call_and_validate(checks=CHECKS)
