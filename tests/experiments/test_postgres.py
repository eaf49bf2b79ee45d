"""The experiment's life on PostgreSQL (the distributed setting), where the foreign keys between
experiments and jobs are checked at once: create with a pre-train, fan out, finish, report, cancel."""

from __future__ import annotations

from fastapi.testclient import TestClient

from core import migrate
from core.db import get_sessionmaker
from core.experiments.orchestrate import on_job_finished
from core.models import Checkpoint, Job, JobStatus
from service import deps
from service.main import create_app
from tests.experiments.conftest import body, store_results
from tests.service.test_migrations import postgres_url  # noqa: F401 - a fixture, used by name

PRETRAIN = {
    "dataset": "stl10",
    "model": "simple_cnn",
    "hyperparameters": {"epochs": 1},
    "data": {"image_size": 32},
}


def test_an_experiment_runs_its_course_on_postgresql(env, postgres_url, monkeypatch):  # noqa: F811
    env(DATABASE_URL=postgres_url)
    migrate.upgrade()
    sent: list[str] = []
    app = create_app()
    app.dependency_overrides[deps.get_enqueue] = lambda: sent.append

    with TestClient(app) as client, get_sessionmaker()() as session:
        experiment = client.post("/experiments", json=body(pretrain=PRETRAIN, strategies=["linear", "full"]))
        assert experiment.status_code == 202, experiment.text
        experiment_id, pretrain_id = experiment.json()["id"], experiment.json()["pretrain_job"]

        pretrain = session.get(Job, pretrain_id)
        pretrain.status = JobStatus.succeeded
        session.add(Checkpoint(job_id=pretrain_id, architecture="simple_cnn", dataset="stl10", class_names=[],
                               input_spec={}, path="x", sha256="0" * 64, size_bytes=1))  # fmt: skip
        session.commit()
        on_job_finished(session, pretrain_id, sent.append)
        jobs = session.query(Job).filter(Job.experiment_id == experiment_id, Job.role != "pretrain").all()
        assert len(jobs) == 4 and sent == [pretrain_id] + [j.id for j in jobs]

        for job in jobs:
            store_results(session, job, val=0.9 if job.role == "finetune" else 0.5, test=0.8)
            on_job_finished(session, job.id, sent.append)

        shown = client.get(f"/experiments/{experiment_id}").json()
        assert shown["status"] == "succeeded" and len(shown["comparison"]["rows"]) == 4
        assert client.get(f"/experiments/{experiment_id}/report").status_code == 200
        assert client.get(f"/experiments/{experiment_id}/artifacts").json()["count"] == 3

        other = client.post(
            "/experiments", json=body(pretrained_job=pretrain_id, strategies=["linear"])
        ).json()
        cancelled = client.post(f"/experiments/{other['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert {j["status"] for j in cancelled["jobs"]} == {"cancelled"}
