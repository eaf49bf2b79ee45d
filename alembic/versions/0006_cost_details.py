"""costs.details: a job's wall seconds per phase and how its numerics were chosen (issue 15), which
lived in a cost.json file beside its artifacts while the table had no column for them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Mirrors core/models.py; tests/service/test_migrations.py checks that nothing differs. Jobs that
finished before this revision keep their file; GET /jobs/{id}/metrics reads it when the column is
empty (core/cost_record.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("costs") as batch:
        batch.add_column(sa.Column("details", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("costs") as batch:
        batch.drop_column("details")
