"""A background loop of the worker that stops on a bug stops the worker, loudly; so does a
claim that fails for a reason other than a lost database.

Each test breaks one loop on a real PostgreSQL and checks that the worker shuts down within
seconds (not at the next signal, or never), raises `WorkerCrashed` from the original error,
logs it with its traceback, and leaves no task running on a lease nobody renews.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from pgtasq import Consumer, Producer, Task, TaskContext, WorkerCrashed
from pgtasq._outcomes import OutcomeWriter
from pgtasq._services import Cleaner, Heartbeat

# Bounds the wait for a worker that should stop by itself: without supervision it runs on.
STOPS_WITHIN = 10.0


def rows(dsn: str, schema: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as c, c.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT *, status::text AS status FROM {schema}.tasks ORDER BY id"
        ).fetchall()


def enqueue(dsn: str, schema: str, *tasks: Task) -> list[int]:
    with Producer(dsn, schema=schema) as p:
        return [i.id for i in p.enqueue_many(tasks)]


def consumer_for(schema: str, **options: Any) -> Consumer:
    defaults: dict[str, Any] = {
        "schema": schema,
        "lease": 5.0,
        "heartbeat_interval": 0.2,
        "poll_interval": 0.2,
        "shutdown_timeout": 30.0,  # longer than any test waits: a wait skipped shows
    }
    return Consumer(**{**defaults, **options})


def crash_records(caplog: pytest.LogCaptureFixture, loop: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and f"the {loop} loop stopped" in r.getMessage()
    ]


async def test_a_dead_heartbeat_stops_the_worker_and_hands_the_task_back(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    beats = 0
    real_run_once = Heartbeat.run_once

    async def failing_run_once(self: Heartbeat) -> Any:
        nonlocal beats
        beats += 1
        if beats > 1 and started.is_set():
            raise RuntimeError("heartbeat bug")
        return await real_run_once(self)

    monkeypatch.setattr(Heartbeat, "run_once", failing_run_once)
    consumer = consumer_for(schema)

    @consumer.task("long")
    async def long(ctx: TaskContext) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    (task_id,) = enqueue(pg_dsn, schema, Task("long"))
    began = time.monotonic()
    with pytest.raises(WorkerCrashed) as crashed:
        await asyncio.wait_for(consumer.arun(pg_dsn), STOPS_WITHIN)
    # The grace period (30 s) was skipped: without heartbeats the lease would run out in it.
    assert time.monotonic() - began < 5.0
    assert crashed.value.loop == "heartbeat"
    assert "heartbeat loop raised RuntimeError: heartbeat bug" in str(crashed.value)
    assert isinstance(crashed.value.__cause__, RuntimeError)
    assert cancelled.is_set()
    (record,) = crash_records(caplog, "heartbeat")
    assert record.exc_info is not None and record.exc_info[1] is crashed.value.__cause__
    (row,) = rows(pg_dsn, schema)
    # Handed back, the attempt given back: not left running on a lease nobody extends.
    assert (row["id"], row["status"], row["attempts"]) == (task_id, "pending", 0)
    assert row["locked_by"] is None and row["locked_until"] is None
    with psycopg.connect(pg_dsn) as c:
        assert c.execute(f"SELECT count(*) FROM {schema}.workers").fetchone() == (0,)


async def test_a_dead_flush_loop_stops_the_worker_and_the_last_flush_writes_outcomes(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    flushes = 0
    real_flush = OutcomeWriter.flush

    async def failing_once(self: OutcomeWriter) -> None:
        nonlocal flushes
        flushes += 1
        if flushes == 1:  # the flush loop's first flush; the shutdown's final one works
            raise RuntimeError("flush bug")
        await real_flush(self)

    monkeypatch.setattr(OutcomeWriter, "flush", failing_once)
    consumer = consumer_for(schema, batch_size=10)

    @consumer.task("quick")
    async def quick(ctx: TaskContext) -> str:
        return "quick"

    @consumer.task("slow")
    async def slow(ctx: TaskContext) -> str:
        await asyncio.sleep(1.0)  # still running when the flush loop dies: gets its grace
        return "slow"

    enqueue(pg_dsn, schema, Task("slow"), Task("quick"))
    began = time.monotonic()
    with pytest.raises(WorkerCrashed) as crashed:
        await asyncio.wait_for(consumer.arun(pg_dsn), STOPS_WITHIN)
    assert time.monotonic() - began < 5.0
    assert crashed.value.loop == "flush"
    assert isinstance(crashed.value.__cause__, RuntimeError)
    assert len(crash_records(caplog, "flush")) == 1
    done = rows(pg_dsn, schema)
    assert [(r["type"], r["status"], r["result"]) for r in done] == [
        ("slow", "completed", "slow"),
        ("quick", "completed", "quick"),
    ]
    assert flushes >= 2


async def test_a_loop_that_returns_stops_the_worker_too(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def returns(self: Cleaner) -> None:
        return None

    monkeypatch.setattr(Cleaner, "run", returns)
    consumer = consumer_for(schema)

    @consumer.task("t")
    async def t(ctx: TaskContext) -> None:
        return None

    with pytest.raises(WorkerCrashed, match="its clean loop returned") as crashed:
        await asyncio.wait_for(consumer.arun(pg_dsn), STOPS_WITHIN)
    assert crashed.value.__cause__ is None
    assert len(crash_records(caplog, "clean")) == 1


@pytest.mark.timeout(30)
def test_run_raises_worker_crashed(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Heartbeat) -> Any:
        raise KeyError("beat")

    monkeypatch.setattr(Heartbeat, "run_once", broken)
    consumer = consumer_for(schema)

    @consumer.task("t")
    async def t(ctx: TaskContext) -> None:
        return None

    with pytest.raises(WorkerCrashed) as crashed:
        consumer.run(pg_dsn, handle_signals=False)
    assert isinstance(crashed.value.__cause__, KeyError)


def claim_crash_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.ERROR]


# Before the fix the worker spun on, logging without end: the thread method ends even that.
@pytest.mark.timeout(30, method="thread")
async def test_a_claim_on_a_missing_table_stops_the_worker_once_handlers_finish(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The queues table, read only by the claim statement, is dropped under a running worker
    (a downgrade, a restore gone wrong): the worker stops with WorkerCrashed instead of
    claiming again and again, and the running handler still gets its grace period."""
    started = asyncio.Event()
    consumer = consumer_for(schema, concurrency=4, batch_size=1)

    @consumer.task("slow")
    async def slow(ctx: TaskContext) -> str:
        started.set()
        await asyncio.sleep(1.0)
        return "done"

    (task_id,) = enqueue(pg_dsn, schema, Task("slow"))
    worker = asyncio.create_task(consumer.arun(pg_dsn))
    await asyncio.wait_for(started.wait(), STOPS_WITHIN)
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as c:
        await c.execute(f"DROP TABLE {schema}.queues")
    began = time.monotonic()
    with pytest.raises(WorkerCrashed) as crashed:
        await asyncio.wait_for(worker, STOPS_WITHIN)
    assert time.monotonic() - began < 5.0
    assert crashed.value.loop == "claim"
    assert "its claim loop raised UndefinedTable" in str(crashed.value)
    assert isinstance(crashed.value.__cause__, psycopg.errors.UndefinedTable)
    # Logged once with its traceback: the claim loop did not go on claiming.
    (record,) = claim_crash_records(caplog)
    assert "the claim loop stopped (raised UndefinedTable" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is crashed.value.__cause__
    (row,) = rows(pg_dsn, schema)
    assert (row["id"], row["status"], row["result"]) == (task_id, "completed", "done")
    with psycopg.connect(pg_dsn) as c:
        assert c.execute(f"SELECT count(*) FROM {schema}.workers").fetchone() == (0,)


@pytest.fixture
def limited_dsn(pg_dsn: str, schema: str) -> Iterator[str]:
    """A DSN for a login role of this test's own that may use the schema but not read its
    queues table (which only the claim statement reads)."""
    role = f"{schema}_worker"
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        c.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}")
        c.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
        c.execute(f"REVOKE ALL ON {schema}.queues FROM {role}")
    try:
        yield make_conninfo(pg_dsn, user=role)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")


@pytest.mark.timeout(30, method="thread")  # as above
def test_run_raises_worker_crashed_when_claiming_is_not_permitted(
    limited_dsn: str, caplog: pytest.LogCaptureFixture, schema: str
) -> None:
    consumer = consumer_for(schema)

    @consumer.task("t")
    async def t(ctx: TaskContext) -> None:
        return None

    began = time.monotonic()
    with pytest.raises(WorkerCrashed) as crashed:
        consumer.run(limited_dsn, handle_signals=False)
    assert time.monotonic() - began < 5.0
    assert crashed.value.loop == "claim"
    assert isinstance(crashed.value.__cause__, psycopg.errors.InsufficientPrivilege)
    (record,) = claim_crash_records(caplog)
    assert "the claim loop stopped (raised InsufficientPrivilege" in record.getMessage()
