"""Fixtures: the service's (a migrated SQLite database and app per test, enqueue recorded) and the
experiment tests' way to play the worker, so pages show real-looking rows; an ended experiment."""

from __future__ import annotations

from typing import Any

import pytest

from tests.experiments import conftest as _experiments
from tests.service import conftest as _service

app, auth_headers, client, enqueued, env = (
    _service.app,
    _service.auth_headers,
    _service.client,
    _service.enqueued,
    _service.env,
)
settings, session, make_job, make_checkpoint_row = (
    _service.settings,
    _service.session,
    _service.make_job,
    _service.make_checkpoint_row,
)
trained_checkpoint = _service.trained_checkpoint
pretrained, finish_jobs = _experiments.pretrained, _experiments.finish_jobs
TOKEN = _service.TOKEN


@pytest.fixture
def ended_experiment(client, pretrained, finish_jobs) -> dict[str, Any]:
    """An experiment reusing a pre-train: linear and full, two learning rates, controls; ended."""
    body = _experiments.body(
        pretrained_job=pretrained.id, strategies=["linear", "full"], sweep={"lr": [0.01, 0.001]}
    )
    experiment = _experiments.create(client, **body)
    finish_jobs(experiment["id"], lambda job: (None, 0.3) if job.spec.get("random_init") else (0.9, 0.8))
    return client.get(f"/experiments/{experiment['id']}").json()
