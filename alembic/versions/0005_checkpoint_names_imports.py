"""checkpoints.name, tags, origin and a nullable job_id (imported checkpoints); jobs.source_checkpoint_id
(a fine-tune from a checkpoint named by id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Mirrors core/models.py; tests/service/test_migrations.py checks that nothing differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.alter_column("job_id", existing_type=sa.String(32), nullable=True)
        batch.add_column(sa.Column("name", sa.String(100), nullable=True))
        # Every existing row was trained here and has no tags yet.
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("origin", sa.String(16), nullable=False, server_default="trained"))
        batch.create_index("ix_checkpoints_name", ["name"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("source_checkpoint_id", sa.String(32), nullable=True))
        batch.create_index("ix_jobs_source_checkpoint_id", ["source_checkpoint_id"])
        batch.create_foreign_key(
            "fk_jobs_source_checkpoint_id",
            "checkpoints",
            ["source_checkpoint_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("fk_jobs_source_checkpoint_id", type_="foreignkey")
        batch.drop_index("ix_jobs_source_checkpoint_id")
        batch.drop_column("source_checkpoint_id")
    # 0004 has no place for a checkpoint without a job: imported rows go (their folders stay on disk).
    checkpoints = sa.table("checkpoints", sa.column("job_id", sa.String))
    op.execute(checkpoints.delete().where(checkpoints.c.job_id.is_(None)))
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_index("ix_checkpoints_name")
        batch.drop_column("origin")
        batch.drop_column("tags")
        batch.drop_column("name")
        batch.alter_column("job_id", existing_type=sa.String(32), nullable=False)
