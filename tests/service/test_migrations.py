"""Alembic is the only schema path: it upgrades, downgrades and upgrades again on SQLite and
PostgreSQL, and leaves exactly the schema service/models.py describes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, pool

from core import migrate
from core.models import Base
from service import deps
from service.main import create_app

TABLES = {"jobs", "epoch_metrics", "evaluations", "costs", "checkpoints", "experiments", "artifacts"}
HEAD = "0006"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def schema_differences(url: str) -> list:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def round_trip(url: str) -> None:
    assert migrate.current(url) is None
    migrate.upgrade(url)
    assert migrate.current(url) == HEAD
    assert tables(url) == TABLES
    migrate.downgrade(url, "base", drop_all_data=True)
    assert migrate.current(url) is None
    assert tables(url) == set()
    migrate.upgrade(url)
    assert tables(url) == TABLES
    assert schema_differences(url) == []


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL, dropped afterwards."""
    name = f"tl_mig_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_sqlite_upgrades_downgrades_and_matches_the_models(tmp_path):
    round_trip(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_postgresql_upgrades_downgrades_and_matches_the_models(postgres_url):
    round_trip(postgres_url)


def test_upgrade_defaults_to_the_settings_database(env, tmp_path):
    settings = env()

    migrate.upgrade()

    assert migrate.current() == HEAD
    assert tables(settings.sqlalchemy_url) == TABLES


def test_the_api_works_on_postgresql(env, postgres_url):
    env(DATABASE_URL=postgres_url)
    migrate.upgrade()
    app = create_app()
    queued: list[str] = []
    app.dependency_overrides[deps.get_enqueue] = lambda: queued.append

    with TestClient(app) as client:
        created = client.post("/jobs", json={"kind": "pretrain", "model": "simple_cnn"})
        assert created.status_code == 202
        job_id = created.json()["id"]
        listed = client.get("/jobs", params={"status": "queued"}).json()
        assert listed["count"] == 1 and listed["data"][0]["id"] == job_id
        assert listed["data"][0]["created_at"].endswith(("Z", "+00:00"))
        assert client.get(f"/jobs/{job_id}/metrics").json()["epochs"] == []
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    assert queued == [job_id]


def test_a_downgrade_to_base_is_refused_without_drop_all_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate.upgrade(url)
    with pytest.raises(migrate.DataLossRefused, match="drop-all-data"):
        migrate.downgrade(url, "base")
    assert migrate.current(url) == HEAD


def test_a_downgrade_to_a_named_revision_keeps_the_older_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate.upgrade(url)
    migrate.downgrade(url, "0003")
    assert migrate.current(url) == "0003"


def test_0005_downgrades_keeping_trained_checkpoints_and_dropping_imported_ones(tmp_path):
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate.upgrade(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    row = (
        "INSERT INTO checkpoints (id, job_id, architecture, dataset, class_names, input_spec, path, sha256, "
        "size_bytes, created_at, tags, origin, name) VALUES (:id, :job, 'simple_cnn', 'mnist', '[]', '{}', "
        "'p', '0', 1, '2026-01-01', '[]', :origin, 'n')"
    )
    with engine.begin() as db:
        db.execute(
            text(
                "INSERT INTO jobs (id, kind, status, spec, dataset, architecture, progress, current_epoch, "
                "attempts, cancel_requested, created_at, send_count) VALUES ('j', 'pretrain', 'succeeded', "
                "'{}', 'mnist', 'simple_cnn', 1, 1, 1, 0, '2026-01-01', 0)"
            )
        )
        db.execute(text(row), {"id": "trained", "job": "j", "origin": "trained"})
        db.execute(text(row), {"id": "imported", "job": None, "origin": "imported"})

    migrate.downgrade(url, "0004")

    assert migrate.current(url) == "0004"
    with engine.connect() as db:
        assert db.execute(text("SELECT id FROM checkpoints")).scalars().all() == ["trained"]
    columns = {c["name"] for c in inspect(engine).get_columns("checkpoints")}
    assert not {"name", "tags", "origin"} & columns
    engine.dispose()
    migrate.upgrade(url)
    assert migrate.current(url) == HEAD
