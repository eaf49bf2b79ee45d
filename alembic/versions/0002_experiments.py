"""experiments and artifacts; jobs.experiment_id and jobs.role

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Mirrors core/models.py; tests/service/test_migrations.py checks that nothing differs.
experiments.pretrain_job_id -> jobs and jobs.experiment_id -> experiments form a cycle, so the second
key is added after both tables exist (SQLite: by copying jobs, which batch mode does for us).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("dataset", sa.String(32), nullable=False),
        sa.Column("architecture", sa.String(32), nullable=False),
        sa.Column("pretrain_job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
    )
    op.create_index("ix_experiments_status", "experiments", ["status"])
    op.create_index("ix_experiments_pretrain_job_id", "experiments", ["pretrain_job_id"])
    op.create_index("ix_experiments_created_at", "experiments", ["created_at"])

    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("experiment_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("role", sa.String(16), nullable=True))
        batch.create_foreign_key("fk_jobs_experiment_id", "experiments", ["experiment_id"], ["id"])
        batch.create_index("ix_jobs_experiment_id", ["experiment_id"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True),
        sa.Column(
            "experiment_id",
            sa.String(32),
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),
        sa.UniqueConstraint("experiment_id", "name", name="uq_artifacts_experiment_name"),
    )
    op.create_index("ix_artifacts_job_id", "artifacts", ["job_id"])
    op.create_index("ix_artifacts_experiment_id", "artifacts", ["experiment_id"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_experiment_id", table_name="artifacts")
    op.drop_index("ix_artifacts_job_id", table_name="artifacts")
    op.drop_table("artifacts")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_experiment_id")
        batch.drop_constraint("fk_jobs_experiment_id", type_="foreignkey")
        batch.drop_column("role")
        batch.drop_column("experiment_id")
    op.drop_index("ix_experiments_created_at", table_name="experiments")
    op.drop_index("ix_experiments_pretrain_job_id", table_name="experiments")
    op.drop_index("ix_experiments_status", table_name="experiments")
    op.drop_table("experiments")
