"""POST /jobs within the work budgets: a job over its work or memory limit is a 422 naming the limit and
the estimate, one past TRANSFERLAB_MAX_ACTIVE_JOBS a 429 with Retry-After; neither writes anything."""

from __future__ import annotations

from core.budgets import RETRY_AFTER_SECONDS
from core.models import Job, JobStatus

# The job: 1000 epochs at batch 4096 and 512 px.
ABUSE = {
    "kind": "pretrain",
    "dataset": "stl10",
    "model": "resnet18",
    "hyperparameters": {"epochs": 1000, "batch_size": 4096},
    "data": {"image_size": 512},
}
SMALL = {"kind": "pretrain", "dataset": "stl10", "model": "simple_cnn", "data": {"image_size": 32}}


def test_a_job_over_max_job_work_is_a_422_naming_the_limit_and_the_estimate(client, count_rows, enqueued):
    response = client.post("/jobs", json=ABUSE)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "pretrain", "hyperparameters", "epochs"] and error["input"] == 1000
    assert (
        "TRANSFERLAB_MAX_JOB_WORK=1e+15" in error["msg"] and "estimated work 2.65e+17 FLOPs" in error["msg"]
    )
    assert count_rows(Job) == 0 and enqueued == []


def test_a_job_over_max_job_memory_bytes_is_a_422_naming_the_limit(client, count_rows):
    body = {**SMALL, "model": "resnet18", "hyperparameters": {"epochs": 1, "batch_size": 4096}}
    body["data"] = {"image_size": 256, "train_samples": 5000}
    response = client.post("/jobs", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "pretrain", "hyperparameters", "batch_size"]
    assert "TRANSFERLAB_MAX_JOB_MEMORY_BYTES" in error["msg"] and "GiB" in error["msg"]
    assert count_rows(Job) == 0


def test_a_finetune_is_estimated_with_its_source_architecture(
    client, make_job, make_checkpoint_row, count_rows
):
    source = make_job(status=JobStatus.succeeded, architecture="vgg11_bn")
    make_checkpoint_row(source)
    body = {"kind": "finetune", "source": source.id, "dataset": "mnist", "hyperparameters": {"epochs": 100}}
    response = client.post("/jobs", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "finetune", "hyperparameters", "epochs"] and "vgg11_bn" in error["msg"]
    assert count_rows(Job) == 1  # the source alone


def test_past_max_active_jobs_a_job_is_a_429_with_retry_after_and_nothing_is_written(
    env, client, make_job, count_rows, enqueued
):
    env(MAX_ACTIVE_JOBS=2)
    make_job(status=JobStatus.queued)
    make_job(status=JobStatus.running)
    response = client.post("/jobs", json=SMALL)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "TRANSFERLAB_MAX_ACTIVE_JOBS=2" in response.json()["detail"]
    assert count_rows(Job) == 2 and enqueued == []


def test_ended_jobs_leave_room_under_max_active_jobs(env, client, make_job, enqueued):
    env(MAX_ACTIVE_JOBS=2)
    make_job(status=JobStatus.running)
    make_job(status=JobStatus.succeeded)
    make_job(status=JobStatus.failed)
    response = client.post("/jobs", json=SMALL)
    assert response.status_code == 202 and enqueued == [response.json()["id"]]
