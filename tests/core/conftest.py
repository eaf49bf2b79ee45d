"""A fresh SQLite database (migrated by Alembic) and state folder per test, and a job factory.
tests/worker uses the same fixtures (its conftest imports them)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core import db
from core.migrate import upgrade
from core.models import Job, JobStatus, utcnow
from core.settings import Settings, get_settings

_ENV_PREFIX = "TRANSFERLAB_"


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test copies it (an Alembic upgrade per test costs 0.3 s)."""
    path = tmp_path_factory.mktemp("template") / "transferlab.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_template: Path) -> Iterator[Settings]:
    """Settings for a state folder in tmp: SQLite database and embedded broker, fast heartbeats."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(migrated_template, home / "transferlab.sqlite")
    monkeypatch.setenv("TRANSFERLAB_HOME", str(home))
    monkeypatch.setenv("TRANSFERLAB_DEVICE", "cpu")
    monkeypatch.setenv("TRANSFERLAB_HEARTBEAT_SECONDS", "0.2")
    monkeypatch.setenv("TRANSFERLAB_RESUME_EVERY_SECONDS", "0")  # every epoch: resume is tested
    monkeypatch.setenv("TRANSFERLAB_STALE_AFTER_SECONDS", "2")
    monkeypatch.setenv("TRANSFERLAB_MAX_ATTEMPTS", "3")
    db.reset_caches()
    yield get_settings()
    db.get_engine().dispose()
    db.reset_caches()


@pytest.fixture
def sessions(settings: Settings) -> sessionmaker[Session]:
    return db.get_sessionmaker()


@pytest.fixture
def make_job(sessions: sessionmaker[Session]) -> Callable[..., str]:
    """Insert a job row. `heartbeat_age` (seconds) back-dates the last renewal of a running job; its
    lease then ends one stale window after it, as its worker would have written."""

    def make(
        status: str = JobStatus.queued,
        *,
        heartbeat_age: float | None = None,
        spec: dict | None = None,
        **values,
    ) -> str:
        spec = spec or {"kind": "pretrain", "dataset": "stl10", "model": "simple_cnn"}
        job = Job(
            kind=spec["kind"],
            status=status,
            spec=spec,
            dataset=spec.get("dataset", "stl10"),
            architecture=spec.get("model", "simple_cnn"),
            strategy=spec.get("strategy"),
            **values,
        )
        if heartbeat_age is not None:
            job.heartbeat_at = utcnow() - timedelta(seconds=heartbeat_age)
            job.lease_expires_at = job.heartbeat_at + timedelta(seconds=get_settings().stale_after_seconds)
        with sessions() as session:
            session.add(job)
            session.commit()
            return job.id

    return make


def read_job(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


@pytest.fixture
def job_reader(sessions: sessionmaker[Session]) -> Callable[[str], Job]:
    return lambda job_id: read_job(sessions, job_id)


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record what would be sent to the broker instead of sending it."""
    sent: list[str] = []
    monkeypatch.setattr("core.queue.enqueue_run_job", sent.append)
    monkeypatch.setattr("worker.tasks.enqueue_run_job", sent.append, raising=False)
    return sent
