"""The cleaner finds what is due by index: finished rows with and without a retention of
their own in two partial indexes.

``tasks_finalized_idx`` now holds only finished rows without a ``retention`` of their own,
so the cleaner reads one range of it (``finalized_at < now() - retention_default``);
``tasks_retention_idx`` holds those with one, by ``(retention, finalized_at)``, so it reads
one range per distinct retention. Before, a round that found nothing due walked every
finished row. Building the indexes locks the tasks table against writes while they build.

Revision ID: pgtasq_0003
Revises: pgtasq_0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pgtasq._migrate import migration_schema

revision: str = "pgtasq_0003"
down_revision: str | None = "pgtasq_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema = migration_schema()
    op.drop_index("tasks_finalized_idx", table_name="tasks", schema=schema)
    op.create_index(
        "tasks_finalized_idx",
        "tasks",
        ["finalized_at"],
        schema=schema,
        postgresql_where=sa.text("finalized_at IS NOT NULL AND retention IS NULL"),
    )
    op.create_index(
        "tasks_retention_idx",
        "tasks",
        ["retention", "finalized_at"],
        schema=schema,
        postgresql_where=sa.text("finalized_at IS NOT NULL AND retention IS NOT NULL"),
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_index("tasks_retention_idx", table_name="tasks", schema=schema)
    op.drop_index("tasks_finalized_idx", table_name="tasks", schema=schema)
    op.create_index(
        "tasks_finalized_idx",
        "tasks",
        ["finalized_at"],
        schema=schema,
        postgresql_where=sa.text("finalized_at IS NOT NULL"),
    )
