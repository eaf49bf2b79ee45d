"""The distributed setting for real: PostgreSQL, Redis, `transferlab serve --workers 0` and a
separate `transferlab worker` process. Pretrain on tiny STL-10 files, fine-tune with every strategy
on tiny MNIST files, read metrics while running and after, predict on a PNG, cancel."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from core.migrate import upgrade
from tests.integration.conftest import Stack, finetune_body, png_digit, pretrain_body

STRATEGIES = ["linear", "partial", "full", "lp_ft"]


@pytest.fixture(scope="module")
def stack(make_stack, postgres_url, redis_url) -> Iterator[Stack]:
    stack = make_stack(database_url=postgres_url, broker_url=redis_url)
    upgrade(postgres_url)  # serve would too; done first so the worker can start beside it
    api = stack.start_api(workers=0, wait=False)
    stack.start_workers(1)
    stack.wait_api(api)
    yield stack
    stack.stop_all()  # before its database is dropped


@pytest.fixture(scope="module")
def pretrain(stack: Stack) -> dict:
    """Submit a pretrain and watch it: every poll's job and metrics while it ran, then the end."""
    job_id = stack.submit(pretrain_body(epochs=6))
    seen: list[tuple[dict, dict]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = stack.job(job_id)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        if job["status"] == "running":
            seen.append((job, stack.metrics(job_id)))
        time.sleep(0.1)
    return {"id": job_id, "while_running": seen, "job": stack.wait_succeeded(job_id)}


@pytest.fixture(scope="module")
def finetunes(stack: Stack, pretrain: dict) -> dict[str, str]:
    """One finetune per strategy, all queued at once on the one worker."""
    return {s: stack.submit(finetune_body(pretrain["id"], s)) for s in STRATEGIES}


def test_the_pretrain_job_runs_on_the_worker_and_succeeds(pretrain):
    job = pretrain["job"]
    assert job["attempts"] == 1 and job["progress"] == 1.0 and job["current_epoch"] == 6
    assert job["device"] == "cpu" and job["precision"] == "fp32" and ":" in job["worker"]
    assert job["checkpoint"] and job["error"] is None


def test_progress_and_epochs_are_visible_while_the_job_runs(pretrain):
    running = pretrain["while_running"]
    assert running, "never saw the job running"
    assert any(job["progress"] > 0 for job, _ in running)
    partial = [metrics for job, metrics in running if 0 < len(metrics["epochs"]) < 12]
    assert partial, "never saw metrics with some but not all epochs while running"
    assert all(metrics["evaluation"] is None for metrics in partial)


def test_metrics_after_the_job_hold_every_epoch_the_evaluation_and_the_cost(stack, pretrain):
    metrics = stack.metrics(pretrain["id"])
    keys = [(e["epoch"], e["phase"]) for e in metrics["epochs"]]
    assert keys == [(e, p) for e in range(1, 7) for p in ("train", "val")]
    evaluation = metrics["evaluation"]
    assert 0 <= evaluation["accuracy"] <= 1 and len(evaluation["per_class"]) == 10
    assert len(evaluation["confusion_matrix"]) == 10
    cost = metrics["cost"]
    assert cost["trainable_parameters"] == cost["total_parameters"] > 0
    assert cost["parameter_updates"] > 0 and cost["memory_device"] == "cpu"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_fine_tunes_the_pretrained_checkpoint(stack, pretrain, finetunes, strategy):
    job = stack.wait_succeeded(finetunes[strategy])
    assert (job["strategy"], job["source"], job["dataset"]) == (strategy, pretrain["id"], "mnist")
    metrics = stack.metrics(job["id"])
    assert len(metrics["epochs"]) == 4 and metrics["evaluation"]["per_class"][0]["label"] == "0"
    cost = metrics["cost"]
    if strategy == "linear":
        assert cost["trainable_parameters"] < cost["total_parameters"]
    if strategy == "full":
        assert cost["trainable_parameters"] == cost["total_parameters"]


def test_predict_classifies_a_png_with_a_fine_tuned_checkpoint(stack, finetunes):
    job = stack.wait_succeeded(finetunes["linear"])
    response = stack.client.post(
        "/predict",
        data={"checkpoint": job["checkpoint"]},
        files=[("files", ("digit.png", png_digit(), "image/png"))],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checkpoint"] == job["checkpoint"]
    (prediction,) = body["predictions"]
    assert prediction["filename"] == "digit.png" and prediction["label"] in list("0123456789")
    assert 0 <= prediction["probability"] <= 1 and prediction["top"]


def test_the_checkpoints_are_listed_with_their_jobs(stack, pretrain, finetunes):
    for job_id in finetunes.values():
        stack.wait_succeeded(job_id)
    response = stack.client.get("/checkpoints")
    assert response.status_code == 200
    jobs = {c["job"] for c in response.json()["data"]}
    assert {pretrain["id"], *finetunes.values()} <= jobs


def test_a_running_job_is_cancelled_within_seconds(stack, finetunes):
    for job_id in finetunes.values():  # the one worker is free again
        stack.wait_succeeded(job_id)
    job_id = stack.submit(pretrain_body(epochs=500))
    stack.wait(job_id, lambda job: job["status"] == "running" and job["current_epoch"] >= 1)
    response = stack.client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    asked = time.monotonic()
    job = stack.wait(job_id, timeout=30, every=0.1)
    assert job["status"] == "cancelled" and time.monotonic() - asked < 10
    assert job["current_epoch"] < 500 and job["checkpoint"] is None
