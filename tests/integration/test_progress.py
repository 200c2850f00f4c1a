"""Progress while running (`TaskContext.set_progress`), on a real PostgreSQL: seen by a
Client while the handler runs, throttled, fenced, reset by a new attempt, sent as events."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from pgtasq import (
    Client,
    Progress,
    Task,
    TaskContext,
    TaskEvent,
    TaskStatus,
    TaskValidationError,
    _sql,
)
from pgtasq._progress import PROGRESS_INTERVAL_DEFAULT, ProgressWriter, progress_text
from tests.integration.test_consumer import enqueue, fast


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll the database through ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
    return got


def _progress(dsn: str, schema: str, task_id: int) -> Progress | None:
    with Client(dsn, schema=schema) as client:
        return client.get_task(task_id).progress


def test_a_client_sees_a_sync_handlers_progress_while_it_runs(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)
    seen = threading.Event()

    @consumer.task("t")
    def t(ctx: TaskContext) -> str:
        ctx.set_progress(0.25, note="a quarter")
        assert seen.wait(10), "the client never saw the progress"
        ctx.set_progress(1, note="all of it")  # the last one: written before the outcome
        return "done"

    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    consumer.start(pg_dsn)
    try:
        with Client(pg_dsn, schema=schema) as client:
            info = wait_for(lambda: (i := client.get_task(task_id)).progress is not None and i)
            assert info.status is TaskStatus.RUNNING
            assert info.progress.value == 0.25 and info.progress.note == "a quarter"
            assert info.progress.updated_at.tzinfo is not None
            assert abs(info.progress.updated_at - datetime.now(timezone.utc)) < timedelta(minutes=5)
            (listed,) = client.list_tasks().tasks
            assert listed.progress == info.progress
            seen.set()
            done = wait_for(lambda: (i := client.get_task(task_id)).status.is_final and i)
    finally:
        consumer.stop(timeout=10)
    assert done.status is TaskStatus.COMPLETED and done.result == "done"
    assert done.progress is not None
    assert done.progress.value == 1.0 and done.progress.note == "all of it"


def test_an_async_handler_reports_an_object_and_events_say_so(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema, events=True)

    @consumer.task("t")
    async def t(ctx: TaskContext) -> None:
        ctx.set_progress({"done": 3, "total": 10})
        # its own write, seen on the database (polled from a thread: the loop writes it)
        await asyncio.to_thread(wait_for, lambda: _progress(pg_dsn, schema, ctx.id))

    with Client(pg_dsn, schema=schema) as client, client.events(timeout=3.0) as stream:
        # Listening already: everything committed from here on is seen.
        (task_id,) = enqueue(pg_dsn, schema, Task("t"))
        consumer.run(pg_dsn, burst=True)
        got: list[TaskEvent] = []
        for event in stream:
            got.append(event)
            if event.kind == "completed":
                break
    progress = _progress(pg_dsn, schema, task_id)
    assert progress is not None and progress.value == {"done": 3, "total": 10}
    assert progress.note is None
    progressed = [e for e in got if e.kind == "progress"]
    assert progressed and all(e.task_ids == [task_id] for e in progressed)


def _count_progress_writes(dsn: str, schema: str) -> None:
    """A trigger counting every write of tasks.progress (NULL to NULL left out)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"""
            CREATE TABLE {schema}.progress_writes (id bigint, progress jsonb);
            CREATE FUNCTION {schema}.count_progress() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO {schema}.progress_writes VALUES (NEW.id, NEW.progress);
                RETURN NEW;
            END $$;
            CREATE TRIGGER count_progress AFTER UPDATE OF progress ON {schema}.tasks
            FOR EACH ROW WHEN (NEW.progress IS NOT NULL)
            EXECUTE FUNCTION {schema}.count_progress();
        """)


def test_many_reports_are_few_writes_and_the_last_one_is_written(pg_dsn: str, schema: str) -> None:
    _count_progress_writes(pg_dsn, schema)
    consumer = fast(schema)
    ran: list[float] = []
    calls = 20_000

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        began = time.monotonic()
        for i in range(1, calls + 1):
            ctx.set_progress(i / calls, note=f"{i} of {calls}")
            if i % 1000 == 0:
                time.sleep(0.05)  # a second or so in all: several throttle intervals
        ran.append(time.monotonic() - began)

    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    assert consumer.run(pg_dsn, burst=True).completed == 1
    with psycopg.connect(pg_dsn) as c:
        writes = c.execute(
            f"SELECT progress FROM {schema}.progress_writes WHERE id = %s ORDER BY ctid",
            [task_id],
        ).fetchall()
    # At most one write per interval while it ran, and the last value before the outcome.
    assert 1 <= len(writes) <= math.ceil(ran[0] / PROGRESS_INTERVAL_DEFAULT) + 2
    assert writes[-1][0]["value"] == 1.0 and writes[-1][0]["note"] == f"{calls} of {calls}"
    progress = _progress(pg_dsn, schema, task_id)
    assert progress is not None and progress.value == 1.0


def test_a_new_attempt_starts_without_progress(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)
    at_start: list[Any] = []

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        with psycopg.connect(pg_dsn) as c:
            row = c.execute(f"SELECT progress FROM {schema}.tasks WHERE id = %s", [ctx.id])
            at_start.append(row.fetchone()[0])  # type: ignore[index]
        assert ctx.info.progress is None  # the claim does not return it
        ctx.set_progress(0.5, note=f"attempt {ctx.attempt}")
        if ctx.attempt == 1:
            raise RuntimeError("again")

    (task_id,) = enqueue(pg_dsn, schema, Task("t", max_attempts=2))
    counts = consumer.run(pg_dsn, burst=True)
    assert counts.retried == 1 and counts.completed == 1
    assert at_start == [None, None]  # attempt 1 wrote its progress; attempt 2 began without
    progress = _progress(pg_dsn, schema, task_id)
    assert progress is not None and progress.note == "attempt 2"


def test_a_bad_value_raises_in_the_handler_and_writes_nothing(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        ctx.set_progress(float("nan"))

    (task_id,) = enqueue(pg_dsn, schema, Task("t", max_attempts=1))
    assert consumer.run(pg_dsn, burst=True).failed == 1
    with Client(pg_dsn, schema=schema) as client:
        info = client.get_task(task_id)
    assert info.progress is None
    assert info.errors[-1]["error"] == "TaskValidationError" and "progress" in str(info.errors)


async def test_a_write_for_a_task_this_worker_lost_changes_nothing(
    pg_dsn: str, schema: str
) -> None:
    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as c:
        cur = await c.execute(
            f"UPDATE {schema}.tasks SET status = 'running', attempts = 1, attempted_at = now(), "
            "locked_by = 'owner', locked_until = now() + interval '1 h' RETURNING attempted_at"
        )
        (claimed_at,) = await cur.fetchone()  # type: ignore[misc]
    stmts = _sql.statements(schema)
    async with AsyncConnectionPool(pg_dsn, min_size=1, open=False) as pool:
        thief = ProgressWriter(pool=pool, stmts=stmts, worker_id="thief")
        thief.record(task_id, claimed_at, '{"value":0.5,"note":null}')
        assert await thief.run_once() == 0  # another worker's task
        stale = ProgressWriter(pool=pool, stmts=stmts, worker_id="owner")
        stale.record(task_id, claimed_at - timedelta(seconds=1), '{"value":0.5,"note":null}')
        assert await stale.run_once() == 0  # an earlier claim of the same task
        assert _progress(pg_dsn, schema, task_id) is None
        owner = ProgressWriter(pool=pool, stmts=stmts, worker_id="owner")
        owner.record(task_id, claimed_at, '{"value":0.5,"note":"mine"}')
        assert await owner.run_once() == 1
    progress = _progress(pg_dsn, schema, task_id)
    assert progress is not None and progress.note == "mine"


async def test_a_database_error_keeps_the_value_for_the_next_round(
    pg_dsn: str, schema: str
) -> None:
    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as c:
        cur = await c.execute(
            f"UPDATE {schema}.tasks SET status = 'running', attempts = 1, attempted_at = now(), "
            "locked_by = 'owner', locked_until = now() + interval '1 h' RETURNING attempted_at"
        )
        (claimed_at,) = await cur.fetchone()  # type: ignore[misc]
        await c.execute(f"ALTER TABLE {schema}.tasks RENAME TO tasks_away")
        async with AsyncConnectionPool(pg_dsn, min_size=1, open=False) as pool:
            writer = ProgressWriter(pool=pool, stmts=_sql.statements(schema), worker_id="owner")
            writer.record(task_id, claimed_at, '{"value":0.5,"note":"kept"}')
            with pytest.raises(psycopg.Error):
                await writer.run_once()
            assert task_id in writer.unwritten  # kept for the next round
            await c.execute(f"ALTER TABLE {schema}.tasks_away RENAME TO tasks")
            runner = asyncio.create_task(writer.run())
            writer.record(task_id, claimed_at, '{"value":0.75,"note":"newer"}')
            try:
                await asyncio.to_thread(wait_for, lambda: _progress(pg_dsn, schema, task_id))
            finally:
                runner.cancel()
    progress = _progress(pg_dsn, schema, task_id)
    assert progress is not None and progress.note == "newer"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.floats() | st.integers() | st.dictionaries(st.text(), _JSON, max_size=6),
    note=st.none() | st.text(),
)
@example(value={"big": 10**400, "tiny": 1e-320, "neg": -0.0}, note="\u2028")
@example(value={"nul": "\x00"}, note=None)
def test_what_set_progress_accepts_postgresql_stores_and_gives_back(
    pg_dsn: str, schema: str, value: Any, note: str | None
) -> None:
    try:
        text = progress_text(value, note)
    except TaskValidationError:
        return
    with psycopg.connect(pg_dsn) as c:  # rolled back at the end
        claimed_at = c.execute(
            f"INSERT INTO {schema}.tasks (queue, type, max_attempts, status, attempts, "
            "attempted_at, locked_by, locked_until) VALUES ('q', 't', 1, 'running', 1, now(), "
            "'w', now() + interval '1 h') RETURNING id, attempted_at"
        ).fetchone()
        assert claimed_at is not None
        task_id, at = claimed_at
        params = {"worker": "w", "id": [task_id], "claimed_at": [at], "progress": [text]}
        assert c.execute(_sql.statements(schema).task_progress_many.text, params).fetchall()
        row = c.execute(
            f"SELECT progress::text FROM {schema}.tasks WHERE id = %s", [task_id]
        ).fetchone()
        assert row is not None
        progress = Progress.from_json(row[0])
        c.rollback()
    assert progress is not None and progress.note == note
    # as JSON numbers: jsonb keeps their value, not their Python type (1e16 reads as an int)
    assert _numbers(progress.value) == _numbers(value if isinstance(value, dict) else float(value))


def _numbers(value: Any) -> Any:
    """``value`` with its numbers (not bools) as Decimals, which compare by value."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return value
