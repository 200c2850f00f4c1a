"""Every SQL statement pgtasq runs, named entity-first, in one place.

Statements are written once with psycopg's named placeholders (``%(name)s``); the same
text serves SQLAlchemy (``:name``) through `Statement.sqlalchemy`. Every placeholder carries
an explicit ``CAST``, so psycopg, psycopg2 and asyncpg all bind the same types. The schema
name is validated to a plain identifier (`tables.check_schema_name`) before it is placed in
the text; nothing else a user passes is ever part of the SQL text.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from typing import TYPE_CHECKING

from pgtasq.tables import check_schema_name

if TYPE_CHECKING:
    from sqlalchemy import TextClause

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")

# A row of the tasks table as TaskInfo.from_row reads it. jsonb and the enum travel as text,
# so every driver returns the same Python types.
TASK_COLUMNS = """id, queue, type, payload::text AS payload, priority, status::text AS status,
    run_at, attempts, max_attempts, timeout, deadline, idempotency_key,
    errors::text AS errors, result::text AS result, locked_by, locked_until,
    created_at, updated_at, attempted_at, finalized_at, retention"""

# The columns of one enqueue, in the order of the unnest() in task_insert.
INSERT_ARRAYS = (
    ("queue", "text"),
    ("type", "text"),
    ("payload", "text"),
    ("priority", "smallint"),
    ("run_at", "timestamptz"),
    ("delay", "float8"),
    ("max_attempts", "int"),
    ("timeout", "float8"),
    ("deadline", "timestamptz"),
    ("idempotency_key", "text"),
    ("retention", "float8"),
)

# More distinct queues than this in one statement: the notification says "*" (any queue).
NOTIFY_QUEUES_MAX = 32


@dataclasses.dataclass(frozen=True)
class Statement:
    name: str
    text: str

    @functools.cached_property
    def sqlalchemy(self) -> TextClause:
        """The statement as a SQLAlchemy ``text()`` with ``:name`` placeholders."""
        from sqlalchemy import text

        return text(_PLACEHOLDER.sub(r":\1", self.text))


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of one schema (a plain identifier, at most 63 characters)."""
    check_schema_name(schema)
    channel = f"pgtasq_{schema}"
    if len(channel) > 63:
        channel = "pgtasq_" + hashlib.sha1(schema.encode()).hexdigest()[:32]
    return channel


@dataclasses.dataclass(frozen=True)
class Statements:
    """The statements of one schema."""

    schema: str
    channel: str
    task_insert: Statement
    task_select_by_keys: Statement
    task_select: Statement
    task_select_many: Statement
    task_count_by_status: Statement


@functools.lru_cache(maxsize=64)
def statements(schema: str) -> Statements:
    s = check_schema_name(schema)
    channel = notify_channel(schema)
    arrays = ",\n        ".join(f"CAST(%({name})s AS {kind}[])" for name, kind in INSERT_ARRAYS)
    names = ", ".join(name for name, _ in INSERT_ARRAYS)

    # One statement enqueues a whole batch: the arrays become rows, rows with a taken
    # idempotency key are skipped (the caller then selects them), and one NOTIFY goes out
    # for the statement, delivered at commit.
    task_insert = Statement(
        "task_insert",
        f"""
WITH input AS (
    SELECT * FROM unnest(
        {arrays}
    ) WITH ORDINALITY AS i ({names}, ord)
),
inserted AS (
    INSERT INTO {s}.tasks
        (queue, type, payload, priority, run_at, max_attempts, timeout, deadline,
         idempotency_key, retention)
    SELECT queue, type, payload::jsonb, priority,
           coalesce(run_at, now() + make_interval(secs => coalesce(delay, 0))),
           max_attempts, make_interval(secs => timeout), deadline,
           idempotency_key, make_interval(secs => retention)
    FROM input
    ORDER BY ord
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, queue, idempotency_key, run_at, created_at
),
woken AS (
    SELECT pg_notify('{channel}',
                     CASE WHEN count(DISTINCT queue) <= {NOTIFY_QUEUES_MAX}
                          THEN json_agg(DISTINCT queue)::text ELSE '"*"' END)
    FROM inserted
    HAVING count(*) > 0
)
SELECT id, idempotency_key, run_at, created_at
FROM inserted LEFT JOIN woken ON true
""",
    )
    task_select_by_keys = Statement(
        "task_select_by_keys",
        f"SELECT {TASK_COLUMNS} FROM {s}.tasks "
        "WHERE idempotency_key = ANY(CAST(%(keys)s AS text[]))",
    )
    task_select = Statement(
        "task_select",
        f"SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE id = CAST(%(id)s AS bigint)",
    )
    task_select_many = Statement(
        "task_select_many",
        f"SELECT {TASK_COLUMNS} FROM {s}.tasks "
        "WHERE id = ANY(CAST(%(ids)s AS bigint[])) ORDER BY id",
    )
    task_count_by_status = Statement(
        "task_count_by_status",
        f"SELECT status::text AS status, count(*) AS count FROM {s}.tasks "
        "GROUP BY status ORDER BY status",
    )
    return Statements(
        schema=s,
        channel=channel,
        task_insert=task_insert,
        task_select_by_keys=task_select_by_keys,
        task_select=task_select,
        task_select_many=task_select_many,
        task_count_by_status=task_count_by_status,
    )
