"""Unique tasks: ``tasks.unique_key`` and ``tasks.unique_until``, and their partial index.

A row holds its unique key while it is pending or running, or while ``unique_until`` is set
(the enqueue of the key clears it once it has passed): the partial unique index
``tasks_unique_key_key`` says so, and every enqueue with a key arbitrates on it (ON CONFLICT),
so concurrent producers cannot both insert a key (docs/unique.md). Both columns are nullable
without a default, so adding them does not rewrite the table; the index is built over rows
that all have a NULL key, which is quick (it takes a SHARE lock on the table meanwhile).

Revision ID: pgtasq_0005
Revises: pgtasq_0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pgtasq._migrate import migration_schema

revision: str = "pgtasq_0005"
down_revision: str | None = "pgtasq_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As written here, not imported: a migration keeps meaning what it meant when it was written.
UNIQUE_HELD = (
    "unique_key IS NOT NULL AND (status IN ('pending', 'running') OR unique_until IS NOT NULL)"
)


def upgrade() -> None:
    schema = migration_schema()
    op.add_column("tasks", sa.Column("unique_key", sa.Text, nullable=True), schema=schema)
    op.add_column(
        "tasks",
        sa.Column("unique_until", sa.DateTime(timezone=True), nullable=True),
        schema=schema,
    )
    op.create_index(
        "tasks_unique_key_key",
        "tasks",
        ["unique_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text(UNIQUE_HELD),
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_index("tasks_unique_key_key", table_name="tasks", schema=schema)
    op.drop_column("tasks", "unique_until", schema=schema)
    op.drop_column("tasks", "unique_key", schema=schema)
