"""The OpenAPI document says what the server does: the token's 401 and its optional Bearer, the 400
of a body that does not parse, the 413 of the body limit, the 503 of a database that is down, and
the report's content types. Each "answers as documented" test sends the request and looks its status
and content type up in the document."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from core.models import Experiment, ExperimentStatus
from service import deps
from tests.service.conftest import TOKEN

METHODS = {"get", "post", "put", "patch", "delete"}


def operations(openapi: dict[str, Any]):
    for path, items in openapi["paths"].items():
        for method, operation in items.items():
            if method in METHODS:
                yield method, path, operation


def documented(openapi: dict[str, Any], method: str, path: str, response) -> bool:
    """Is this response's status, with this content type, in the operation's responses?"""
    entry = openapi["paths"][path][method]["responses"].get(str(response.status_code))
    media_type = response.headers["content-type"].split(";")[0].strip()
    return entry is not None and media_type in entry.get("content", {})


@pytest.fixture
def openapi(client) -> dict[str, Any]:
    return client.get("/openapi.json").json()


@pytest.fixture
def token_openapi(client, env) -> dict[str, Any]:
    env(API_TOKEN=TOKEN)
    return client.get("/openapi.json").json()


# ---------------------------------------------------------------- the token


def test_every_route_that_needs_the_token_documents_401(openapi):
    secured = [(m, p, op) for m, p, op in operations(openapi) if op.get("security")]

    assert len(secured) >= 15  # every route but the health probes
    for method, path, operation in secured:
        unauthorized = operation["responses"].get("401")
        assert unauthorized is not None, (method, path)
        assert "application/json" in unauthorized["content"] and "WWW-Authenticate" in unauthorized["headers"]


def test_the_health_probes_document_no_token(openapi):
    for path in ("/healthz", "/readyz"):
        assert "security" not in openapi["paths"][path]["get"]
        assert "401" not in openapi["paths"][path]["get"]["responses"]


def test_bearer_is_optional_when_no_token_is_configured(openapi):
    for method, path, operation in operations(openapi):
        if operation.get("security"):
            assert operation["security"] == [{}, {"HTTPBearer": []}], (method, path)


def test_bearer_is_required_when_a_token_is_configured(token_openapi):
    for method, path, operation in operations(token_openapi):
        if operation.get("security"):
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)


def test_a_401_is_answered_as_documented(client, env, token_openapi):
    response = client.get("/jobs")

    assert response.status_code == 401
    assert documented(token_openapi, "get", "/jobs", response)


# ---------------------------------------------------------------- bodies


def test_every_route_with_a_body_documents_400(openapi):
    with_body = [(m, p, op) for m, p, op in operations(openapi) if "requestBody" in op]

    assert {(m, p) for m, p, _ in with_body} >= {
        ("post", "/jobs"),
        ("post", "/experiments"),
        ("post", "/predict"),
    }
    for method, path, operation in with_body:
        assert "application/json" in operation["responses"]["400"]["content"], (method, path)


@pytest.mark.parametrize(
    ("path", "raw", "content_type"),
    [
        ("/jobs", b"{", "application/json"),
        ("/jobs", b'{"kind": "\xff"}', "application/json"),
        ("/experiments", b"[1,", "application/json"),
        ("/predict", b"garbage", "multipart/form-data"),
    ],
    ids=["jobs-truncated", "jobs-not-utf8", "experiments-truncated", "predict-no-boundary"],
)
def test_an_unparsable_body_is_answered_as_documented(client, openapi, path, raw, content_type):
    response = client.post(path, content=raw, headers={"content-type": content_type})

    assert response.status_code == 400, response.text
    assert documented(openapi, "post", path, response)


def test_every_post_documents_the_413_of_the_body_limit(openapi):
    for method, path, operation in operations(openapi):
        if method == "post":
            assert "application/json" in operation["responses"]["413"]["content"], path


def test_a_body_over_the_limit_is_answered_as_documented(client, openapi):
    response = client.post(
        "/jobs", content=b" " * (1024 * 1024 + 1), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert documented(openapi, "post", "/jobs", response)


# ---------------------------------------------------------------- the database


def test_every_route_that_reads_the_database_documents_503(openapi):
    for method, path, operation in operations(openapi):
        if path == "/weights":  # lists files in the data root; no database
            continue
        if operation.get("security"):  # every routed resource reads the database
            assert "application/json" in operation["responses"]["503"]["content"], (method, path)


def test_a_database_that_is_down_is_answered_as_documented(app, client, openapi):
    def broken_db():
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    app.dependency_overrides[deps.get_db] = broken_db

    response = client.get("/checkpoints")

    assert response.status_code == 503
    assert documented(openapi, "get", "/checkpoints", response)


# ---------------------------------------------------------------- the report


REPORT = "/experiments/{experiment_id}/report"


def test_the_report_documents_markdown_and_html_and_json_errors(openapi):
    responses = openapi["paths"][REPORT]["get"]["responses"]

    assert set(responses["200"]["content"]) == {"text/markdown", "text/html"}
    for status in ("404", "409", "422"):
        assert set(responses[status]["content"]) == {"application/json"}, status


@pytest.fixture
def ended_experiment(session) -> Experiment:
    experiment = Experiment(
        name="ended",
        status=ExperimentStatus.failed,
        request={"name": "ended", "pretrained_job": "0" * 32},
        dataset="mnist",
        architecture="simple_cnn",
    )
    session.add(experiment)
    session.commit()
    return experiment


@pytest.mark.parametrize("params", [{}, {"format": "html"}], ids=["markdown", "html"])
def test_the_report_is_answered_as_documented(client, openapi, ended_experiment, params):
    response = client.get(f"/experiments/{ended_experiment.id}/report", params=params)

    assert response.status_code == 200, response.text
    assert documented(openapi, "get", REPORT, response)


def test_the_reports_errors_are_answered_as_documented(client, openapi, session, ended_experiment):
    missing = client.get(f"/experiments/{'0' * 32}/report")
    ended_experiment.status = ExperimentStatus.running
    session.commit()
    running = client.get(f"/experiments/{ended_experiment.id}/report")
    bad_format = client.get(f"/experiments/{ended_experiment.id}/report", params={"format": "pdf"})

    assert [r.status_code for r in (missing, running, bad_format)] == [404, 409, 422]
    assert all(documented(openapi, "get", REPORT, r) for r in (missing, running, bad_format))
