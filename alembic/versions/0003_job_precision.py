"""jobs.precision: the arithmetic a job trained in (bf16 or fp32), as its spec's precision resolved

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Mirrors core/models.py; tests/service/test_migrations.py checks that nothing differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("precision", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("precision")
