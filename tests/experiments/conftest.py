"""Fixtures: the service fixtures (a migrated SQLite database per test, a client whose enqueue is
recorded), a succeeded pretrain job to reuse, and a way to play the worker: give each job of an
experiment stored results as a worker would, then call the hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from core.experiments.orchestrate import on_job_finished
from core.models import Cost, EpochMetric, Evaluation, Job, JobStatus, utcnow
from tests.service import conftest as _service

# The service's fixtures, shared by name (a fresh migrated database and app per test).
app, auth_headers, client, count_rows = (
    _service.app,
    _service.auth_headers,
    _service.client,
    _service.count_rows,
)
enqueued, env, settings, session = _service.enqueued, _service.env, _service.settings, _service.session
make_job, make_checkpoint_row = _service.make_job, _service.make_checkpoint_row

CLASSES = [str(d) for d in range(10)]


@pytest.fixture
def pretrained(session, make_job, make_checkpoint_row) -> Job:
    """A succeeded simple_cnn pretrain job with a checkpoint row (no files: nothing loads it here)."""
    job = make_job(status=JobStatus.succeeded, kind="pretrain")
    job.spec = {
        "kind": "pretrain",
        "dataset": "stl10",
        "model": "simple_cnn",
        "hyperparameters": {"epochs": 3, "batch_size": 32, "optimizer": "adam", "lr": 0.001, "seed": 0},
        "data": {"image_size": 32},
    }
    session.commit()
    make_checkpoint_row(job, dataset="stl10")
    return job


def body(**fields: Any) -> dict[str, Any]:
    """An experiment request: tiny fine-tunes on MNIST, overridden by `fields`."""
    request: dict[str, Any] = {
        "name": "test study",
        "dataset": "mnist",
        "hyperparameters": {"epochs": 2, "batch_size": 32},
        "data": {"image_size": 32},
    }
    request.update(fields)
    return request


def per_class(accuracy: float, n: int = 100) -> tuple[list[dict], list[list[int]]]:
    """Per-class rows and a confusion matrix for n test images a class at roughly `accuracy`."""
    right = round(accuracy * n)
    rows, matrix = [], []
    for c in range(10):
        line = [0] * 10
        line[c] = right
        line[(c + 1) % 10] = n - right
        matrix.append(line)
        f1 = right / n
        rows.append({"label": CLASSES[c], "precision": f1, "recall": f1, "f1": f1, "support": n})
    return rows, matrix


def store_results(
    session: Session,
    job: Job,
    *,
    val: float | None,
    test: float,
    train_seconds: float = 10.0,
    trainable: int = 1000,
    epochs: int = 2,
) -> None:
    """What the worker writes for a job that succeeded: epochs, evaluation, cost, final status."""
    for e in range(1, epochs + 1):
        train_accuracy = min(1.0, test + 0.05)
        session.add(EpochMetric(job_id=job.id, epoch=e, phase="train", loss=1.0 / e, accuracy=train_accuracy,
                                lr=0.001, seconds=5.0, images_per_second=180.0))  # fmt: skip
        if val is not None:  # rising to `val` at the last epoch
            val_accuracy = val - 0.1 * (epochs - e)
            session.add(EpochMetric(job_id=job.id, epoch=e, phase="val", loss=1.2 / e, accuracy=val_accuracy,
                                    lr=0.001, seconds=0.5, images_per_second=40.0))  # fmt: skip
    rows, matrix = per_class(test)
    accuracy = sum(r[i] for i, r in enumerate(matrix)) / 1000
    session.add(
        Evaluation(job_id=job.id, accuracy=accuracy, macro_f1=accuracy - 0.01, weighted_f1=accuracy - 0.005,
                   per_class=rows, confusion_matrix=matrix)
    )  # fmt: skip
    session.add(
        Cost(job_id=job.id, train_seconds=train_seconds, eval_seconds=0.5, trainable_parameters=trainable,
             total_parameters=400_000, parameter_updates=trainable * 50, peak_memory_bytes=300 * 2**20,
             memory_device="cpu")
    )  # fmt: skip
    job.status = JobStatus.succeeded
    job.progress = 1.0
    job.current_epoch = epochs
    job.device = "cpu"
    job.precision = "fp32"
    job.finished_at = utcnow()
    session.commit()


@pytest.fixture
def finish_jobs(session: Session, enqueued: list[str]) -> Callable[..., None]:
    """Play the worker for every queued job of an experiment: `score(job) -> (val, test)` or None to
    fail it; then call the hook, as the worker does after each job."""

    def finish(experiment_id: str, score: Callable[[Job], tuple[float | None, float] | None]) -> None:
        session.expire_all()
        jobs = (
            session.query(Job)
            .filter(Job.experiment_id == experiment_id, Job.status == JobStatus.queued)
            .all()
        )
        for job in jobs:
            result = score(job)
            if result is None:
                job.status = JobStatus.failed
                job.error = "RuntimeError: boom"
                job.finished_at = utcnow()
                session.commit()
            else:
                trainable = {"linear": 1290, "partial": 300_000, "full": 390_000, "lp_ft": 390_000,
                             None: 30_730}[job.strategy]  # fmt: skip
                store_results(
                    session, job, val=result[0], test=result[1], trainable=trainable,
                    train_seconds=trainable / 10_000 + 1,
                )  # fmt: skip
            on_job_finished(session, job.id, enqueued.append)

    return finish


def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/experiments", json=body(**fields))
    assert response.status_code == 202, response.text
    return response.json()
