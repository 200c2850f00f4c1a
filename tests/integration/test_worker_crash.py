"""A background loop of the worker that stops on a bug stops the worker, loudly.

Each test breaks one loop on a real PostgreSQL and checks that the worker shuts down within
seconds (not at the next signal, or never), raises `WorkerCrashed` from the original error,
logs it with its traceback, and leaves no task running on a lease nobody renews.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
import pytest
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
