"""Alembic from Python: the only way the schema is made or changed.

from service import migrate
migrate.upgrade()                          # TRANSFERLAB_DATABASE_URL, default SQLite in HOME
migrate.upgrade("postgresql+psycopg://postgres@127.0.0.1/transferlab")
migrate.current()                          # "0001", or None for an empty database
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

import core
from core.settings import get_settings

# The repo root, home of alembic.ini and alembic/ (we install with `pip install -e .`).
ROOT = Path(core.__file__).resolve().parents[1]


def _url(url: str | None) -> str:
    return url or get_settings().sqlalchemy_url


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["url"] = _url(url)
    config.attributes["configure_logger"] = False  # leave the caller's logging alone
    return config


def _ensure_sqlite_folder(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database to `revision` (default: the newest)."""
    url = _url(url)
    _ensure_sqlite_folder(url)
    command.upgrade(alembic_config(url), revision)


class DataLossRefused(RuntimeError):
    """A downgrade to `base` drops every table; it needs drop_all_data=True."""


def downgrade(url: str | None, revision: str, *, drop_all_data: bool = False) -> None:
    """Step the database back to `revision`. `base` (an empty database: every table and its rows
    dropped) is refused unless `drop_all_data` is True: no default revision, no accident."""
    if revision == "base" and not drop_all_data:
        raise DataLossRefused(
            "downgrading to 'base' drops every table and all its data; name a revision (e.g. 0003), "
            "or pass --drop-all-data if that is what you want"
        )
    command.downgrade(alembic_config(url), revision)


def current(url: str | None = None) -> str | None:
    """The database's revision, or None when it has never been migrated."""
    engine = create_engine(_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
