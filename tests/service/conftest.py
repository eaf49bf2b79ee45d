"""Fixtures: a fresh migrated SQLite database per test under tmp_path, a client whose enqueue and
broker check are recorded or stubbed, helpers that insert rows directly, and a real tiny checkpoint."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import migrate
from core.db import get_engine, get_sessionmaker, reset_caches
from core.models import Checkpoint, Job, JobStatus
from core.settings import Settings, get_settings
from engine.data.cache import CACHE_FOLDER
from service import deps
from service.inference import get_predictor_cache
from service.main import create_app

TOKEN = "s3cret-token"


def _reset() -> None:
    try:
        get_engine().dispose()
    except Exception:
        pass
    reset_caches()
    get_predictor_cache.cache_clear()


def own_data_root(folder: Path, shared: Path) -> Path:
    """A data root of this test's own whose entries link to the session's tiny data (and its decoded
    cache): what a test writes there (weights, folder data sets, uploads) stays with the test."""
    (shared / CACHE_FOLDER).mkdir(exist_ok=True)  # linked, so every test reuses one decode
    folder.mkdir(parents=True)
    for entry in shared.iterdir():
        if entry.name not in ("weights", "folders"):
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_data_root: Path) -> Callable[..., Settings]:
    """Point TRANSFERLAB_HOME at tmp_path and the data root at the tiny data root (jobs are refused
    when their data is absent; no other TRANSFERLAB_ variable leaks in); call
    env(MAX_UPLOAD_BYTES=2048, ...) to change settings within a test."""
    for name in list(os.environ):
        if name.startswith("TRANSFERLAB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # Settings reads ./.env: make sure there is none
    monkeypatch.setenv("TRANSFERLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRANSFERLAB_DATA_DIR", str(own_data_root(tmp_path / "tiny-data", tiny_data_root)))

    def set_env(**values: Any) -> Settings:
        for key, value in values.items():
            if value is None:
                monkeypatch.delenv(f"TRANSFERLAB_{key}", raising=False)
            else:
                monkeypatch.setenv(f"TRANSFERLAB_{key}", str(value))
        _reset()
        return get_settings()

    set_env()
    yield set_env
    _reset()


@pytest.fixture
def settings(env: Callable[..., Settings]) -> Settings:
    migrate.upgrade()
    return get_settings()


@pytest.fixture
def enqueued() -> list[str]:
    return []


@pytest.fixture
def app(settings: Settings, enqueued: list[str]) -> FastAPI:
    app = create_app()
    app.dependency_overrides[deps.get_enqueue] = lambda: enqueued.append
    app.dependency_overrides[deps.get_broker_check] = lambda: lambda: None
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    with get_sessionmaker()() as db:
        yield db


@pytest.fixture
def count_rows(settings: Settings) -> Callable[[type], int]:
    def count(model: type) -> int:
        with get_sessionmaker()() as db:
            return db.scalar(select(func.count()).select_from(model)) or 0

    return count


_clock = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def make_job(session: Session) -> Callable[..., Job]:
    """Insert a job row directly; each one is a second newer than the previous."""
    made = 0

    def make(
        status: str = JobStatus.queued,
        kind: str = "pretrain",
        architecture: str = "simple_cnn",
        dataset: str = "stl10",
        **fields: Any,
    ) -> Job:
        nonlocal made
        made += 1
        spec = {"kind": kind, "dataset": dataset}
        if kind == "pretrain":
            spec["model"] = architecture
        job = Job(
            kind=kind,
            status=status,
            spec=spec,
            dataset=dataset,
            architecture=architecture,
            strategy=fields.pop("strategy", None if kind == "pretrain" else "linear"),
            created_at=_clock + timedelta(seconds=made),
            **fields,
        )
        session.add(job)
        session.commit()
        return job

    return make


@pytest.fixture
def make_checkpoint_row(session: Session) -> Callable[..., Checkpoint]:
    """A checkpoint row without files: enough for listing and for refusals before loading."""

    def make(job: Job, **fields: Any) -> Checkpoint:
        values: dict[str, Any] = {
            "architecture": job.architecture,
            "dataset": job.dataset,
            "strategy": job.strategy,
            "class_names": [str(i) for i in range(10)],
            "input_spec": {"image_size": 32, "channels": 1, "mean": [0.1307], "std": [0.3081]},
            "path": "missing",
            "sha256": "0" * 64,
            "size_bytes": 1,
        }
        values.update(fields)
        row = Checkpoint(job_id=job.id, **values)
        session.add(row)
        session.commit()
        return row

    return make


@pytest.fixture
def trained_checkpoint(settings: Settings, make_job: Callable[..., Job], session: Session) -> Checkpoint:
    """A real (untrained) simple_cnn checkpoint on disk for a succeeded MNIST-style job:
    1 channel, 32x32 input, classes "0".."9"."""
    from engine.checkpoint import save_checkpoint
    from engine.models import build_model
    from engine.preprocess import InputSpec

    job = make_job(status=JobStatus.succeeded, dataset="mnist")
    spec = InputSpec(image_size=32, channels=1, mean=(0.1307,), std=(0.3081,))
    meta = {
        "architecture": "simple_cnn",
        "num_classes": 10,
        "class_names": [str(i) for i in range(10)],
        "input": spec.to_dict(),
    }
    folder = f"ckpt-{job.id}"
    info = save_checkpoint(build_model("simple_cnn", 10), meta, settings.checkpoints_dir / folder)
    row = Checkpoint(
        job_id=job.id,
        architecture="simple_cnn",
        dataset="mnist",
        strategy=None,
        class_names=meta["class_names"],
        input_spec=spec.to_dict(),
        path=folder,
        sha256=info.sha256,
        size_bytes=info.weights_path.stat().st_size,
    )
    session.add(row)
    session.commit()
    return row


@pytest.fixture
def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def data_root(env, tmp_path: Path) -> Path:
    """An empty data root of this test's own (uploads write to it)."""
    from engine.datasets import clear_memory_cache

    root = tmp_path / "data"
    root.mkdir()
    env(DATA_DIR=root)
    clear_memory_cache()
    return root
