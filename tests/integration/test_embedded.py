"""The embedded setting end to end: `transferlab serve` alone (SQLite, the SQLite-backed broker, a
worker subprocess it starts). A job queued while no worker runs survives a restart of the service."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

from tests.integration.conftest import Stack, finetune_body, png_digit, pretrain_body


@pytest.fixture(scope="module")
def stack(make_stack) -> Iterator[Stack]:
    stack = make_stack(embedded_workers="1")
    yield stack
    stack.stop_all()


@pytest.fixture(scope="module")
def pretrained(stack: Stack) -> str:
    first = stack.start_api(workers=0)  # no worker yet: the job waits in the broker's SQLite file
    job_id = stack.submit(pretrain_body())
    assert stack.job(job_id)["status"] == "queued"
    assert stack.stop(first) == 0
    stack.start_api(workers=None)  # the default: TRANSFERLAB_EMBEDDED_WORKERS=1 worker process
    stack.wait_succeeded(job_id)
    return job_id


def test_a_job_queued_before_a_restart_runs_after_it(stack, pretrained):
    job = stack.job(pretrained)
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["checkpoint"]
    assert (stack.home / "broker.sqlite").exists() and (stack.home / "transferlab.sqlite").exists()


def test_a_finetune_then_predict_on_the_embedded_service(stack, pretrained):
    job_id = stack.submit(finetune_body(pretrained, "partial"))
    job = stack.wait_succeeded(job_id)
    assert len(stack.metrics(job_id)["epochs"]) == 4
    response = stack.client.post(
        "/predict",
        data={"job": job_id},
        files=[("files", ("digit.png", png_digit(), "image/png"))],
    )
    assert response.status_code == 200, response.text
    assert response.json()["checkpoint"] == job["checkpoint"]


def test_stopping_the_service_stops_the_workers_it_started(stack, pretrained):
    serve = stack.processes[-1][1]
    workers = psutil.Process(serve.pid).children()
    assert [w for w in workers if "worker" in w.cmdline()], "serve started no worker"
    assert stack.stop(serve) == 0
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive
