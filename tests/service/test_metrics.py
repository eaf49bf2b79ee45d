"""GET /jobs/{id}/metrics: epochs so far while running, then evaluation and cost."""

from __future__ import annotations

import json

from core.models import Cost, EpochMetric, Evaluation
from tests.rows import cost_row

EPOCH_KEYS = {"epoch", "phase", "loss", "accuracy", "lr", "seconds", "images_per_second"}


def add_epoch(session, job, epoch, phase):
    session.add(
        EpochMetric(
            job_id=job.id,
            epoch=epoch,
            phase=phase,
            loss=1.0 / epoch,
            accuracy=0.5,
            lr=1e-3,
            seconds=2.0,
            images_per_second=500.0,
        )
    )
    session.commit()


def test_running_job_shows_the_epochs_so_far(client, make_job, session):
    job = make_job(status="running")
    for epoch, phase in [(2, "train"), (1, "val"), (1, "train")]:
        add_epoch(session, job, epoch, phase)

    body = client.get(f"/jobs/{job.id}/metrics").json()

    assert set(body) == {"epochs", "evaluation", "cost"}
    assert [(e["epoch"], e["phase"]) for e in body["epochs"]] == [(1, "train"), (1, "val"), (2, "train")]
    assert all(set(e) == EPOCH_KEYS for e in body["epochs"])
    assert body["evaluation"] is None and body["cost"] is None


def test_finished_job_has_evaluation_and_cost_in_the_documented_shape(client, make_job, session):
    job = make_job(status="succeeded")
    add_epoch(session, job, 1, "train")
    per_class = [
        {"label": "0", "precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2},
        {"label": "1", "precision": 0.5, "recall": 1.0, "f1": 0.667, "support": 1},
    ]
    session.add(
        Evaluation(
            job_id=job.id,
            accuracy=0.667,
            macro_f1=0.667,
            weighted_f1=0.667,
            per_class=per_class,
            confusion_matrix=[[1, 1], [0, 1]],
        )
    )
    session.add(
        Cost(
            job_id=job.id,
            train_seconds=12.5,
            eval_seconds=0.5,
            trainable_parameters=1290,
            total_parameters=400_000,
            parameter_updates=1290 * 30,
            peak_memory_bytes=2**30,
            memory_device="cpu",
        )
    )
    session.commit()

    body = client.get(f"/jobs/{job.id}/metrics").json()

    assert body["evaluation"] == {
        "accuracy": 0.667,
        "macro_f1": 0.667,
        "weighted_f1": 0.667,
        "per_class": per_class,
        "confusion_matrix": [[1, 1], [0, 1]],
    }
    assert body["cost"] == {
        "train_seconds": 12.5,
        "eval_seconds": 0.5,
        "trainable_parameters": 1290,
        "total_parameters": 400_000,
        "parameter_updates": 38_700,
        "peak_memory_bytes": 2**30,
        "memory_device": "cpu",
        "phase_seconds": None,  # recorded before the phase split existed
        "numerics": None,
    }


PHASES = {"startup": 0.2, "data": 0.5, "train": 9.0, "validate": 1.0, "evaluate": 1.0, "total": 12.0}
NUMERICS = {"chosen": {"precision": "fp32", "channels_last": True, "threads": None, "compile": False},
            "how": "cached"}  # fmt: skip


def finished_with_cost(make_job, session, details=None):
    job = make_job(status="succeeded")
    session.add(cost_row(job.id, details=details))
    session.commit()
    return job


def test_a_finished_job_shows_its_phase_split_and_numerics(client, make_job, session):
    job = finished_with_cost(make_job, session, {"phase_seconds": PHASES, "numerics": NUMERICS})

    cost = client.get(f"/jobs/{job.id}/metrics").json()["cost"]

    assert cost["phase_seconds"] == PHASES and cost["numerics"] == NUMERICS


def test_a_job_from_before_the_details_column_shows_its_old_cost_file(client, make_job, session, settings):
    job = finished_with_cost(make_job, session)
    old = settings.artifacts_dir / "jobs" / job.id / "cost.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"phase_seconds": PHASES, "numerics": NUMERICS}))

    cost = client.get(f"/jobs/{job.id}/metrics").json()["cost"]

    assert cost["phase_seconds"] == PHASES and cost["numerics"] == NUMERICS
    old.write_text("not json")
    assert client.get(f"/jobs/{job.id}/metrics").json()["cost"]["phase_seconds"] is None


def test_queued_job_has_empty_metrics(client, make_job):
    job = make_job()

    assert client.get(f"/jobs/{job.id}/metrics").json() == {
        "epochs": [],
        "evaluation": None,
        "cost": None,
    }


def test_metrics_of_unknown_job_is_404(client):
    assert client.get("/jobs/nope/metrics").status_code == 404
