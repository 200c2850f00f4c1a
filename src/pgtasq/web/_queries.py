"""The dashboard's own statements: what the Client does not ask.

Everything else the dashboard shows comes from `pgtasq.AsyncClient`. These read what only a
dashboard wants (finished tasks per minute, the facts behind "why is this task not running")
and make one change the Client has no method for (run a scheduled task now). Each is
composed with `psycopg.sql`, the schema as an identifier, values only as parameters.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgtasq.tables import check_schema_name

THROUGHPUT_MINUTES = 60  # the per-minute chart's span
THROUGHPUT_ROWS_MAX = 100_000  # the per-minute chart reads at most this many finished tasks
WORKER_ALIVE_SECONDS_DEFAULT = 60.0  # a worker with an older heartbeat counts as gone
AHEAD_COUNT_MAX = 10_000  # "N tasks ahead of it" stops counting here

Conn = psycopg.AsyncConnection[Any]


@dataclasses.dataclass(frozen=True)
class MinuteCounts:
    """Tasks finished in one minute (UTC), by final state."""

    minute: datetime
    completed: int
    failed: int
    cancelled: int


@dataclasses.dataclass(frozen=True)
class LiveWorker:
    """A worker with a recent heartbeat, as the "why not running" line needs it."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    types: tuple[str, ...] | None  # None: the worker did not say which types it handles
    heartbeat_age: float


@dataclasses.dataclass(frozen=True)
class TaskFacts:
    """What the database says around one task, beyond its own row."""

    queue_paused: bool
    live_workers: tuple[LiveWorker, ...]
    lease_holder_alive: bool | None  # None: no lease
    ahead: int | None  # ready tasks of its queue claimed before it (None: not ready/pending)
    now: datetime


def _ident(schema: str) -> sql.Identifier:
    return sql.Identifier(check_schema_name(schema))


async def _rows(
    conn: Conn, query: sql.SQL | sql.Composed, params: dict[str, Any]
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall() if cur.description is not None else []


async def throughput_per_minute(
    conn: Conn, schema: str, minutes: int = THROUGHPUT_MINUTES, cap: int | None = None
) -> tuple[list[MinuteCounts], bool]:
    """Tasks finished in each of the last ``minutes`` minutes, oldest first, every minute
    present (zero where nothing finished); and whether the count stopped at ``cap`` tasks
    (then the earliest minutes are incomplete). Read newest first through the two indexes
    on ``finalized_at`` (tasks_finalized_idx, tasks_retention_idx): what it costs grows with
    the tasks finished in that span, up to ``cap``, not with the history."""
    s = _ident(schema)
    cap = THROUGHPUT_ROWS_MAX if cap is None else cap
    query = sql.SQL(
        """
WITH span AS (
    SELECT date_trunc('minute', now()) - make_interval(mins => CAST(%(minutes)s AS int) - 1)
        AS since
),
finished AS (
    (SELECT finalized_at, status FROM {s}.tasks
     WHERE finalized_at >= (SELECT since FROM span) AND retention IS NULL
     ORDER BY finalized_at DESC LIMIT %(cap)s)
    UNION ALL
    (SELECT finalized_at, status FROM {s}.tasks
     WHERE finalized_at >= (SELECT since FROM span) AND retention IS NOT NULL
       AND finalized_at IS NOT NULL
     ORDER BY finalized_at DESC LIMIT %(cap)s)
),
minutes AS (
    SELECT generate_series((SELECT since FROM span), date_trunc('minute', now()),
                           interval '1 minute') AS minute
)
SELECT m.minute,
    count(f.status) FILTER (WHERE f.status = 'completed') AS completed,
    count(f.status) FILTER (WHERE f.status = 'failed') AS failed,
    count(f.status) FILTER (WHERE f.status = 'cancelled') AS cancelled
FROM minutes m LEFT JOIN finished f ON date_trunc('minute', f.finalized_at) = m.minute
GROUP BY m.minute ORDER BY m.minute
"""
    ).format(s=s)
    rows = await _rows(conn, query, {"minutes": minutes, "cap": cap})
    counts = [
        MinuteCounts(r["minute"], int(r["completed"]), int(r["failed"]), int(r["cancelled"]))
        for r in rows
    ]
    capped = sum(m.completed + m.failed + m.cancelled for m in counts) >= cap
    return counts, capped


def _types(metadata: Any) -> tuple[str, ...] | None:
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    types = metadata.get("types") if isinstance(metadata, dict) else None
    if not isinstance(types, list):
        return None
    return tuple(str(t) for t in types)


async def live_workers(
    conn: Conn, schema: str, alive_seconds: float = WORKER_ALIVE_SECONDS_DEFAULT
) -> list[LiveWorker]:
    """Workers whose heartbeat is at most ``alive_seconds`` old, with their queues and the
    task types they registered (``workers.metadata``)."""
    s = _ident(schema)
    query = sql.SQL(
        """
SELECT id, host, pid, queues::text AS queues, metadata::text AS metadata,
    extract(epoch FROM now() - heartbeat_at)::float8 AS age
FROM {s}.workers
WHERE heartbeat_at > now() - make_interval(secs => CAST(%(alive)s AS float8))
ORDER BY host, pid, id
"""
    ).format(s=s)
    out = []
    for r in await _rows(conn, query, {"alive": alive_seconds}):
        try:
            queues = json.loads(r["queues"])
        except ValueError:
            queues = {}
        names = tuple(str(q) for q in queues) if isinstance(queues, dict) else ()
        out.append(LiveWorker(r["id"], r["host"], r["pid"], names, _types(r["metadata"]), r["age"]))
    return out


async def task_facts(
    conn: Conn,
    schema: str,
    *,
    queue: str,
    status: str,
    locked_by: str | None,
    priority: int,
    run_at: datetime,
    task_id: int,
    alive_seconds: float = WORKER_ALIVE_SECONDS_DEFAULT,
) -> TaskFacts:
    """The facts `pgtasq.web._views.why_not_running` explains, read in one snapshot-free
    pass of small statements: the queue's pause flag, the live workers, and for a ready
    pending task how many ready tasks of its queue a worker claims first (through the claim
    index, counting at most `AHEAD_COUNT_MAX`)."""
    s = _ident(schema)
    paused_rows = await _rows(
        conn,
        sql.SQL(
            "SELECT coalesce((SELECT paused FROM {s}.queues WHERE name = %(queue)s), false) "
            "AS paused, now() AS now"
        ).format(s=s),
        {"queue": queue},
    )
    workers = await live_workers(conn, schema, alive_seconds)
    holder_alive = None if locked_by is None else any(w.id == locked_by for w in workers)
    ahead = None
    now: datetime = paused_rows[0]["now"]
    if status == "pending" and run_at <= now:
        query = sql.SQL(
            """
SELECT count(*) AS ahead FROM (
    SELECT 1 FROM {s}.tasks
    WHERE status = 'pending' AND queue = %(queue)s AND run_at <= now()
      AND (priority > %(priority)s
           OR (priority = %(priority)s AND (run_at, id) < (%(run_at)s, %(id)s)))
    LIMIT %(cap)s
) AS before_it
"""
        ).format(s=s)
        params = {
            "queue": queue,
            "priority": priority,
            "run_at": run_at,
            "id": task_id,
            "cap": AHEAD_COUNT_MAX,
        }
        ahead = int((await _rows(conn, query, params))[0]["ahead"])
    return TaskFacts(bool(paused_rows[0]["paused"]), tuple(workers), holder_alive, ahead, now)


EXACT_COUNT_ROWS_MAX = (
    200_000  # above this many rows (the planner's count), finished states are estimated
)
RECENT_FAILURES_SPAN_HOURS = 24


@dataclasses.dataclass(frozen=True)
class StateTotals:
    """Tasks per state now. Pending and running are exact (read through their partial
    indexes); the finished states are exact on a small table and the planner's estimates
    on a large one (``finished_exact`` False), where counting them would read every row."""

    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    finished_exact: bool


@dataclasses.dataclass(frozen=True)
class QueueNow:
    """A queue's unfinished tasks, as the overview shows them."""

    name: str
    paused: bool
    ready: int
    scheduled: int
    retry: int
    running: int
    oldest_ready_age: float
    processed_today: int
    failed_today: int
    processed_total: int
    failed_total: int
    # Finished tasks now, per state: None where they were not counted (a large table).
    completed: int | None = None
    failed: int | None = None
    cancelled: int | None = None


async def table_rows(conn: Conn, schema: str) -> int:
    """How many rows the tasks table has, as the planner last counted them (0: never)."""
    rows = await _rows(
        conn,
        sql.SQL("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%(table)s)"),
        {"table": f"{check_schema_name(schema)}.tasks"},
    )
    return max(0, int(rows[0]["reltuples"] or 0)) if rows else 0


def counts_exactly(rows: int) -> bool:
    """Whether a table of ``rows`` tasks is small enough to count its finished ones."""
    return rows <= EXACT_COUNT_ROWS_MAX


async def _estimate(conn: Conn, query: sql.Composed) -> int:
    rows = await _rows(conn, sql.SQL("EXPLAIN (FORMAT JSON) ") + query, {})
    plan = rows[0]["QUERY PLAN"]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


async def state_totals(conn: Conn, schema: str) -> StateTotals:
    """See `StateTotals`."""
    s = _ident(schema)
    live = await _rows(
        conn,
        sql.SQL(
            """
SELECT (SELECT count(*) FROM {s}.tasks WHERE status = 'pending') AS pending,
    (SELECT count(*) FROM {s}.tasks WHERE status = 'running' AND locked_until IS NOT NULL)
        AS running
"""
        ).format(s=s),
        {},
    )
    pending, running = int(live[0]["pending"]), int(live[0]["running"])
    if counts_exactly(await table_rows(conn, schema)):
        rows = await _rows(
            conn,
            sql.SQL(
                "SELECT count(*) FILTER (WHERE status = 'completed') AS completed, "
                "count(*) FILTER (WHERE status = 'failed') AS failed, "
                "count(*) FILTER (WHERE status = 'cancelled') AS cancelled FROM {s}.tasks"
            ).format(s=s),
            {},
        )
        r = rows[0]
        return StateTotals(
            pending, running, int(r["completed"]), int(r["failed"]), int(r["cancelled"]), True
        )
    completed, failed, cancelled = [
        await _estimate(
            conn,
            sql.SQL("SELECT 1 FROM {s}.tasks WHERE status = {state}").format(
                s=s, state=sql.Literal(state)
            ),
        )
        for state in ("completed", "failed", "cancelled")
    ]
    return StateTotals(pending, running, completed, failed, cancelled, finished_exact=False)


async def queues_now(conn: Conn, schema: str) -> list[QueueNow]:
    """Every queue (with tasks, a row in ``queues`` or counters) with its unfinished tasks:
    pending ones through the claim index, running ones through the lease index, today's
    attempts from the daily counters. Finished tasks are not read."""
    s = _ident(schema)
    query = sql.SQL(
        """
WITH pending AS (
    SELECT queue AS name,
        count(*) FILTER (WHERE attempts = 0 AND run_at <= now()) AS ready,
        count(*) FILTER (WHERE attempts = 0 AND run_at > now()) AS scheduled,
        count(*) FILTER (WHERE attempts > 0) AS retry,
        min(run_at) FILTER (WHERE run_at <= now()) AS oldest_ready
    FROM {s}.tasks WHERE status = 'pending' GROUP BY queue
),
running AS (
    SELECT queue AS name, count(*) AS running FROM {s}.tasks
    WHERE status = 'running' AND locked_until IS NOT NULL GROUP BY queue
),
today AS (
    SELECT queue AS name,
        sum(completed + failed + retried)
            FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date) AS processed,
        sum(failed + retried) FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date) AS failed,
        sum(completed + failed + retried) AS processed_total,
        sum(failed + retried) AS failed_total
    FROM {s}.queue_daily_stats GROUP BY queue
),
names AS (
    SELECT name FROM pending UNION SELECT name FROM running UNION SELECT name FROM {s}.queues
    UNION SELECT name FROM today
)
SELECT n.name, coalesce(q.paused, false) AS paused, coalesce(p.ready, 0) AS ready,
    coalesce(p.scheduled, 0) AS scheduled, coalesce(p.retry, 0) AS retry,
    coalesce(r.running, 0) AS running,
    coalesce(extract(epoch FROM now() - p.oldest_ready), 0)::float8 AS oldest_ready_age,
    coalesce(t.processed, 0)::bigint AS processed_today,
    coalesce(t.failed, 0)::bigint AS failed_today,
    coalesce(t.processed_total, 0)::bigint AS processed_total,
    coalesce(t.failed_total, 0)::bigint AS failed_total
FROM names n
LEFT JOIN pending p ON p.name = n.name
LEFT JOIN running r ON r.name = n.name
LEFT JOIN {s}.queues q ON q.name = n.name
LEFT JOIN today t ON t.name = n.name
ORDER BY n.name
"""
    ).format(s=s)
    return [
        QueueNow(
            r["name"],
            bool(r["paused"]),
            int(r["ready"]),
            int(r["scheduled"]),
            int(r["retry"]),
            int(r["running"]),
            float(r["oldest_ready_age"]),
            int(r["processed_today"]),
            int(r["failed_today"]),
            int(r["processed_total"]),
            int(r["failed_total"]),
        )
        for r in await _rows(conn, query, {})
    ]


async def recent_failure_ids(
    conn: Conn, schema: str, limit: int, hours: int = RECENT_FAILURES_SPAN_HOURS
) -> list[int]:
    """The ids of the tasks that failed last (within ``hours``), latest first, through the
    indexes on ``finalized_at``: what it reads is bounded by that span's finished tasks."""
    s = _ident(schema)
    query = sql.SQL(
        """
SELECT id FROM (
    (SELECT id, finalized_at FROM {s}.tasks
     WHERE finalized_at > now() - make_interval(hours => %(hours)s) AND retention IS NULL
       AND status = 'failed'
     ORDER BY finalized_at DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT id, finalized_at FROM {s}.tasks
     WHERE finalized_at > now() - make_interval(hours => %(hours)s) AND retention IS NOT NULL
       AND finalized_at IS NOT NULL AND status = 'failed'
     ORDER BY finalized_at DESC LIMIT %(limit)s)
) AS failed ORDER BY finalized_at DESC, id DESC LIMIT %(limit)s
"""
    ).format(s=s)
    return [int(r["id"]) for r in await _rows(conn, query, {"hours": hours, "limit": limit})]
