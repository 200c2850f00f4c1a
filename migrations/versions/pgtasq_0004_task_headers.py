"""Tasks carry headers: ``tasks.headers``, a JSON object of strings (default ``{}``).

The trace context of the enqueue (OpenTelemetry's ``traceparent``/``tracestate``) travels
in it from the producer to the worker, and it is open to users for metadata of their own
(`Task.headers`). A column with a constant default is added without rewriting the table
(PostgreSQL 11+), so this migration is quick on a large one.

Revision ID: pgtasq_0004
Revises: pgtasq_0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from pgtasq._migrate import migration_schema

revision: str = "pgtasq_0004"
down_revision: str | None = "pgtasq_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tasks",
        sa.Column("headers", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        schema=migration_schema(),
    )


def downgrade() -> None:
    op.drop_column("tasks", "headers", schema=migration_schema())
