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

from pgtasq._sql import notify_channel
from pgtasq.tables import check_schema_name

THROUGHPUT_MINUTES = 60  # the per-minute chart's span
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


async def _rows(conn: Conn, query: sql.Composed, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall() if cur.description is not None else []


async def throughput_per_minute(
    conn: Conn, schema: str, minutes: int = THROUGHPUT_MINUTES
) -> list[MinuteCounts]:
    """Tasks finished in each of the last ``minutes`` minutes, oldest first, every minute
    present (zero where nothing finished). Read through the two indexes on ``finalized_at``
    (tasks_finalized_idx, tasks_retention_idx): what it costs grows with the tasks finished
    in that span, not with the history."""
    s = _ident(schema)
    query = sql.SQL(
        """
WITH span AS (
    SELECT date_trunc('minute', now()) - make_interval(mins => CAST(%(minutes)s AS int) - 1)
        AS since
),
finished AS (
    SELECT finalized_at, status FROM {s}.tasks
    WHERE finalized_at >= (SELECT since FROM span) AND retention IS NULL
    UNION ALL
    SELECT finalized_at, status FROM {s}.tasks
    WHERE finalized_at >= (SELECT since FROM span) AND retention IS NOT NULL
      AND finalized_at IS NOT NULL
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
    rows = await _rows(conn, query, {"minutes": minutes})
    return [
        MinuteCounts(r["minute"], int(r["completed"]), int(r["failed"]), int(r["cancelled"]))
        for r in rows
    ]


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


async def task_run_now(conn: Conn, schema: str, task_id: int) -> bool:
    """A pending task that waits for its ``run_at`` becomes ready now, and the workers of
    its queue are woken. False when the task is not pending (any more)."""
    s = _ident(schema)
    query = sql.SQL(
        """
WITH changed AS (
    UPDATE {s}.tasks SET run_at = now(), updated_at = now()
    WHERE id = %(id)s AND status = 'pending'
    RETURNING id, queue
),
woken AS (
    SELECT pg_notify(%(channel)s, json_build_object(
        'queues', json_agg(queue), 'count', count(*), 'ids', json_agg(id))::text)
    FROM changed HAVING count(*) > 0
)
SELECT changed.id FROM changed LEFT JOIN woken ON true
"""
    ).format(s=s)
    rows = await _rows(conn, query, {"id": task_id, "channel": notify_channel(schema)})
    return bool(rows)
