"""Health probes, the API token, and the OpenAPI document."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service import deps
from service.main import create_app
from tests.service.conftest import TOKEN

# ---------------------------------------------------------------- health


def test_healthz_is_200(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_200_when_database_and_broker_answer(client):
    assert client.get("/readyz").json() == {"status": "ready", "database": "ok", "broker": "ok"}


def test_readyz_is_503_naming_the_database_when_it_is_unreachable(app, client, env):
    env(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["detail"].startswith("not ready: database unreachable")
    assert "broker" not in response.json()["detail"]


def test_readyz_is_503_naming_the_broker_when_it_is_unreachable(app, client):
    """Names the broker and nothing of its error: /readyz needs no token, and a broker's error names
    its host and port (test_leaks.py); the reason is in the service log."""

    def broker_down() -> None:
        raise ConnectionRefusedError("Connection refused")

    app.dependency_overrides[deps.get_broker_check] = lambda: broker_down

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["detail"] == "not ready: broker unreachable; the service log says why"


def test_healthz_stays_200_when_the_database_is_down(client, env):
    env(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")

    assert client.get("/healthz").status_code == 200


def test_database_errors_on_other_routes_are_503_json(client, env):
    env(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")

    response = client.get("/jobs")

    assert response.status_code == 503
    assert response.json()["detail"].startswith("database unavailable")


# ---------------------------------------------------------------- auth


@pytest.fixture
def token_client(settings, env, enqueued):
    env(API_TOKEN=TOKEN)
    app = create_app()
    app.dependency_overrides[deps.get_enqueue] = lambda: enqueued.append
    app.dependency_overrides[deps.get_broker_check] = lambda: lambda: None
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/jobs/x"),
        ("POST", "/jobs/x/cancel"),
        ("GET", "/jobs/x/metrics"),
        ("GET", "/checkpoints"),
        ("GET", "/checkpoints/x"),
        ("POST", "/predict"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic czNjcmV0", f"bearer{TOKEN}"])
def test_token_is_required_on_every_api_route(token_client, method, path, header):
    headers = {"Authorization": header} if header else {}

    response = token_client.request(method, path, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "TRANSFERLAB_API_TOKEN" in response.json()["detail"]


def test_a_request_without_the_token_is_refused_before_its_body_is_read():
    import asyncio

    from service.auth import TokenMiddleware

    reads, sent = [], []

    async def app(scope, receive, send):  # the inner app would read the body: it must never run
        reads.append(await receive())

    async def receive():
        reads.append("body read")
        return {"type": "http.request", "body": b"x" * 1000, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    asyncio.run(TokenMiddleware(app, token=lambda: "s3cret")(scope, receive, send))
    assert reads == [] and sent[0]["status"] == 401


def test_right_token_is_let_through(token_client, auth_headers, enqueued):
    assert token_client.get("/jobs", headers=auth_headers).status_code == 200
    response = token_client.post("/jobs", json={"kind": "pretrain"}, headers=auth_headers)
    assert response.status_code == 202
    assert len(enqueued) == 1


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json", "/redoc"])
def test_health_and_docs_need_no_token(token_client, path):
    assert token_client.get(path).status_code == 200


@pytest.fixture
def root_path_client(settings, env):
    """The app behind a prefix, as `uvicorn --root-path /api` serves it: scope path /api/healthz."""
    env(API_TOKEN=TOKEN)
    app = create_app()
    app.dependency_overrides[deps.get_broker_check] = lambda: lambda: None
    with TestClient(app, root_path="/api") as client:
        yield client


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json"])
def test_health_and_docs_need_no_token_under_a_root_path(root_path_client, path):
    assert root_path_client.get(f"/api{path}").status_code == 200


def test_api_routes_still_need_the_token_under_a_root_path(root_path_client, auth_headers):
    assert root_path_client.get("/api/jobs").status_code == 401
    assert root_path_client.get("/api/jobs", headers=auth_headers).status_code == 200


def test_no_token_configured_means_open_access(client):
    assert client.get("/jobs").status_code == 200


# ---------------------------------------------------------------- openapi


@pytest.fixture
def openapi(client):
    return client.get("/openapi.json").json()


def test_openapi_has_title_version_description_and_tags(openapi):
    info = openapi["info"]
    assert info["title"] == "transferlab" and info["version"] and "fine-tune" in info["description"]
    assert {t["name"] for t in openapi["tags"]} == {
        "jobs",
        "checkpoints",
        "predict",
        "health",
        "experiments",
        "artifacts",
        "datasets",
    }
    for path, operations in openapi["paths"].items():
        for operation in operations.values():
            assert operation.get("tags"), path
            assert operation.get("description") or operation.get("summary"), path


def test_post_jobs_has_pretrain_and_finetune_examples(openapi):
    content = openapi["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    examples = content["examples"]
    assert set(examples) == {"pretrain", "finetune"}
    assert examples["pretrain"]["value"]["kind"] == "pretrain"
    assert examples["finetune"]["value"]["kind"] == "finetune"


def test_predict_body_documents_its_fields(openapi):
    body = openapi["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    ref = body["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = openapi["components"]["schemas"][ref]["properties"]
    assert set(properties) == {"files", "checkpoint", "job", "model"}
    assert properties["checkpoint"]["examples"]


def test_every_schema_field_is_described(openapi):
    undescribed = [
        f"{name}.{field}"
        for name, schema in openapi["components"]["schemas"].items()
        if name not in ("ValidationError", "HTTPValidationError")  # FastAPI's own
        for field, prop in schema.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undescribed == []


def test_example_bodies_are_valid_requests(client, openapi, make_job, make_checkpoint_row):
    examples = openapi["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    pretrain = examples["examples"]["pretrain"]["value"]
    assert client.post("/jobs", json=pretrain).status_code == 202

    source = make_job(status="succeeded", architecture="resnet18")
    make_checkpoint_row(source)
    finetune = examples["examples"]["finetune"]["value"] | {"source": source.id}
    assert client.post("/jobs", json=finetune).status_code == 202


# ---------------------------------------------------------------- the real broker check


@pytest.fixture
def real_broker_client(settings):
    with TestClient(create_app()) as client:
        yield client


def test_readyz_with_the_embedded_broker_is_200(real_broker_client):
    response = real_broker_client.get("/readyz")

    assert response.status_code == 200, response.text


def test_readyz_with_an_unreachable_redis_is_503_naming_the_broker(real_broker_client, env):
    env(BROKER_URL="redis://127.0.0.1:1/0")

    response = real_broker_client.get("/readyz")

    assert response.status_code == 503
    assert "broker unreachable" in response.json()["detail"]
    assert "database" not in response.json()["detail"]
