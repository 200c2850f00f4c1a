"""The Consumer on a real PostgreSQL, in-process: outcomes, retries, fencing, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from pgtasq import (
    ConfigurationError,
    Consumer,
    DatabaseMisconfigured,
    DatabaseUnavailable,
    Producer,
    RetryIn,
    SkipRetry,
    Task,
    TaskContext,
    TaskLost,
    TaskTimeout,
    _sql,
)


def rows(dsn: str, schema: str, where: str = "true") -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as c, c.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT * FROM {schema}.tasks WHERE {where} ORDER BY id").fetchall()


def enqueue(dsn: str, schema: str, *tasks: Task) -> list[int]:
    with Producer(dsn, schema=schema) as p:
        return [i.id for i in p.enqueue_many(tasks)]


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def fast(schema: str, **options: Any) -> Consumer:
    """A consumer with short timers and no backoff, for tests."""
    defaults: dict[str, Any] = {
        "schema": schema,
        "lease": 5.0,
        "heartbeat_interval": 0.2,
        "poll_interval": 0.2,
        "retry_delay": lambda info, exc: 0.0,
        "shutdown_timeout": 2.0,
    }
    return Consumer(**{**defaults, **options})


def test_async_and_sync_handlers_complete_with_results(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)

    @consumer.task("double")
    async def double(ctx: TaskContext) -> Any:
        return {"twice": ctx.payload * 2, "attempt": ctx.attempt, "queue": ctx.queue}

    @consumer.task("shout")
    def shout(ctx: TaskContext) -> Any:
        assert threading.current_thread() is not threading.main_thread()
        return ctx.payload.upper()

    @consumer.task("nothing")
    def nothing(ctx: TaskContext) -> None:
        return None

    enqueue(pg_dsn, schema, Task("double", 21), Task("shout", "hi"), Task("nothing"))
    counts = consumer.run(pg_dsn, burst=True)
    assert (counts.claimed, counts.completed, counts.failed) == (3, 3, 0)
    done = rows(pg_dsn, schema)
    assert [r["status"] for r in done] == ["completed"] * 3
    assert [r["result"] for r in done] == [
        {"twice": 42, "attempt": 1, "queue": "default"},
        "HI",
        None,
    ]
    assert all(r["finalized_at"] is not None and r["locked_by"] is None for r in done)
    assert all(r["locked_until"] is None and r["attempts"] == 1 for r in done)


def test_failures_retry_with_backoff_then_fail(pg_dsn: str, schema: str) -> None:
    delays: list[tuple[int, str]] = []

    def retry_delay(info: Any, exc: BaseException) -> float:
        delays.append((info.attempts, type(exc).__name__))
        return 0.0

    consumer = fast(schema, retry_delay=retry_delay)

    @consumer.task("flaky")
    async def flaky(ctx: TaskContext) -> None:
        raise ValueError(f"boom {ctx.attempt}")

    (task_id,) = enqueue(pg_dsn, schema, Task("flaky", max_attempts=3))
    for _ in range(3):
        consumer.run(pg_dsn, burst=True)
    (row,) = rows(pg_dsn, schema)
    assert row["status"] == "failed" and row["attempts"] == 3 and row["finalized_at"]
    assert delays == [(1, "ValueError"), (2, "ValueError")]
    assert [e["attempt"] for e in row["errors"]] == [1, 2, 3]
    assert [e["message"] for e in row["errors"]] == ["boom 1", "boom 2", "boom 3"]
    assert all(e["error"] == "ValueError" and "Traceback" in e["traceback"] for e in row["errors"])
    assert all(datetime.fromisoformat(e["at"]) <= datetime.now(timezone.utc) for e in row["errors"])
    assert task_id == row["id"]


def test_retry_waits_for_the_backoff(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema, retry_delay=lambda info, exc: 3600.0)

    @consumer.task("t")
    async def t(ctx: TaskContext) -> None:
        raise RuntimeError("later")

    enqueue(pg_dsn, schema, Task("t"))
    consumer.run(pg_dsn, burst=True)
    counts = consumer.run(pg_dsn, burst=True)
    assert counts.claimed == 0  # not ready for an hour
    (row,) = rows(pg_dsn, schema)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["run_at"] - row["updated_at"] == timedelta(hours=1)


def test_skip_retry_fails_at_once(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        raise SkipRetry("invalid input")

    enqueue(pg_dsn, schema, Task("t", max_attempts=10))
    assert consumer.run(pg_dsn, burst=True).failed == 1
    (row,) = rows(pg_dsn, schema)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["errors"][0]["error"] == "SkipRetry"


def test_retry_in_is_not_a_failure(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)
    seen: list[int] = []

    @consumer.task("t")
    async def t(ctx: TaskContext) -> str:
        seen.append(ctx.attempt)
        if len(seen) < 3:
            raise RetryIn(0)
        return "ok"

    enqueue(pg_dsn, schema, Task("t", max_attempts=1))
    for _ in range(3):
        consumer.run(pg_dsn, burst=True)
    (row,) = rows(pg_dsn, schema)
    assert seen == [1, 1, 1]  # the attempt is given back each time
    assert row["status"] == "completed" and row["errors"] == [] and row["result"] == "ok"


def test_is_failure_and_error_hook(pg_dsn: str, schema: str) -> None:
    hooked: list[tuple[int, str]] = []

    async def on_error(ctx: TaskContext, exc: BaseException) -> None:
        hooked.append((ctx.id, str(exc)))

    consumer = fast(
        schema, on_error=on_error, is_failure=lambda exc: not isinstance(exc, ConnectionError)
    )
    calls = 0

    @consumer.task("t")
    def t(ctx: TaskContext) -> str:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError("upstream down")
        return "done"

    (task_id,) = enqueue(pg_dsn, schema, Task("t", max_attempts=1))
    for _ in range(3):
        consumer.run(pg_dsn, burst=True)
    (row,) = rows(pg_dsn, schema)
    assert row["status"] == "completed" and row["attempts"] == 1
    assert [e["error"] for e in row["errors"]] == ["ConnectionError", "ConnectionError"]
    assert hooked == [(task_id, "upstream down"), (task_id, "upstream down")]


def test_middleware_wraps_every_handler_in_order(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)
    trail: list[str] = []

    @consumer.middleware
    async def outer(ctx: TaskContext, call_next: Any) -> Any:
        trail.append(f"outer>{ctx.type}")
        result = await call_next(ctx)
        trail.append("outer<")
        return {"wrapped": result}

    @consumer.middleware
    async def inner(ctx: TaskContext, call_next: Any) -> Any:
        trail.append("inner>")
        return await call_next(ctx)

    @consumer.task("s")
    def s(ctx: TaskContext) -> int:
        trail.append("handler")
        return 1

    enqueue(pg_dsn, schema, Task("s"))
    consumer.run(pg_dsn, burst=True)
    assert trail == ["outer>s", "inner>", "handler", "outer<"]
    assert rows(pg_dsn, schema)[0]["result"] == {"wrapped": 1}


def test_timeout_and_deadline_cancel_the_handler(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)
    cancelled: list[int] = []
    flags: list[bool] = []

    @consumer.task("slow")
    async def slow(ctx: TaskContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(ctx.id)
            raise

    @consumer.task("slow_sync")
    def slow_sync(ctx: TaskContext) -> None:
        flags.append(ctx.cancelled.wait(10))

    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    ids = enqueue(
        pg_dsn,
        schema,
        Task("slow", timeout=0.3, max_attempts=1),
        Task("slow", deadline=past, max_attempts=1),
        Task("slow_sync", timeout=0.3, max_attempts=1),
    )
    started = time.monotonic()
    counts = consumer.run(pg_dsn, burst=True)
    assert time.monotonic() - started < 5
    assert counts.failed == 3
    assert cancelled == ids[:1]  # the passed deadline never started (see the test below)
    assert flags == [True]  # the sync handler saw ctx.cancelled
    errors = [row["errors"][0]["error"] for row in rows(pg_dsn, schema)]
    assert errors == [TaskTimeout.__name__, "SkipRetry", TaskTimeout.__name__]
    assert all(row["status"] == "failed" for row in rows(pg_dsn, schema))


def test_claims_only_handled_types_and_unpaused_queues(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema, queues=["default", "paused"])

    @consumer.task("known")
    def known(ctx: TaskContext) -> None: ...

    enqueue(pg_dsn, schema, Task("known"), Task("unknown"), Task("known", queue="paused"))
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"INSERT INTO {schema}.queues (name, paused) VALUES ('paused', true)")
    assert consumer.run(pg_dsn, burst=True).completed == 1
    assert [(r["type"], r["queue"], r["status"]) for r in rows(pg_dsn, schema)] == [
        ("known", "default", "completed"),
        ("unknown", "default", "pending"),
        ("known", "paused", "pending"),
    ]
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"UPDATE {schema}.queues SET paused = false")
    assert consumer.run(pg_dsn, burst=True).completed == 1


def test_claim_order_is_priority_then_run_at_then_id(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema, concurrency=1, batch_size=1)
    order: list[str] = []

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        order.append(ctx.payload)

    old = datetime.now(timezone.utc) - timedelta(minutes=5)
    enqueue(
        pg_dsn,
        schema,
        Task("t", "low", priority=-5),
        Task("t", "normal-1"),
        Task("t", "high", priority=10),
        Task("t", "normal-old", run_at=old),
        Task("t", "normal-2"),
    )
    consumer.run(pg_dsn, burst=True)
    assert order == ["high", "normal-old", "normal-1", "normal-2", "low"]


def test_complete_inside_the_handlers_transaction(pg_dsn: str, schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"CREATE TABLE {schema}.ledger (task_id bigint, amount int)")
    consumer = fast(schema)

    @consumer.task("charge")
    def charge(ctx: TaskContext) -> None:
        with psycopg.connect(pg_dsn) as conn:
            conn.execute(f"INSERT INTO {schema}.ledger VALUES (%s, %s)", (ctx.id, ctx.payload))
            ctx.complete(conn, result={"charged": ctx.payload})
            if ctx.payload < 0:
                raise ValueError("negative: the insert and the completion roll back together")
            conn.commit()

    @consumer.task("charge_async")
    async def charge_async(ctx: TaskContext) -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            await conn.execute(f"INSERT INTO {schema}.ledger VALUES (%s, %s)", (ctx.id, 7))
            await ctx.acomplete(conn, result="async")
            await conn.commit()

    ok, bad, aok = enqueue(
        pg_dsn, schema, Task("charge", 5), Task("charge", -1, max_attempts=1), Task("charge_async")
    )
    consumer.run(pg_dsn, burst=True)
    by_id = {r["id"]: r for r in rows(pg_dsn, schema)}
    assert by_id[ok]["status"] == "completed" and by_id[ok]["result"] == {"charged": 5}
    assert by_id[aok]["status"] == "completed" and by_id[aok]["result"] == "async"
    assert by_id[bad]["status"] == "failed" and by_id[bad]["result"] is None
    with psycopg.connect(pg_dsn) as c:
        ledger = c.execute(f"SELECT task_id, amount FROM {schema}.ledger ORDER BY 1").fetchall()
    assert ledger == [(ok, 5), (aok, 7)]


def test_complete_raises_task_lost_when_the_task_was_taken(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)
    raised: list[BaseException] = []

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as other:  # a client cancels it meanwhile
            other.execute(
                f"UPDATE {schema}.tasks SET status = 'cancelled', finalized_at = now(), "
                "locked_by = NULL, locked_until = NULL WHERE id = %s",
                (ctx.id,),
            )
        with psycopg.connect(pg_dsn) as conn:
            try:
                ctx.complete(conn)
            except TaskLost as exc:
                raised.append(exc)
                raise

    enqueue(pg_dsn, schema, Task("t"))
    counts = consumer.run(pg_dsn, burst=True)
    assert len(raised) == 1 and raised[0].task_id == rows(pg_dsn, schema)[0]["id"]
    assert counts.lost == 1  # the failure outcome was fenced out too
    (row,) = rows(pg_dsn, schema)
    assert row["status"] == "cancelled" and row["errors"] == []


def _cancel(dsn: str, schema: str, task_id: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            f"UPDATE {schema}.tasks SET status = 'cancelled', finalized_at = now(), "
            "locked_by = NULL, locked_until = NULL WHERE id = %s AND status = 'running'",
            (task_id,),
        )


def test_cancelling_a_running_task_reaches_its_handler(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema, heartbeat_interval=0.5)
    started: dict[int, float] = {}
    stopped: dict[int, float] = {}

    @consumer.task("async_loop")
    async def async_loop(ctx: TaskContext) -> None:
        started[ctx.id] = time.monotonic()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped[ctx.id] = time.monotonic()
            raise

    @consumer.task("sync_loop")
    def sync_loop(ctx: TaskContext) -> None:
        started[ctx.id] = time.monotonic()
        while not ctx.cancelled.wait(0.05):
            pass
        stopped[ctx.id] = time.monotonic()

    a, s = enqueue(pg_dsn, schema, Task("async_loop"), Task("sync_loop"))
    consumer.start(pg_dsn)
    try:
        wait_for(lambda: a in started and s in started)
        cancel_at = time.monotonic()
        _cancel(pg_dsn, schema, a)
        _cancel(pg_dsn, schema, s)
        wait_for(lambda: a in stopped and s in stopped, timeout=5)
    finally:
        counts = consumer.stop(timeout=10)
    # At the next heartbeat (0.2 s here; docs/workers.md: "within about a second" at the
    # default 1 s), so well before the handlers' own 60 s; no tighter bound is promised.
    assert stopped[a] - cancel_at < 10 and stopped[s] - cancel_at < 10
    assert [r["status"] for r in rows(pg_dsn, schema)] == ["cancelled", "cancelled"]
    assert counts is not None and counts.completed == 0


def test_listen_wakes_an_idle_worker(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema, poll_interval=30.0)  # only NOTIFY can wake it in time
    ran = threading.Event()

    @consumer.task("t")
    async def t(ctx: TaskContext) -> None:
        ran.set()

    consumer.start(pg_dsn)  # returns once listening, the first poll done
    try:
        enqueue(pg_dsn, schema, Task("t"))
        assert ran.wait(3.0)
    finally:
        consumer.stop(timeout=10)


def test_odd_notifications_do_not_stop_the_listener(pg_dsn: str, schema: str) -> None:
    """Anyone may NOTIFY the channel: a list holding an object (not hashable) or a payload
    nested deeper than the JSON parser goes used to kill the listener (TypeError,
    RecursionError), leaving the worker to its poll."""
    consumer = fast(schema, poll_interval=30.0)  # only NOTIFY can wake it in time
    ran = threading.Event()

    @consumer.task("t")
    async def t(ctx: TaskContext) -> None:
        ran.set()

    consumer.start(pg_dsn)  # returns once listening, the first poll done
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            channel = sql.Identifier(_sql.notify_channel(schema))
            for payload in ('[{"a":1}]', "[" * 3000 + "]" * 3000):
                c.execute(sql.SQL("NOTIFY {}, {}").format(channel, sql.Literal(payload)))
        # Delivered in commit order: the listener reads them before the enqueue's.
        enqueue(pg_dsn, schema, Task("t"))
        assert ran.wait(3.0), "the task waited for the 30 s poll: the listener is gone"
    finally:
        counts = consumer.stop(timeout=10)  # would raise WorkerCrashed had the listener died
    assert counts is not None and counts.completed == 1


def _listening(dsn: str, schema: str) -> int:
    """Sessions whose last statement was this schema's LISTEN (the worker's listener)."""
    with psycopg.connect(dsn) as c:
        listen = f'LISTEN "{_sql.notify_channel(schema)}"'
        row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE query = %s", [listen])
        return int(row.fetchone()[0])  # type: ignore[index]


def _workers(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn) as c:
        row = c.execute(f"SELECT count(*) FROM {schema}.workers").fetchone()
        return int(row[0])  # type: ignore[index]


def test_start_returns_once_the_worker_is_ready(pg_dsn: str, schema: str) -> None:
    """Registered, LISTEN in place and the first claim done when start() returns: a test
    (or an application) needs no sleep before it relies on the worker."""
    enqueue(pg_dsn, schema, Task("t", "waiting"))
    seen: list[Any] = []
    consumer = fast(schema, poll_interval=30.0)

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        seen.append(ctx.payload)

    consumer.start(pg_dsn)
    try:
        assert _workers(pg_dsn, schema) == 1
        assert _listening(pg_dsn, schema) == 1
        assert consumer.settings.concurrency > 0 and consumer._engine is not None
        assert consumer._engine.counts.claimed == 1  # its first claim took the waiting task
    finally:
        consumer.stop(timeout=10)


def test_start_raises_what_stopped_the_worker_before_it_was_ready(
    pg_dsn: str, fresh_schema: str
) -> None:
    consumer = fast(fresh_schema)
    consumer.register("t", lambda ctx: None)
    with pytest.raises(DatabaseMisconfigured, match="migrate"):
        consumer.start(pg_dsn)
    assert consumer._thread is None  # nothing left running; it may be started again
    with pytest.raises(DatabaseMisconfigured, match="migrate"):
        consumer.start(pg_dsn)


def test_start_gives_up_with_a_clear_error_when_not_ready_in_time(schema: str) -> None:
    consumer = fast(schema)
    consumer.register("t", lambda ctx: None)
    unreachable = "postgresql://pgtasq:secret@127.0.0.1:9/postgres?connect_timeout=1"
    began = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"not ready within 0\.5 s") as caught:
        consumer.start(unreachable, ready_timeout=0.5)
    assert "registering" in str(caught.value) and "secret" not in str(caught.value)
    assert consumer._thread is None and consumer._engine is None  # stopped, not left behind
    assert time.monotonic() - began < 30  # the ready timeout plus the teardown, not forever


def test_arun_offers_ready_and_ready_raises_what_ended_it(pg_dsn: str, schema: str) -> None:
    async def main() -> None:
        consumer = fast(schema, poll_interval=30.0)
        ran = asyncio.Event()

        @consumer.task("t")
        async def t(ctx: TaskContext) -> None:
            ran.set()

        worker = asyncio.create_task(consumer.arun(pg_dsn))
        await consumer.ready()
        assert _workers(pg_dsn, schema) == 1 and _listening(pg_dsn, schema) == 1
        await asyncio.to_thread(enqueue, pg_dsn, schema, Task("t"))
        await asyncio.wait_for(ran.wait(), 3.0)  # woken by the NOTIFY, not the 30 s poll
        consumer.stop()
        assert (await worker).completed == 1

        broken = fast("t_not_migrated_" + uuid.uuid4().hex[:8])
        broken.register("t", lambda ctx: None)
        failing = asyncio.create_task(broken.arun(pg_dsn))
        with pytest.raises(DatabaseMisconfigured):
            await broken.ready()
        with pytest.raises(DatabaseMisconfigured):
            await failing

    asyncio.run(main())


def test_worker_registers_while_running(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema, queues={"a": 2, "b": 1}, concurrency=7)

    @consumer.task("t")
    def t(ctx: TaskContext) -> None: ...

    consumer.start(pg_dsn)
    try:

        def registered() -> list[tuple[Any, ...]]:
            with psycopg.connect(pg_dsn) as c:
                return c.execute(
                    "SELECT pid, queues, concurrency, heartbeat_at > started_at "
                    f"FROM {schema}.workers"
                ).fetchall()

        wait_for(lambda: bool(registered()) and registered()[0][3])
        import os

        assert registered() == [(os.getpid(), {"a": 2, "b": 1}, 7, True)]
    finally:
        consumer.stop(timeout=10)
    assert registered() == []


def test_rescue_returns_expired_leases(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)

    @consumer.task("t")
    def t(ctx: TaskContext) -> str:
        return f"attempt {ctx.attempt}"

    retry, dead = enqueue(pg_dsn, schema, Task("t", max_attempts=3), Task("t", max_attempts=1))
    with psycopg.connect(pg_dsn, autocommit=True) as c:  # as if a worker died holding both
        c.execute(
            f"UPDATE {schema}.tasks SET status = 'running', attempts = 1, attempted_at = now(), "
            "locked_by = 'ghost', locked_until = now() - interval '1 s'"
        )
    counts = consumer.run(pg_dsn, burst=True)
    assert counts.rescued == 2 and counts.completed == 1
    by_id = {r["id"]: r for r in rows(pg_dsn, schema)}
    assert by_id[retry]["status"] == "completed" and by_id[retry]["result"] == "attempt 2"
    assert by_id[dead]["status"] == "failed"
    for row in by_id.values():
        assert (
            row["errors"][0]["error"] == "LeaseExpired" and "ghost" in row["errors"][0]["message"]
        )


async def test_arun_inside_an_application_loop(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)
    done = asyncio.Event()

    @consumer.task("t")
    async def t(ctx: TaskContext) -> None:
        done.set()

    enqueue(pg_dsn, schema, Task("t"))
    runner = asyncio.create_task(consumer.arun(pg_dsn))
    await asyncio.wait_for(done.wait(), 5)
    consumer.stop()
    counts = await asyncio.wait_for(runner, 10)
    assert counts.completed == 1


def test_result_that_is_not_json_fails_the_task(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)

    @consumer.task("t")
    def t(ctx: TaskContext) -> object:
        return object()

    enqueue(pg_dsn, schema, Task("t", max_attempts=1))
    assert consumer.run(pg_dsn, burst=True).failed == 1
    assert rows(pg_dsn, schema)[0]["errors"][0]["error"] == "TaskValidationError"


def test_missing_tables_are_a_clear_error(pg_dsn: str, fresh_schema: str) -> None:
    consumer = fast(fresh_schema)
    consumer.register("t", lambda ctx: None)
    with pytest.raises(DatabaseMisconfigured, match=r"pgtasq --schema \w+ migrate") as caught:
        consumer.run(pg_dsn, burst=True)
    assert caught.value.reason == "not_migrated"
    assert isinstance(caught.value, ConfigurationError)  # what it raised before


def test_nul_characters_never_break_the_outcome_writer(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)

    @consumer.task("nul_result")
    def nul_result(ctx: TaskContext) -> str:
        return "a\x00b"

    @consumer.task("nul_error")
    def nul_error(ctx: TaskContext) -> None:
        raise ValueError("bad\x00byte")

    enqueue(pg_dsn, schema, Task("nul_result", max_attempts=1), Task("nul_error", max_attempts=1))
    counts = consumer.run(pg_dsn, burst=True)
    assert (counts.completed, counts.failed) == (1, 1)
    first, second = rows(pg_dsn, schema)
    # jsonb cannot hold NUL: the result keeps U+FFFD in its place, and a note says so
    assert first["status"] == "completed" and first["result"] == "a\ufffdb"
    assert [e["error"] for e in first["errors"]] == ["ResultSanitized"]
    assert "1 NUL character" in first["errors"][0]["message"]
    assert second["errors"][0]["message"] == "bad\\x00byte"


def test_a_passed_deadline_fails_without_running(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)
    ran: list[int] = []

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        ran.append(ctx.id)

    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    enqueue(pg_dsn, schema, Task("t", deadline=past, max_attempts=5))
    assert consumer.run(pg_dsn, burst=True).failed == 1
    assert ran == []
    (row,) = rows(pg_dsn, schema)
    assert row["status"] == "failed" and row["attempts"] == 1


def test_burst_runs_retries_that_are_due_at_once(pg_dsn: str, schema: str) -> None:
    consumer = fast(schema)  # retry_delay 0

    @consumer.task("t")
    def t(ctx: TaskContext) -> str:
        if ctx.attempt < 3:
            raise RuntimeError("again")
        return "third time"

    enqueue(pg_dsn, schema, Task("t", max_attempts=3))
    counts = consumer.run(pg_dsn, burst=True)  # one burst is enough
    assert (counts.retried, counts.completed) == (2, 1)
    assert rows(pg_dsn, schema)[0]["result"] == "third time"


def test_an_open_handler_transaction_does_not_stall_other_heartbeats(
    pg_dsn: str, schema: str
) -> None:
    consumer = fast(schema, lease=2.0, heartbeat_interval=0.2, rescue_interval=0.2)
    holding = threading.Event()
    release = threading.Event()

    @consumer.task("hold")
    def hold(ctx: TaskContext) -> None:
        with psycopg.connect(pg_dsn) as conn:
            ctx.complete(conn)  # locks its row until commit
            holding.set()
            release.wait(10)
            conn.commit()

    @consumer.task("long")
    async def long(ctx: TaskContext) -> str:
        await asyncio.sleep(4)  # twice the lease: needs heartbeats meanwhile
        return "done"

    enqueue(pg_dsn, schema, Task("hold"), Task("long", max_attempts=1))
    consumer.start(pg_dsn)
    try:
        assert holding.wait(5)
        time.sleep(4.5)
        release.set()
        wait_for(lambda: all(r["status"] == "completed" for r in rows(pg_dsn, schema)), 10)
    finally:
        consumer.stop(timeout=10)
    long_row = next(r for r in rows(pg_dsn, schema) if r["type"] == "long")
    assert long_row["attempts"] == 1 and long_row["errors"] == []
