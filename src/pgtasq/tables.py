"""The tables, described once with SQLAlchemy Core.

Alembic's migrations create exactly this (a test runs autogenerate against it and expects
no difference), and SQLAlchemy users can query the tables with it. The hot-path statements
themselves live in `pgtasq._sql` as plain SQL.

Every object lives in one PostgreSQL schema (default ``pgtasq``); `metadata(schema)` builds
the same tables for another schema, so two schemas in one database never see each other.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pgtasq._limits import NAME_MAX_LENGTH, PRIORITY_MAX, PRIORITY_MIN, schema_problem
from pgtasq.errors import ConfigurationError
from pgtasq.models import TaskStatus

if TYPE_CHECKING:
    import sqlalchemy as sa

SCHEMA_DEFAULT = "pgtasq"
TASKS_TABLE = "tasks"
QUEUES_TABLE = "queues"
WORKERS_TABLE = "workers"
SCHEDULES_TABLE = "schedules"
DAILY_STATS_TABLE = "queue_daily_stats"
STATUS_ENUM = "task_status"
# The sequence behind tasks.id (PostgreSQL names an identity's sequence <table>_<column>_seq).
# The COPY enqueue draws its ids from it before sending the rows.
TASKS_ID_SEQUENCE = "tasks_id_seq"
ALEMBIC_VERSION_TABLE = "alembic_version"
# The tasks table's storage parameters (migration pgtasq_0002): a queue table is vacuumed
# after 1 % of it changed, not the server's 20 % (docs/workers.md explains the numbers).
# Alembic's autogenerate does not compare them; a test compares them with the database.
TASKS_STORAGE_PARAMETERS = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_insert_scale_factor": "0.01",
    "autovacuum_analyze_scale_factor": "0.02",
}
# The rows that hold their unique key (docs/unique.md): the predicate of the partial unique
# index tasks_unique_key_key, which every statement reading a key's holder repeats so that
# PostgreSQL uses that index (migration pgtasq_0005).
UNIQUE_ACTIVE = "status IN ('pending', 'running')"
# Rows without a key stay out of it: else every pending task (nearly all have none) would
# cost an index entry at its insert and at each change of status.
UNIQUE_HELD = f"unique_key IS NOT NULL AND ({UNIQUE_ACTIVE} OR unique_until IS NOT NULL)"


def check_schema_name(schema: str) -> str:
    """Schema names are plain lower-case identifiers that are not SQL keywords, so they never
    need quoting in SQL, and not PostgreSQL's own schemas (``pg_*``, information_schema)."""
    problem = schema_problem(schema)
    if problem is not None:
        raise ConfigurationError(f"schema name {problem}, got {schema!r}")
    return schema


def _final_states_sql() -> str:
    return ", ".join(f"'{s.value}'" for s in TaskStatus if s.is_final)


@functools.lru_cache(maxsize=64)
def metadata(schema: str = SCHEMA_DEFAULT) -> sa.MetaData:
    """The tables of one pgtasq schema."""
    # Imported here, not at the top: workers and producers never need SQLAlchemy, and
    # importing it costs about 150 ms and some 20k objects in every process.
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql as pg

    check_schema_name(schema)
    md = sa.MetaData(schema=schema)
    status = pg.ENUM(*[s.value for s in TaskStatus], name=STATUS_ENUM, schema=schema, metadata=md)
    now = sa.text("now()")
    finals = _final_states_sql()

    sa.Table(
        TASKS_TABLE,
        md,
        # BY DEFAULT, not ALWAYS: the COPY enqueue sends ids it drew from the sequence, so it
        # knows them without reading the rows back (COPY has no RETURNING).
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("payload", pg.JSONB, nullable=False, server_default=sa.text("'null'::jsonb")),
        sa.Column("priority", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("status", status, nullable=False, server_default=TaskStatus.PENDING.value),
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
        sa.Column("headers", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("unique_key", sa.Text, nullable=True),
        sa.Column("unique_until", sa.DateTime(timezone=True), nullable=True),
        # No CHECK on its shape: every CHECK costs every INSERT (below), and only the
        # worker's fenced progress write sets it, from a value validated in Python.
        sa.Column("progress", pg.JSONB, nullable=True),
        # PostgreSQL rebuilds every CHECK expression at the start of every INSERT (about 10 %
        # of a one-row enqueue's server work, callgrind), so they are written small: BETWEEN
        # would repeat char_length(); "<> ''" is the cheap half of the length check.
        sa.CheckConstraint(
            f"queue <> '' AND char_length(queue) <= {NAME_MAX_LENGTH}", name="tasks_queue_length"
        ),
        sa.CheckConstraint(
            f"type <> '' AND char_length(type) <= {NAME_MAX_LENGTH}", name="tasks_type_length"
        ),
        sa.CheckConstraint(
            f"priority BETWEEN {PRIORITY_MIN} AND {PRIORITY_MAX}", name="tasks_priority_range"
        ),
        sa.CheckConstraint("max_attempts >= 1", name="tasks_max_attempts_positive"),
        sa.CheckConstraint("attempts >= 0", name="tasks_attempts_non_negative"),
        sa.CheckConstraint("timeout > interval '0'", name="tasks_timeout_positive"),
        sa.CheckConstraint("retention > interval '0'", name="tasks_retention_positive"),
        sa.CheckConstraint(
            f"(finalized_at IS NOT NULL) = (status IN ({finals}))", name="tasks_finalized_iff_final"
        ),
        sa.CheckConstraint(
            "(status = 'running') = (locked_until IS NOT NULL)", name="tasks_lease_iff_running"
        ),
        # Idempotency keys: unique, and partial, so the many keyless rows never touch it.
        # ON CONFLICT must name the predicate to use it as the arbiter (see _sql_tasks.task_insert).
        sa.Index(
            "tasks_idempotency_key_key",
            "idempotency_key",
            unique=True,
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        ),
        # Unique keys (docs/unique.md): one row holds a key while it is pending or running, or
        # until its unique_until (cleared by the next enqueue of the key once it has passed).
        # ON CONFLICT DO NOTHING arbitrates it with the idempotency keys' index.
        sa.Index(
            "tasks_unique_key_key",
            "unique_key",
            unique=True,
            postgresql_where=sa.text(UNIQUE_HELD),
        ),
        # The claim: ready rows of a queue, in claim order. Partial, so finished rows cost nothing.
        sa.Index(
            "tasks_claim_idx",
            "queue",
            sa.text("priority DESC"),
            "run_at",
            "id",
            postgresql_where=sa.text("status = 'pending'"),
        ),
        # Rescue: running rows whose lease ran out. Only running rows are in it.
        sa.Index("tasks_lease_idx", "locked_until", postgresql_where=sa.text("status = 'running'")),
        # Cleanup: finished rows by age, those without a retention of their own (one range
        # past retention_default) and those with one (one range per distinct retention).
        # Not touched by enqueue (finalized_at is NULL then).
        sa.Index(
            "tasks_finalized_idx",
            "finalized_at",
            postgresql_where=sa.text("finalized_at IS NOT NULL AND retention IS NULL"),
        ),
        sa.Index(
            "tasks_retention_idx",
            "retention",
            "finalized_at",
            postgresql_where=sa.text("finalized_at IS NOT NULL AND retention IS NOT NULL"),
        ),
        info={"storage_parameters": TASKS_STORAGE_PARAMETERS},
    )

    sa.Table(
        QUEUES_TABLE,
        md,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.CheckConstraint(
            f"char_length(name) BETWEEN 1 AND {NAME_MAX_LENGTH}", name="queues_name_length"
        ),
    )

    sa.Table(
        WORKERS_TABLE,
        md,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.CheckConstraint("concurrency >= 1", name="workers_concurrency_positive"),
    )

    sa.Table(
        SCHEDULES_TABLE,
        md,
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
    )

    sa.Table(
        DAILY_STATS_TABLE,
        md,
        sa.Column("queue", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("completed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("retried", sa.BigInteger, nullable=False, server_default="0"),
    )
    return md


def tasks_table(schema: str = SCHEMA_DEFAULT) -> sa.Table:
    """The tasks table of a schema, for SQLAlchemy queries of your own."""
    return metadata(schema).tables[f"{schema}.{TASKS_TABLE}"]
