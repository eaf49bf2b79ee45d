"""The core fixtures (a migrated SQLite database per test, a job factory, a recorded enqueue)."""

from tests.core.conftest import (
    enqueued,
    job_reader,
    make_job,
    migrated_template,
    read_job,
    sessions,
    settings,
)

__all__ = ["enqueued", "job_reader", "make_job", "migrated_template", "read_job", "sessions", "settings"]
