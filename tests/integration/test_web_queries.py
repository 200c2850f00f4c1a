"""The dashboard's own statements read what they show, not the history.

A table with 100 000 finished tasks from two days ago, a small backlog and a few recent
failures, analyzed. Each statement of `pgtasq.web._queries` runs, and PostgreSQL's own
counters for the tasks table (rows read by sequential scans and fetched by index scans)
must stay far below the history; `Client.stats`, which counts every row, is the control
that shows the counters do see a statement that reads the history.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from pgtasq import AsyncClient
from tests.conftest import _drop_schema, clone_schema

pytest.importorskip("starlette", reason="the web extra is not installed")

from pgtasq.web import _queries

HISTORY = 100_000
BACKLOG = 300
READ_MAX = 2_000


@pytest.fixture(scope="module")
def big(pg_dsn: str) -> Iterator[str]:
    schema = "t_" + uuid.uuid4().hex[:12]
    clone_schema(pg_dsn, schema)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO {schema}.tasks (queue, type, status, max_attempts, attempts, run_at,
                attempted_at, finalized_at, created_at, updated_at)
            SELECT 'q' || (g % 3), 't', 'completed', 3, 1, ts, ts, ts, ts, ts
            FROM (SELECT g, now() - interval '2 days' + g * interval '1 ms' AS ts
                  FROM generate_series(1, {HISTORY}) g) AS h"""
        )
        conn.execute(
            f"""INSERT INTO {schema}.tasks (queue, type, status, max_attempts, attempts, run_at,
                attempted_at, finalized_at, errors)
            SELECT 'q0', 't', 'failed', 1, 1, now(), now(), now() - g * interval '1 s',
                '[{{"attempt": 1, "error": "E"}}]'
            FROM generate_series(1, 20) g"""
        )
        conn.execute(
            f"INSERT INTO {schema}.tasks (queue, type, max_attempts) "
            f"SELECT 'q' || (g % 3), 't', 3 FROM generate_series(1, {BACKLOG}) g"
        )
        conn.execute(f"VACUUM ANALYZE {schema}.tasks")
    yield schema
    _drop_schema(pg_dsn, schema)


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as c:
        yield c


async def rows_read(
    conn: psycopg.AsyncConnection[Any], schema: str, run: Callable[[], Awaitable[object]]
) -> int:
    """The tasks table's rows that ``run`` read (sequential scans and index fetches)."""

    async def counters() -> int:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        cur = await conn.execute(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'tasks'",
            [schema],
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    before = await counters()
    await run()
    return await counters() - before


async def test_the_control_reads_the_history(conn: psycopg.AsyncConnection[Any], big: str) -> None:
    client = AsyncClient(schema=big)
    assert await rows_read(conn, big, lambda: client.stats(conn=conn)) >= HISTORY


async def test_the_overview_and_task_statements_do_not_read_the_history(
    conn: psycopg.AsyncConnection[Any], big: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_queries, "EXACT_COUNT_ROWS_MAX", HISTORY // 10)  # "large" table
    cur = await conn.execute(
        f"SELECT id, priority, run_at FROM {big}.tasks WHERE status = 'pending' "
        "ORDER BY id DESC LIMIT 1"
    )
    last = await cur.fetchone()
    assert last is not None
    task_id, priority, run_at = int(last[0]), int(last[1]), last[2]
    assert isinstance(run_at, datetime)
    statements: dict[str, Callable[[], Awaitable[object]]] = {
        "state_totals": lambda: _queries.state_totals(conn, big),
        "queues_now": lambda: _queries.queues_now(conn, big),
        "recent_failure_ids": lambda: _queries.recent_failure_ids(conn, big, 10),
        "throughput_per_minute": lambda: _queries.throughput_per_minute(conn, big),
        "live_workers": lambda: _queries.live_workers(conn, big),
        "task_facts": lambda: _queries.task_facts(
            conn,
            big,
            queue="q0",
            status="pending",
            locked_by=None,
            priority=priority,
            run_at=run_at,
            task_id=task_id,
        ),
    }
    read = {name: await rows_read(conn, big, run) for name, run in statements.items()}
    assert all(n <= READ_MAX for n in read.values()), read
    totals = await _queries.state_totals(conn, big)
    assert not totals.finished_exact
    assert (totals.pending, totals.running) == (BACKLOG, 0)
    assert len(await _queries.recent_failure_ids(conn, big, 10)) == 10
