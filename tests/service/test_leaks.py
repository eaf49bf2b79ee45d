"""No absolute server path, connection string, host or port in an error body or an unauthenticated
answer: stored errors (a worker's MissingDataError, a broker's refusal) are redacted where they are
shown, the health probes name the dependency that is down and nothing more, and the catch-all
handlers say nothing of what went wrong inside."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from core.models import Experiment, ExperimentStatus, Job, JobRole, JobStatus
from engine.spec import PretrainSpec
from service import deps
from service.redact import redact
from tests.service.conftest import TOKEN

BROKER_ERROR = "Error 111 connecting to redis://:hunter2@10.1.2.3:6379/0. Connection refused."


def missing_data(folder: Path) -> str:
    """The error the worker stores for a data set that is not there (engine.errors.MissingDataError)."""
    return (
        f"MissingDataError: data set 'mnist' is missing: looked in {folder} for train-images-idx3-ubyte.gz; "
        "downloads are off (set TRANSFERLAB_DOWNLOAD=true, or download=True, to fetch it)"
    )


@pytest.fixture(autouse=True)
def default_data_root(env) -> None:
    """These errors name the default data root, $TRANSFERLAB_HOME/data, not the tiny one."""
    env(DATA_DIR=None)


def assert_no_server_path(text: str, tmp_path: Path) -> None:
    assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text, text


# ---------------------------------------------------------------- stored errors


def test_a_job_error_names_a_server_folder_by_its_setting(
    default_data_root, client, settings, make_job, tmp_path
):
    job = make_job(status=JobStatus.failed, error=missing_data(settings.data_root / "mnist"))

    error = client.get(f"/jobs/{job.id}").json()["error"]

    assert_no_server_path(error, tmp_path)
    assert "looked in $TRANSFERLAB_HOME/data/mnist for train-images" in error


def test_a_data_root_outside_the_home_is_named_by_its_own_setting(client, env, make_job, tmp_path):
    env(DATA_DIR=str(tmp_path / "datasets"))
    job = make_job(status=JobStatus.failed, error=missing_data(tmp_path / "datasets" / "mnist"))

    error = client.get(f"/jobs/{job.id}").json()["error"]

    assert "looked in $TRANSFERLAB_DATA_DIR/mnist for" in error


def test_a_path_outside_the_server_folders_is_shown_as_a_server_path(client, make_job):
    job = make_job(status=JobStatus.failed, error=missing_data(Path("/srv/worker-7/cache/mnist")))

    error = client.get(f"/jobs/{job.id}").json()["error"]

    assert "/srv" not in error and "looked in <server path> for" in error


def test_job_errors_are_redacted_in_the_list_too(client, settings, make_job, tmp_path):
    make_job(status=JobStatus.failed, error=missing_data(settings.data_root / "mnist"))

    [listed] = client.get("/jobs").json()["data"]

    assert_no_server_path(listed["error"], tmp_path)


def test_a_broker_refusal_shows_neither_its_url_nor_its_host(app, client, session, env, tiny_data_root):
    def refuse(job_id: str) -> None:
        raise ConnectionError(BROKER_ERROR)

    env(DATA_DIR=tiny_data_root)  # a job is sent only when its data is there

    app.dependency_overrides[deps.get_enqueue] = lambda: refuse

    response = client.post("/jobs", json={"kind": "pretrain"})
    [job] = session.query(Job).all()
    shown = client.get(f"/jobs/{job.id}").json()["error"]

    assert response.status_code == 503
    for text in (response.json()["detail"], shown):
        assert "hunter2" not in text and "10.1.2.3" not in text and "6379" not in text, text
        assert "redis://…" in text and "Connection refused" in text


@pytest.fixture
def failed_experiment(session, make_job, settings) -> Experiment:
    """An experiment whose pre-train failed for want of data, as orchestrate records it."""
    pretrain = make_job(status=JobStatus.failed, error=missing_data(settings.data_root / "stl10"))
    pretrain.spec = PretrainSpec(model="simple_cnn").model_dump(mode="json")
    experiment = Experiment(
        name="no data",
        status=ExperimentStatus.failed,
        request={"name": "no data", "pretrained_job": "0" * 32},
        dataset="mnist",
        architecture="simple_cnn",
        pretrain_job_id=pretrain.id,
        error=f"pre-training job {pretrain.id} failed: {pretrain.error}",
    )
    session.add(experiment)
    session.flush()
    pretrain.experiment_id, pretrain.role = experiment.id, JobRole.pretrain
    session.commit()
    return experiment


def test_an_experiment_error_and_its_jobs_errors_are_redacted(client, failed_experiment, tmp_path):
    shown = client.get(f"/experiments/{failed_experiment.id}").json()
    [listed] = client.get("/experiments").json()["data"]

    for error in (shown["error"], shown["jobs"][0]["error"], listed["error"]):
        assert_no_server_path(error, tmp_path)
        assert "$TRANSFERLAB_HOME/data/stl10" in error


@pytest.mark.parametrize("params", [{}, {"format": "html"}], ids=["markdown", "html"])
def test_the_report_quotes_the_experiment_error_redacted(client, failed_experiment, tmp_path, params):
    response = client.get(f"/experiments/{failed_experiment.id}/report", params=params)

    assert response.status_code == 200, response.text
    assert_no_server_path(response.text, tmp_path)
    assert "$TRANSFERLAB_HOME/data/stl10" in response.text


def test_a_checkpoint_error_shows_no_server_path(client, settings, trained_checkpoint, tmp_path):
    from engine.checkpoint import META_FILE
    from tests.service.test_predict import png, post

    (settings.checkpoints_dir / trained_checkpoint.path / META_FILE).unlink()

    response = post(client, [("a.png", png())], checkpoint=trained_checkpoint.id)

    assert response.status_code >= 400
    assert_no_server_path(response.json()["detail"], tmp_path)
    assert "$TRANSFERLAB_HOME/checkpoints" in response.json()["detail"]


# ---------------------------------------------------------------- health probes and catch-alls


def test_readyz_names_the_database_but_not_its_address(client, env):
    env(DATABASE_URL="postgresql+psycopg://postgres:pw@127.0.0.1:1/nowhere")

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["detail"] == "not ready: database unreachable; the service log says why"


def test_readyz_names_the_broker_but_not_its_address(app, client):
    def broker_down() -> None:
        raise ConnectionError(BROKER_ERROR)

    app.dependency_overrides[deps.get_broker_check] = lambda: broker_down

    response = client.get("/readyz")

    assert response.json()["detail"] == "not ready: broker unreachable; the service log says why"


def test_a_database_that_is_down_is_a_503_without_its_address(client, env):
    env(DATABASE_URL="postgresql+psycopg://postgres:pw@127.0.0.1:1/nowhere")

    response = client.get("/jobs")

    assert response.status_code == 503
    assert response.json() == {"detail": "database unavailable; retry later"}


def test_an_unhandled_error_says_nothing_of_what_happened(app, tmp_path):
    def broken_db():
        raise RuntimeError(f"cannot open {tmp_path}/secret.sqlite")

    app.dependency_overrides[deps.get_db] = broken_db

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/jobs")

    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error; see the service log"}


def test_a_database_error_raised_in_a_route_shows_no_address(app, client):
    def broken_db():
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError('server at "10.9.8.7", port 5432'))

    app.dependency_overrides[deps.get_db] = broken_db

    response = client.get("/checkpoints")

    assert response.status_code == 503 and "10.9.8.7" not in response.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs", "/jobs"])
def test_what_answers_without_a_token_shows_no_server_path(client, env, tmp_path, path):
    env(API_TOKEN=TOKEN)

    response = client.get(path)

    assert response.status_code in (200, 401)
    assert_no_server_path(response.text, tmp_path)


# ---------------------------------------------------------------- the redaction itself


@pytest.mark.parametrize(
    "text",
    [
        "Follow GET /experiments/1a2b/report when it ends.",
        "device 'cuda:3': allowed cuda:0..cuda:1",
        "lease expired at 2026-01-01T12:30:00 UTC",
        "train/val split; see https://example.org/mnist/",
    ],
    ids=["our-links", "devices", "times", "public-urls"],
)
def test_redaction_keeps_what_is_not_a_server_internal(settings, text):
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql+psycopg://u:pw@db.internal:5432/tl down", "postgresql+psycopg://… down"),
        ("connecting to redis:6379 refused", "connecting to <host>:<port> refused"),
        ('server at "10.0.0.5", port 5432', 'server at "<host>", port 5432'),
        ("fetch https://user:pw@proxy.example/x failed", "fetch https://proxy.example/x failed"),
    ],
    ids=["connection-string", "host-port", "address", "credentials-in-a-url"],
)
def test_redaction_removes_connection_strings_hosts_and_credentials(settings, text, shown):
    assert redact(text) == shown
