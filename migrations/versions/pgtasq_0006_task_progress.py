"""Tasks report progress: ``tasks.progress``, what the running attempt last reported.

A JSON object (``value``, ``note``, ``at``) written by the worker's throttled, fenced
progress writer (`TaskContext.set_progress`) and reset by the claim; NULL until the attempt
reports. A nullable column without a default is added without rewriting the table, so this
migration is quick on a large one.

Revision ID: pgtasq_0006
Revises: pgtasq_0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from pgtasq._migrate import migration_schema

revision: str = "pgtasq_0006"
# pgtasq_0005 (unique tasks) is written on another branch: re-point this at it on merge.
down_revision: str | None = "pgtasq_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tasks", sa.Column("progress", pg.JSONB, nullable=True), schema=migration_schema()
    )


def downgrade() -> None:
    op.drop_column("tasks", "progress", schema=migration_schema())
