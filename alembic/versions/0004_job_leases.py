"""jobs.lease_expires_at, sent_at, send_count: leases instead of each process's own stale clock, and
re-sending queued jobs whose message was lost

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Mirrors core/models.py; tests/service/test_migrations.py checks that nothing differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("send_count", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_jobs_lease_expires_at", ["lease_expires_at"])
    jobs = sa.table(
        "jobs",
        sa.column("status", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.column("sent_at", sa.DateTime(timezone=True)),
        sa.column("send_count", sa.Integer),
    )
    # A queued job was sent once when it was created; a running one's lease is left null, which the
    # claim and the reaper read as expired: the reaper re-queues it unless its worker renews it first.
    op.execute(jobs.update().where(jobs.c.status == "queued").values(sent_at=jobs.c.created_at, send_count=1))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_lease_expires_at")
        batch.drop_column("send_count")
        batch.drop_column("sent_at")
        batch.drop_column("lease_expires_at")
