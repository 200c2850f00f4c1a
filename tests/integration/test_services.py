"""The worker's background services on a real PostgreSQL, one `run_once()` at a time:
the counts each round returns, and what it left in the rows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from pgtasq import Client, Producer, Task, _sql
from pgtasq._database import fetch
from pgtasq._services import (
    CleanCounts,
    Cleaner,
    CleanerConfig,
    Heartbeat,
    HeartbeatConfig,
    HeartbeatCounts,
    RescueCounts,
    Rescuer,
    RescuerConfig,
)

WORKER = "test-host:1:abcdef01"


@pytest.fixture
async def pool(pg_dsn: str, schema: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """The worker's kind of pool: autocommit connections, in the test's schema."""
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(
        pg_dsn, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
    )
    await p.open(wait=True)
    try:
        yield p
    finally:
        await p.close()


def execute(dsn: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True) as c, c.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []


def tasks(dsn: str, schema: str) -> dict[int, dict[str, Any]]:
    rows = execute(dsn, f"SELECT *, status::text AS status FROM {schema}.tasks ORDER BY id")
    return {row["id"]: row for row in rows}


def enqueue(dsn: str, schema: str, *items: Task) -> list[int]:
    with Producer(dsn, schema=schema) as producer:
        return [info.id for info in producer.enqueue_many(list(items))]


def make_running(dsn: str, schema: str, ids: list[int], lease_left: str) -> None:
    """As if a worker (``ghost``) had claimed them, its lease ending ``lease_left`` from now."""
    execute(
        dsn,
        f"UPDATE {schema}.tasks SET status = 'running', attempts = attempts + 1, "
        "attempted_at = now(), locked_by = 'ghost', locked_until = now() + %s::interval "
        "WHERE id = ANY(%s)",
        (lease_left, ids),
    )


def finish(dsn: str, schema: str, ids: list[int], age: str) -> None:
    execute(
        dsn,
        f"UPDATE {schema}.tasks SET status = 'completed', finalized_at = now() - %s::interval "
        "WHERE id = ANY(%s)",
        (age, ids),
    )


# -- rescuer -----------------------------------------------------------------------------


async def test_rescue_of_expired_leases(
    pg_dsn: str, schema: str, pool: AsyncConnectionPool[Any]
) -> None:
    again, last, alive = enqueue(
        pg_dsn, schema, Task("t", max_attempts=3), Task("t", max_attempts=1), Task("t")
    )
    make_running(pg_dsn, schema, [again, last], "-1 second")
    make_running(pg_dsn, schema, [alive], "30 seconds")
    told: list[int] = []
    rescuer = Rescuer(pool=pool, stmts=_sql.statements(schema), on_rescued=told.append)

    assert await rescuer.run_once() == RescueCounts(rescued=2, failed=1, stale_workers=0)
    assert told == [2]
    rows = tasks(pg_dsn, schema)
    assert rows[again]["status"] == "pending" and rows[again]["attempts"] == 1
    assert rows[again]["locked_by"] is None and rows[again]["locked_until"] is None
    assert rows[again]["finalized_at"] is None
    [entry] = rows[again]["errors"]
    assert entry["error"] == "LeaseExpired" and "ghost" in entry["message"]
    assert rows[last]["status"] == "failed" and rows[last]["finalized_at"] is not None
    assert rows[alive]["status"] == "running" and rows[alive]["locked_by"] == "ghost"

    # Nothing left to rescue: a second round does nothing and says so.
    assert await rescuer.run_once() == RescueCounts()
    assert told == [2]
    assert tasks(pg_dsn, schema) == rows


async def test_rescue_takes_every_batch_and_stale_workers(
    pg_dsn: str, schema: str, pool: AsyncConnectionPool[Any]
) -> None:
    ids = enqueue(pg_dsn, schema, *[Task("t") for _ in range(5)])
    make_running(pg_dsn, schema, ids, "-1 second")
    for worker, age in (("dead", "2 minutes"), ("alive", "10 seconds")):
        execute(
            pg_dsn,
            f"INSERT INTO {schema}.workers (id, host, pid, queues, concurrency, heartbeat_at) "
            "VALUES (%s, 'h', 1, '{}', 1, now() - %s::interval)",
            (worker, age),
        )
    rescuer = Rescuer(
        pool=pool,
        stmts=_sql.statements(schema),
        config=RescuerConfig(batch=2, stale_worker_after=60.0),
    )
    assert await rescuer.run_once() == RescueCounts(rescued=5, failed=0, stale_workers=1)
    assert {row["status"] for row in tasks(pg_dsn, schema).values()} == {"pending"}
    assert [row["id"] for row in execute(pg_dsn, f"SELECT id FROM {schema}.workers")] == ["alive"]


@pytest.mark.parametrize("how", ["rescued", "released"])
async def test_rescued_and_released_tasks_keep_their_place(
    pg_dsn: str, schema: str, pool: AsyncConnectionPool[Any], how: str
) -> None:
    stmts = _sql.statements(schema)
    [first] = enqueue(pg_dsn, schema, Task("t", priority=5))
    make_running(pg_dsn, schema, [first], "-1 second")
    before = tasks(pg_dsn, schema)[first]
    backlog = enqueue(pg_dsn, schema, *[Task("t", priority=5) for _ in range(20)])
    if how == "rescued":
        assert (await Rescuer(pool=pool, stmts=stmts).run_once()).rescued == 1
    else:
        params = {"worker": "ghost", "id": [first], "claimed_at": [before["attempted_at"]]}
        async with pool.connection() as conn:
            assert await fetch(conn, stmts.task_release_many, params) == [{"id": first}]
    after = tasks(pg_dsn, schema)[first]
    assert (after["status"], after["run_at"], after["priority"]) == (
        "pending",
        before["run_at"],
        5,
    )
    # The next claim takes it, before the tasks enqueued after it.
    claim = {"queue": "default", "types": ["t"], "limit": 1, "worker": WORKER, "lease": 30.0}
    async with pool.connection() as conn:
        [claimed] = await fetch(conn, stmts.task_claim, claim)
    assert claimed["id"] == first and first not in backlog


# -- cleaner ------------------------------------------------------------------------------


async def test_cleaner_deletes_only_rows_past_retention(
    pg_dsn: str, schema: str, pool: AsyncConnectionPool[Any]
) -> None:
    old = enqueue(pg_dsn, schema, *[Task("t") for _ in range(5)])
    [kept] = enqueue(pg_dsn, schema, Task("t", retention=timedelta(days=30)))
    fresh, pending = enqueue(pg_dsn, schema, Task("t"), Task("t"))
    finish(pg_dsn, schema, [*old, kept], "2 days")
    finish(pg_dsn, schema, [fresh], "1 minute")
    cleaner = Cleaner(pool=pool, stmts=_sql.statements(schema), config=CleanerConfig(batch=2))

    assert await cleaner.run_once() == CleanCounts(deleted=5)  # in batches of 2, 2 and 1
    assert set(tasks(pg_dsn, schema)) == {kept, fresh, pending}
    assert await cleaner.run_once() == CleanCounts(deleted=0)

    shorter = Cleaner(
        pool=pool, stmts=_sql.statements(schema), config=CleanerConfig(retention_default=30.0)
    )
    assert await shorter.run_once() == CleanCounts(deleted=1)  # fresh: finished a minute ago
    assert set(tasks(pg_dsn, schema)) == {kept, pending}


async def test_cleaner_honours_each_rows_own_retention(
    pg_dsn: str, schema: str, pool: AsyncConnectionPool[Any]
) -> None:
    short = enqueue(
        pg_dsn, schema, *[Task("t", retention=timedelta(minutes=1 + i % 3)) for i in range(6)]
    )
    long = enqueue(pg_dsn, schema, *[Task("t", retention=timedelta(hours=2)) for _ in range(2)])
    default = enqueue(pg_dsn, schema, Task("t"))
    finish(pg_dsn, schema, [*short, *long, *default], "1 hour")
    cleaner = Cleaner(pool=pool, stmts=_sql.statements(schema), config=CleanerConfig(batch=2))

    # three distinct retentions of a minute or more, each with rows past it
    assert await cleaner.run_once() == CleanCounts(deleted=6)
    assert set(tasks(pg_dsn, schema)) == {*long, *default}
    finish(pg_dsn, schema, long, "3 hours")
    # a stored retention as long as an interval holds: no cut-off overflows, nothing due
    execute(pg_dsn, f"UPDATE {schema}.tasks SET retention = interval '2000000 years' "
            "WHERE id = %s", (default[0],))  # fmt: skip
    assert await cleaner.run_once() == CleanCounts(deleted=2)
    assert set(tasks(pg_dsn, schema)) == set(default)


async def test_cleaner_leaves_the_work_to_the_one_holding_the_lock(
    pg_dsn: str, schema: str, pool: AsyncConnectionPool[Any]
) -> None:
    ids = enqueue(pg_dsn, schema, *[Task("t") for _ in range(3)])
    finish(pg_dsn, schema, ids, "2 days")
    cleaner = Cleaner(pool=pool, stmts=_sql.statements(schema))
    with psycopg.connect(pg_dsn) as holder:  # another cleaner, in the middle of a batch
        holder.execute(f"SELECT pg_advisory_xact_lock(hashtext('pgtasq.clean.{schema}'))")
        assert await cleaner.run_once() == CleanCounts(deleted=0)
        holder.rollback()
    assert await cleaner.run_once() == CleanCounts(deleted=3)


# -- heartbeat ----------------------------------------------------------------------------


def _worker_params() -> dict[str, Any]:
    return {
        "worker": WORKER,
        "host": "test-host",
        "pid": 1,
        "queues": json.dumps({"default": 1}),
        "concurrency": 4,
        "metadata": json.dumps({"strict": False, "types": ["t"]}),
    }


async def _claim(pool: AsyncConnectionPool[Any], schema: str, lease: float) -> dict[int, datetime]:
    params = {"queue": "default", "types": ["t"], "limit": 10, "worker": WORKER, "lease": lease}
    async with pool.connection() as conn:
        rows = await fetch(conn, _sql.statements(schema).task_claim, params)
    return {row["id"]: row["attempted_at"] for row in rows}


async def test_heartbeat_extends_due_leases_and_reports_lost_tasks(
    pg_dsn: str, schema: str, pool: AsyncConnectionPool[Any]
) -> None:
    kept, cancelled, reclaimed = enqueue(pg_dsn, schema, Task("t"), Task("t"), Task("t"))
    held = await _claim(pool, schema, lease=1.0)  # short leases: all due for extension
    assert set(held) == {kept, cancelled, reclaimed}
    lost: list[tuple[int, datetime]] = []
    heartbeat = Heartbeat(
        pool=pool,
        stmts=_sql.statements(schema),
        worker=_worker_params(),
        held=lambda: held,
        on_lost=lambda task_id, claimed_at: lost.append((task_id, claimed_at)),
        config=HeartbeatConfig(interval=1.0, lease=30.0),
    )

    assert await heartbeat.run_once() == HeartbeatCounts(held=3, lost=0)
    assert lost == []
    [left] = execute(
        pg_dsn,
        f"SELECT min(locked_until - now()) AS left FROM {schema}.tasks WHERE status = 'running'",
    )
    assert left["left"] > timedelta(seconds=25)  # from 1 s to 30 s
    [worker] = execute(pg_dsn, f"SELECT * FROM {schema}.workers")
    assert worker["id"] == WORKER and worker["concurrency"] == 4

    # One cancelled by a client, one claimed again (another attempted_at): both lost.
    with Client(pg_dsn, schema=schema) as client:
        client.cancel_task(cancelled)
    execute(
        pg_dsn,
        f"UPDATE {schema}.tasks SET attempted_at = attempted_at + interval '1 ms' WHERE id = %s",
        (reclaimed,),
    )
    assert await heartbeat.run_once() == HeartbeatCounts(held=3, lost=2)
    assert sorted(lost) == sorted([(cancelled, held[cancelled]), (reclaimed, held[reclaimed])])
    rows = tasks(pg_dsn, schema)
    assert rows[kept]["status"] == "running" and rows[kept]["locked_by"] == WORKER
    assert rows[cancelled]["status"] == "cancelled"


async def test_heartbeat_with_nothing_held_keeps_the_worker_row(
    pg_dsn: str, schema: str, pool: AsyncConnectionPool[Any]
) -> None:
    heartbeat = Heartbeat(
        pool=pool,
        stmts=_sql.statements(schema),
        worker=_worker_params(),
        held=dict,
        on_lost=lambda task_id, claimed_at: None,
    )
    assert await heartbeat.run_once() == HeartbeatCounts(held=0, lost=0)
    execute(pg_dsn, f"UPDATE {schema}.workers SET heartbeat_at = now() - interval '1 hour'")
    assert await heartbeat.run_once() == HeartbeatCounts()
    [worker] = execute(
        pg_dsn,
        f"SELECT id, now() - heartbeat_at < interval '1 minute' AS fresh FROM {schema}.workers",
    )
    assert worker == {"id": WORKER, "fresh": True}


async def test_statement_timeout_local_bounds_the_rest_of_the_transaction(
    pool: AsyncConnectionPool[Any],
) -> None:
    """What the worker's teardown runs before unregistering: a statement after it in the
    same transaction is cancelled at the timeout; the next transaction has no limit."""

    async def sleep_bounded(conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await fetch(conn, _sql.setting_statement_timeout_local, {"milliseconds": "100"})
            await conn.execute("SELECT pg_sleep(5)")

    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            await sleep_bounded(conn)
        cur = await conn.execute("SHOW statement_timeout")
        assert await cur.fetchone() == ("0",)
