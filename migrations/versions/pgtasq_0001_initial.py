"""Initial schema: tasks with its status enum, queues, workers, schedules, daily stats.

Revision ID: pgtasq_0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from pgtasq._migrate import migration_schema

revision: str = "pgtasq_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("pgtasq",)
depends_on: str | Sequence[str] | None = None

STATUSES = ("pending", "running", "completed", "failed", "cancelled")


def upgrade() -> None:
    schema = migration_schema()
    now = sa.text("now()")
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    status = pg.ENUM(*STATUSES, name="task_status", schema=schema, create_type=False)
    values = ", ".join(f"'{v}'" for v in STATUSES)
    op.execute(f"CREATE TYPE {schema}.task_status AS ENUM ({values})")

    op.create_table(
        "tasks",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("payload", pg.JSONB, nullable=False, server_default=sa.text("'null'::jsonb")),
        sa.Column("priority", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("status", status, nullable=False, server_default="pending"),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("timeout", sa.Interval, nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.Text, nullable=True),
        sa.Column("errors", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("result", pg.JSONB, nullable=True),
        sa.Column("locked_by", sa.Text, nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retention", sa.Interval, nullable=True),
        sa.CheckConstraint("queue <> '' AND char_length(queue) <= 128", name="tasks_queue_length"),
        sa.CheckConstraint("type <> '' AND char_length(type) <= 128", name="tasks_type_length"),
        sa.CheckConstraint("priority BETWEEN -100 AND 100", name="tasks_priority_range"),
        sa.CheckConstraint("max_attempts >= 1", name="tasks_max_attempts_positive"),
        sa.CheckConstraint("attempts >= 0", name="tasks_attempts_non_negative"),
        sa.CheckConstraint("timeout > interval '0'", name="tasks_timeout_positive"),
        sa.CheckConstraint("retention > interval '0'", name="tasks_retention_positive"),
        sa.CheckConstraint(
            "(finalized_at IS NOT NULL) = (status IN ('completed', 'failed', 'cancelled'))",
            name="tasks_finalized_iff_final",
        ),
        sa.CheckConstraint(
            "(status = 'running') = (locked_until IS NOT NULL)", name="tasks_lease_iff_running"
        ),
        schema=schema,
    )
    op.create_index(
        "tasks_idempotency_key_key",
        "tasks",
        ["idempotency_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "tasks_claim_idx",
        "tasks",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        schema=schema,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "tasks_lease_idx",
        "tasks",
        ["locked_until"],
        schema=schema,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "tasks_finalized_idx",
        "tasks",
        ["finalized_at"],
        schema=schema,
        postgresql_where=sa.text("finalized_at IS NOT NULL"),
    )

    op.create_table(
        "queues",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.CheckConstraint("char_length(name) BETWEEN 1 AND 128", name="queues_name_length"),
        schema=schema,
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.CheckConstraint("concurrency >= 1", name="workers_concurrency_positive"),
        schema=schema,
    )
    op.create_table(
        "schedules",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
        sa.Column("task_type", sa.Text, nullable=False),
        sa.Column("payload", pg.JSONB, nullable=False, server_default=sa.text("'null'::jsonb")),
        sa.Column("options", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.CheckConstraint("char_length(id) BETWEEN 1 AND 255", name="schedules_id_length"),
        schema=schema,
    )
    op.create_table(
        "queue_daily_stats",
        sa.Column("queue", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("completed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("retried", sa.BigInteger, nullable=False, server_default="0"),
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    for table in ("queue_daily_stats", "schedules", "workers", "queues", "tasks"):
        op.drop_table(table, schema=schema)
    op.execute(f"DROP TYPE {schema}.task_status")
