"""POST /jobs, GET /jobs, GET /jobs/{id}, POST /jobs/{id}/cancel."""

from __future__ import annotations

import pytest

from core.models import Job, JobStatus
from engine.spec import FinetuneSpec, PretrainSpec
from service import deps

PRETRAIN = {
    "kind": "pretrain",
    "dataset": "stl10",
    "model": "simple_cnn",
    "hyperparameters": {"epochs": 2, "batch_size": 32, "lr": 0.01},
    "data": {"image_size": 32, "train_samples": 100},
}


def finetune(source: str, **overrides):
    body = {
        "kind": "finetune",
        "source": source,
        "dataset": "mnist",
        "strategy": "partial",
        "frozen_blocks": 2,
        "hyperparameters": {"epochs": 2},
        "data": {"image_size": 32},
    }
    return body | overrides


def error_text(response) -> str:
    return str(response.json()["detail"])


def assert_nothing_created(count_rows, enqueued, jobs_before: int = 0):
    assert count_rows(Job) == jobs_before
    assert enqueued == []


# ---------------------------------------------------------------- create


def test_pretrain_is_queued_stored_and_enqueued(client, enqueued, session):
    response = client.post("/jobs", json=PRETRAIN)

    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued" and job["kind"] == "pretrain"
    assert job["architecture"] == "simple_cnn" and job["dataset"] == "stl10"
    assert job["links"] == {
        "self": f"/jobs/{job['id']}",
        "metrics": f"/jobs/{job['id']}/metrics",
        "cancel": f"/jobs/{job['id']}/cancel",
        "logs": f"/jobs/{job['id']}/logs",
        "source": None,
        "source_checkpoint": None,
        "checkpoint": None,
    }
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert enqueued == [job["id"]]
    row = session.get(Job, job["id"])
    assert row.status == JobStatus.queued
    # The stored spec is the engine's, every default filled in: the worker reads it back as is.
    spec = PretrainSpec.model_validate(row.spec)
    assert spec.hyperparameters.epochs == 2 and spec.hyperparameters.optimizer == "adam"


def test_finetune_copies_the_source_architecture(client, enqueued, make_job, make_checkpoint_row):
    source = make_job(status=JobStatus.succeeded, architecture="resnet18")
    make_checkpoint_row(source)

    response = client.post("/jobs", json=finetune(source.id))

    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "finetune" and job["source"] == source.id
    assert job["architecture"] == "resnet18" and job["strategy"] == "partial"
    assert job["links"]["source"] == f"/jobs/{source.id}"
    assert enqueued == [job["id"]]
    # No `source` in the spec (FinetuneSpec forbids unknown fields); it lives in source_job_id.
    assert FinetuneSpec.model_validate(job["spec"]).frozen_blocks == 2


@pytest.mark.parametrize(
    ("patch", "field", "allowed"),
    [
        ({"dataset": "imagenet"}, "dataset", "choose one of stl10, mnist, fashion_mnist, cifar10"),
        ({"model": "vit_b_16"}, "model", "'simple_cnn', 'resnet18', 'mobilenet_v3_small'"),
        ({"hyperparameters": {"lr": 0}}, "lr", "greater than 0"),
        ({"hyperparameters": {"lr": -0.1}}, "lr", "greater than 0"),
        ({"hyperparameters": {"batch_size": 1}}, "batch_size", "greater than or equal to 2"),
        ({"hyperparameters": {"batch_size": 5000}}, "batch_size", "less than or equal to 4096"),
        ({"hyperparameters": {"optimizer": "lion"}}, "optimizer", "'adam', 'adamw', 'rmsprop'"),
        ({"hyperparameters": {"learning_rate": 0.1}}, "learning_rate", "Extra inputs"),
        ({"hyperparameters": {"precision": "fp16"}}, "precision", "'auto', 'fp32' or 'bf16'"),
        ({"data": {"image_size": 8}}, "image_size", "greater than or equal to 16"),
    ],
)
def test_bad_pretrain_input_is_422_naming_field_and_allowed(
    client, enqueued, count_rows, patch, field, allowed
):
    response = client.post("/jobs", json=PRETRAIN | patch)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"][-1] == field
    assert allowed in error["msg"]
    assert_nothing_created(count_rows, enqueued)


def test_missing_kind_is_422_naming_kind_and_choices(client, enqueued, count_rows):
    response = client.post("/jobs", json={"dataset": "stl10"})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "kind"]
    assert "'pretrain' or 'finetune'" in error["msg"]
    assert_nothing_created(count_rows, enqueued)


def test_unknown_kind_is_422_naming_the_choices(client, enqueued, count_rows):
    response = client.post("/jobs", json=PRETRAIN | {"kind": "distill"})

    assert response.status_code == 422
    assert "'pretrain', 'finetune'" in error_text(response)
    assert_nothing_created(count_rows, enqueued)


def test_unknown_strategy_is_422(client, enqueued, count_rows, make_job, make_checkpoint_row):
    source = make_job(status=JobStatus.succeeded)
    make_checkpoint_row(source)

    response = client.post("/jobs", json=finetune(source.id, strategy="half"))

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "finetune", "strategy"]
    assert "'linear', 'partial', 'full' or 'lp_ft'" in error["msg"]
    assert_nothing_created(count_rows, enqueued, jobs_before=1)


def test_finetune_from_a_missing_job_is_404(client, enqueued, count_rows):
    response = client.post("/jobs", json=finetune("0" * 32))

    assert response.status_code == 404
    assert error_text(response).startswith("source:") and "0" * 32 in error_text(response)
    assert_nothing_created(count_rows, enqueued)


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_finetune_from_an_unsucceeded_job_is_409(client, enqueued, count_rows, make_job, status):
    source = make_job(status=status)

    response = client.post("/jobs", json=finetune(source.id))

    assert response.status_code == 409
    assert "source:" in error_text(response) and status in error_text(response)
    assert_nothing_created(count_rows, enqueued, jobs_before=1)


def test_finetune_from_a_succeeded_job_without_checkpoint_is_409(client, enqueued, count_rows, make_job):
    source = make_job(status=JobStatus.succeeded)

    response = client.post("/jobs", json=finetune(source.id))

    assert response.status_code == 409
    assert "no checkpoint" in error_text(response)
    assert_nothing_created(count_rows, enqueued, jobs_before=1)


@pytest.mark.parametrize(("architecture", "frozen"), [("simple_cnn", 4), ("resnet18", 9)])
def test_frozen_blocks_beyond_the_source_model_is_422(
    client, enqueued, count_rows, make_job, make_checkpoint_row, architecture, frozen
):
    source = make_job(status=JobStatus.succeeded, architecture=architecture)
    make_checkpoint_row(source)

    response = client.post("/jobs", json=finetune(source.id, frozen_blocks=frozen))

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "finetune", "frozen_blocks"]
    assert architecture in error["msg"] and "frozen_blocks" in error["msg"]
    assert_nothing_created(count_rows, enqueued, jobs_before=1)


def test_frozen_blocks_with_a_strategy_other_than_partial_is_422(
    client, enqueued, count_rows, make_job, make_checkpoint_row
):
    source = make_job(status=JobStatus.succeeded)
    make_checkpoint_row(source)

    response = client.post("/jobs", json=finetune(source.id, strategy="linear", frozen_blocks=1))

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "finetune", "frozen_blocks"] and "partial" in error["msg"]
    assert_nothing_created(count_rows, enqueued, jobs_before=1)


def test_lp_ft_with_one_epoch_is_422_naming_epochs(
    client, enqueued, count_rows, make_job, make_checkpoint_row
):
    source = make_job(status=JobStatus.succeeded)
    make_checkpoint_row(source)
    body = finetune(source.id, strategy="lp_ft", frozen_blocks=None, hyperparameters={"epochs": 1})

    response = client.post("/jobs", json=body)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "finetune", "hyperparameters", "epochs"]
    assert error["input"] == 1
    assert_nothing_created(count_rows, enqueued, jobs_before=1)


def test_negative_frozen_blocks_is_422(client, enqueued, count_rows, make_job, make_checkpoint_row):
    source = make_job(status=JobStatus.succeeded)
    make_checkpoint_row(source)

    response = client.post("/jobs", json=finetune(source.id, frozen_blocks=-1))

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "frozen_blocks"
    assert_nothing_created(count_rows, enqueued, jobs_before=1)


def test_enqueue_failure_marks_the_job_failed_and_is_503(app, client, session):
    def broken_enqueue(job_id: str) -> None:
        raise ConnectionError("broker down")

    app.dependency_overrides[deps.get_enqueue] = lambda: broken_enqueue

    response = client.post("/jobs", json=PRETRAIN)

    assert response.status_code == 503
    assert "broker down" in error_text(response)
    [job] = session.query(Job).all()
    assert job.status == JobStatus.failed and "broker down" in job.error
    assert job.finished_at is not None


# ---------------------------------------------------------------- list and get


def test_list_is_newest_first_with_total_count(client, make_job):
    ids = [make_job().id for _ in range(5)]

    body = client.get("/jobs").json()

    assert body["count"] == 5
    assert [job["id"] for job in body["data"]] == ids[::-1]


def test_list_pages_with_skip_and_limit(client, make_job):
    ids = [make_job().id for _ in range(5)][::-1]

    page = client.get("/jobs", params={"skip": 1, "limit": 2}).json()

    assert page["count"] == 5
    assert [job["id"] for job in page["data"]] == ids[1:3]


def test_list_filters_by_status_and_kind(client, make_job):
    make_job(status="queued")
    running = make_job(status="running")
    make_job(status="running", kind="finetune")

    by_status = client.get("/jobs", params={"status": "running"}).json()
    both = client.get("/jobs", params={"status": "running", "kind": "pretrain"}).json()

    assert by_status["count"] == 2
    assert both["count"] == 1 and both["data"][0]["id"] == running.id


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "done"}, "status"), ({"limit": 0}, "limit"), ({"skip": -1}, "skip")],
)
def test_list_refuses_bad_query_parameters(client, params, field):
    response = client.get("/jobs", params=params)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_get_returns_the_job_with_its_checkpoint(client, make_job, make_checkpoint_row):
    job = make_job(status="succeeded", worker="w1", device="cpu", precision="bf16", attempts=1, progress=1.0)
    checkpoint = make_checkpoint_row(job)

    body = client.get(f"/jobs/{job.id}").json()

    assert body["status"] == "succeeded" and body["progress"] == 1.0
    assert body["worker"] == "w1" and body["device"] == "cpu" and body["attempts"] == 1
    assert body["precision"] == "bf16"
    assert body["checkpoint"] == checkpoint.id
    assert body["links"]["checkpoint"] == f"/checkpoints/{checkpoint.id}"
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")


def test_get_unknown_job_is_404(client):
    response = client.get("/jobs/nope")

    assert response.status_code == 404
    assert response.json() == {"detail": "job 'nope' not found"}


# ---------------------------------------------------------------- cancel


def test_cancel_queued_job_cancels_at_once(client, make_job, session):
    job = make_job(status="queued")

    response = client.post(f"/jobs/{job.id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    session.refresh(job)
    assert job.status == JobStatus.cancelled and job.finished_at is not None


def test_cancel_running_job_requests_it_and_is_202(client, make_job, session):
    job = make_job(status="running")

    response = client.post(f"/jobs/{job.id}/cancel")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "running" and body["cancel_requested"] is True
    session.refresh(job)
    assert job.cancel_requested is True


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_finished_job_is_409(client, make_job, status):
    job = make_job(status=status)

    response = client.post(f"/jobs/{job.id}/cancel")

    assert response.status_code == 409
    assert status in error_text(response)


def test_cancel_unknown_job_is_404(client):
    assert client.post("/jobs/nope/cancel").status_code == 404
