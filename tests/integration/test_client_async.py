"""AsyncClient on a real PostgreSQL: the same operations as `Client`, awaited, over psycopg's
AsyncConnection and SQLAlchemy's AsyncSession (psycopg and asyncpg)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from pgtasq import (
    AsyncClient,
    ConfigurationError,
    Consumer,
    DatabaseUnavailable,
    PgtasqError,
    Producer,
    Task,
    TaskAlreadyAvailable,
    TaskAlreadyFinalized,
    TaskContext,
    TaskFilter,
    TaskNotFound,
    TaskRunning,
    TaskStatus,
    TaskValidationError,
)
from tests.conftest import count_tasks
from tests.integration.test_client import (
    BAD_TASK_IDS,
    CANCEL_NOTICED_WITHIN,
    CLOSED_PORT_DSN,
    Forwarder,
    all_rows,
    db_now,
    enqueue,
    execute,
    info_of,
    row_of,
    set_state,
    status_of,
)


@pytest.fixture
async def aclient(pg_dsn: str, schema: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(pg_dsn, schema=schema) as client:
        yield client


def _consumer(schema: str, **options: Any) -> Consumer:
    return Consumer(
        schema=schema,
        **{
            "lease": 60.0,
            "heartbeat_interval": 0.2,
            "poll_interval": 0.1,
            "shutdown_timeout": 2.0,
            **options,
        },
    )


STATES = ("pending", "running", "completed", "failed", "cancelled", "missing")
# What each operation does from each state: the table in pgtasq.client's docstring.
TABLE: dict[str, dict[str, str | type[PgtasqError]]] = {
    "cancel": {
        "pending": "cancelled",
        "running": "cancelled",
        "completed": TaskAlreadyFinalized,
        "failed": "cancelled",
        "cancelled": "unchanged",
        "missing": TaskNotFound,
    },
    "retry": {
        "pending": TaskAlreadyAvailable,
        "running": TaskRunning,
        "completed": TaskAlreadyFinalized,
        "failed": "pending",
        "cancelled": "pending",
        "missing": TaskNotFound,
    },
    "delete": {
        "pending": "deleted",
        "running": TaskRunning,
        "completed": "deleted",
        "failed": "deleted",
        "cancelled": "deleted",
        "missing": TaskNotFound,
    },
}


@pytest.mark.parametrize("op", list(TABLE))
async def test_every_operation_from_every_state(
    pg_dsn: str, schema: str, aclient: AsyncClient, op: str
) -> None:
    ids = dict(zip(STATES[:-1], enqueue(pg_dsn, schema, *[Task("t")] * 5), strict=True))
    for state in ("running", "completed", "failed", "cancelled"):
        set_state(pg_dsn, schema, [ids[state]], state)
    ids["missing"] = max(ids.values()) + 1000
    call = {
        "cancel": aclient.cancel_task,
        "retry": aclient.retry_task,
        "delete": aclient.delete_task,
    }
    for state in STATES:
        task_id = ids[state]
        before = row_of(pg_dsn, schema, task_id)
        expected = TABLE[op][state]
        start = db_now(pg_dsn)
        if isinstance(expected, type):
            with pytest.raises(expected) as raised:
                await call[op](task_id)
            assert raised.value.task_id == task_id  # type: ignore[attr-defined]
            assert row_of(pg_dsn, schema, task_id) == before, state
            continue
        assert before is not None
        old = info_of(pg_dsn, schema, task_id)
        info = await call[op](task_id)
        if expected == "deleted":
            assert info == old and row_of(pg_dsn, schema, task_id) is None
            continue
        assert info == info_of(pg_dsn, schema, task_id), state
        if expected == "unchanged":
            assert row_of(pg_dsn, schema, task_id) == before
        elif expected == "cancelled":
            assert info.status is TaskStatus.CANCELLED and info.finalized_at is not None
            assert start <= info.finalized_at and info.locked_until is None
            assert info.locked_by is None
        else:
            assert info.status is TaskStatus.PENDING and info.finalized_at is None
            assert start <= info.run_at and info.max_attempts > info.attempts


async def test_cancel_reaches_a_handler_running_in_the_same_loop(
    pg_dsn: str, schema: str, aclient: AsyncClient
) -> None:
    consumer = _consumer(schema)
    started, cancelled = asyncio.Event(), asyncio.Event()
    stopped: list[float] = []

    @consumer.task("t")
    async def handler(ctx: TaskContext) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.append(time.monotonic())
            cancelled.set()
            raise
        return "not reached"

    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    runner = asyncio.create_task(consumer.arun(pg_dsn))
    try:
        await asyncio.wait_for(started.wait(), 5)
        with pytest.raises(TaskRunning):
            await aclient.retry_task(task_id)
        with pytest.raises(TaskRunning):
            await aclient.delete_task(task_id)
        cancel_at = time.monotonic()
        info = await aclient.cancel_task(task_id)
        assert info.status is TaskStatus.CANCELLED
        await asyncio.wait_for(cancelled.wait(), CANCEL_NOTICED_WITHIN)
    finally:
        consumer.stop()
        counts = await asyncio.wait_for(runner, 10)
    assert stopped and stopped[0] - cancel_at < CANCEL_NOTICED_WITHIN
    assert (counts.completed, counts.failed) == (0, 0)
    assert info_of(pg_dsn, schema, task_id) == info


async def test_a_cancel_that_changes_nothing_reports_the_row_it_decided_on(
    pg_dsn: str, schema: str
) -> None:
    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    set_state(pg_dsn, schema, [task_id], "cancelled")
    sent: list[str] = []

    class Meanwhile(psycopg.AsyncCursor[Any]):
        """Another session retries the task just before any follow-up statement."""

        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            sent.append(str(query))
            if len(sent) > 1:
                async with AsyncClient(pg_dsn, schema=schema) as other:
                    await other.retry_task(task_id)
            return await super().execute(query, params, **kwargs)

    conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True, cursor_factory=Meanwhile)
    async with conn:
        info = await AsyncClient(schema=schema).cancel_task(task_id, conn=conn)
    assert info.status is TaskStatus.CANCELLED and len(sent) == 1
    assert info == info_of(pg_dsn, schema, task_id)


async def test_connect_timeout_bounds_the_wait_for_a_dead_server(pg_dsn: str, schema: str) -> None:
    async with AsyncClient(CLOSED_PORT_DSN, connect_timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL") as e:
            await client.list_queues()
        assert time.monotonic() - started < 5  # 0.5 s asked; generous for a loaded machine
        assert "secret" not in str(e.value) and "127.0.0.1" in str(e.value)
    async with AsyncClient(pg_dsn, schema=schema, connect_timeout=0.5) as client:
        assert await client.list_queues() == []
    for bad in (0, -1, float("nan"), "1", None):
        with pytest.raises(ConfigurationError, match="connect_timeout must be"):
            AsyncClient(pg_dsn, connect_timeout=bad)  # type: ignore[arg-type]


async def test_after_a_failed_connect_the_next_use_tries_again(pg_dsn: str, schema: str) -> None:
    server = Forwarder(pg_dsn)
    try:
        async with AsyncClient(server.dsn, schema=schema, connect_timeout=0.5) as client:
            for _ in range(2):
                with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL"):
                    await client.list_queues()
            server.start()
            assert await client.list_queues() == []
            await client.close()
            assert await client.list_queues() == []
    finally:
        server.close()


async def test_on_the_callers_async_connection(pg_dsn: str, schema: str) -> None:
    pending, completed = enqueue(pg_dsn, schema, Task("t"), Task("t"))
    set_state(pg_dsn, schema, [completed], "completed")
    client = AsyncClient(schema=schema)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        assert (await client.cancel_task(pending, conn=conn)).status is TaskStatus.CANCELLED
        assert status_of(pg_dsn, schema, pending) == "pending"
        await conn.rollback()
        assert (await client.get_task(pending, conn=conn)).status is TaskStatus.PENDING
        for call, task_id, error in [
            (client.cancel_task, completed, TaskAlreadyFinalized),
            (client.delete_task, pending + 99, TaskNotFound),
            (client.retry_task, pending, TaskAlreadyAvailable),
        ]:
            with pytest.raises(error):
                await call(task_id, conn=conn)
            assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert await client.delete_tasks(TaskFilter().statuses("pending"), conn=conn) == 1
        await conn.commit()
    assert count_tasks(pg_dsn, schema) == 1
    with pytest.raises(ConfigurationError, match="no DSN"):
        await client.list_queues()
    with psycopg.connect(pg_dsn) as sync_conn:
        with pytest.raises(TypeError, match="synchronous"):
            await client.get_task(completed, conn=sync_conn)


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_sqlalchemy_async_session(pg_dsn: str, schema: str, driver: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        ids = [i.id for i in producer.enqueue_many([Task("t", n) for n in range(50)])]
        for n in range(3):  # a few batches: created_at differs between them
            ids += [i.id for i in producer.enqueue_many([Task("u", n)] * 10)]
    engine = create_async_engine(f"postgresql+{driver}://" + pg_dsn.removeprefix("postgresql://"))
    client = AsyncClient(schema=schema)
    try:
        async with AsyncSession(engine) as session:
            f = TaskFilter().order_by("created_at", "desc").limit(7)
            seen: list[int] = []
            page = await client.list_tasks(f, conn=session)
            while True:
                assert page.total == 80
                seen += [t.id for t in page.tasks]
                if page.next_cursor is None:
                    break
                page = await client.list_tasks(f.after(page.next_cursor), conn=session)
            created = {r["id"]: r["created_at"] for r in all_rows(pg_dsn, schema)}
            expected = sorted(ids, key=lambda i: (created[i], i), reverse=True)
            assert seen == expected
            assert (await client.cancel_task(ids[0], conn=session)).status is TaskStatus.CANCELLED
            assert await client.cancel_tasks(TaskFilter().types("u"), conn=session) == 30
            assert await client.retry_tasks(TaskFilter().ids(ids[0]), conn=session) == 1
            with pytest.raises(TaskNotFound):
                await client.retry_task(ids[-1] + 1, conn=session)
            await session.commit()
        assert count_tasks(pg_dsn, schema, status="cancelled") == 30
        assert status_of(pg_dsn, schema, ids[0]) == "pending"
    finally:
        await engine.dispose()


async def test_list_pages_and_bulk(pg_dsn: str, schema: str, aclient: AsyncClient) -> None:
    ids = enqueue(pg_dsn, schema, *[Task("t", queue=("a", "b")[n % 2]) for n in range(500)])
    seen: list[int] = []
    f = TaskFilter().queues("a").order_by("id", "desc").limit(60)
    page = await aclient.list_tasks(f)
    while page.next_cursor is not None:
        seen += [t.id for t in page.tasks]
        page = await aclient.list_tasks(f.after(page.next_cursor))
    seen += [t.id for t in page.tasks]
    assert seen == sorted(ids[0::2], reverse=True) and page.total == 250
    full = [await aclient.list_tasks(f.limit(125))]  # 250 = two full pages, no third
    assert full[0].next_cursor is not None
    full.append(await aclient.list_tasks(f.limit(125).after(full[0].next_cursor)))
    assert [len(p.tasks) for p in full] == [125, 125] and full[1].next_cursor is None
    assert [t.id for p in full for t in p.tasks] == seen

    steps: list[int] = []
    assert await aclient.cancel_tasks(TaskFilter().queues("a"), batch_size=7, progress=steps.append)
    assert steps == [min(7 * k, 250) for k in range(1, 250 // 7 + 2)]
    start = db_now(pg_dsn)
    assert await aclient.retry_tasks(TaskFilter().statuses("cancelled"), batch_size=100) == 250
    retried = [r for r in all_rows(pg_dsn, schema) if r["queue"] == "a"]
    assert len(retried) == 250
    assert all(r["run_at"] >= start and r["status"] == "pending" for r in retried)
    set_state(pg_dsn, schema, ids[:4], "running")
    assert await aclient.delete_tasks(TaskFilter(), batch_size=33) == 496
    assert [r["id"] for r in all_rows(pg_dsn, schema)] == ids[:4]
    with pytest.raises(ValueError, match="batch_size"):
        await aclient.delete_tasks(TaskFilter(), batch_size=0)


async def test_the_page_and_the_total_agree_while_others_write(pg_dsn: str, schema: str) -> None:
    ids = enqueue(pg_dsn, schema, *[Task("t")] * 5)
    sent: list[str] = []

    class Meanwhile(psycopg.AsyncCursor[Any]):
        """Another session enqueues and deletes before any statement after the first one."""

        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            sent.append(str(query))
            if len(sent) > 1:
                enqueue(pg_dsn, schema, Task("t"), Task("t"))
                execute(pg_dsn, f"DELETE FROM {schema}.tasks WHERE id = %s", (ids.pop(0),))
            return await super().execute(query, params, **kwargs)

    conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True, cursor_factory=Meanwhile)
    async with conn:
        page = await AsyncClient(schema=schema).list_tasks(TaskFilter().limit(50), conn=conn)
    assert page.total == len(page.tasks) == 5 and [t.id for t in page.tasks] == ids
    assert len(sent) == 1


async def test_bulk_progress_reports_each_count_once(
    pg_dsn: str, schema: str, aclient: AsyncClient
) -> None:
    enqueue(pg_dsn, schema, *[Task("t")] * 30)
    calls: dict[str, list[int]] = {"cancel": [], "retry": [], "delete": [], "clean": []}
    f = TaskFilter()
    assert await aclient.cancel_tasks(f, batch_size=10, progress=calls["cancel"].append) == 30
    assert await aclient.retry_tasks(f, batch_size=10, progress=calls["retry"].append) == 30
    await aclient.cancel_tasks(f)
    execute(pg_dsn, f"UPDATE {schema}.tasks SET finalized_at = now() - interval '2 days'")
    assert await aclient.clean(batch_size=10, progress=calls["clean"].append) == 30
    enqueue(pg_dsn, schema, *[Task("t")] * 30)
    assert await aclient.delete_tasks(f, batch_size=10, progress=calls["delete"].append) == 30
    assert calls == {key: [10, 20, 30] for key in calls}  # 30: the last batch is empty
    none: list[int] = []
    assert await aclient.delete_tasks(f, batch_size=10, progress=none.append) == 0
    assert none == [0]


async def test_queues_and_workers(pg_dsn: str, schema: str, aclient: AsyncClient) -> None:
    enqueue(pg_dsn, schema, Task("t", queue="a"), Task("t", queue="b"), Task("t", queue="b"))
    await aclient.pause_queue("b")
    consumer = _consumer(schema, queues={"a": 3, "b": 1}, concurrency=2)
    release = asyncio.Event()
    running: set[int] = set()

    @consumer.task("t")
    async def handler(ctx: TaskContext) -> None:
        running.add(ctx.id)
        await release.wait()

    queues = {q.name: q for q in await aclient.list_queues()}
    assert (queues["a"].pending, queues["a"].paused) == (1, False)
    assert (queues["b"].pending, queues["b"].paused) == (2, True)
    assert await aclient.list_workers() == []
    runner = asyncio.create_task(consumer.arun(pg_dsn))
    try:
        for _ in range(300):
            workers = await aclient.list_workers()
            if workers and workers[0].running and running:  # claimed, and the handler is in
                break
            await asyncio.sleep(0.01)
        (worker,) = workers
        assert (worker.host, worker.pid) == (socket.gethostname(), os.getpid())
        assert (worker.queues, worker.concurrency) == ({"a": 3, "b": 1}, 2)
        assert worker.running == sorted(running) and len(running) == 1  # b is paused
        assert worker.started_at <= worker.heartbeat_at
        assert {q.name: q.running for q in await aclient.list_queues()} == {"a": 1, "b": 0}
        await aclient.resume_queue("b")
        for _ in range(300):
            if len(running) == 2:  # the worker's concurrency is full
                break
            await asyncio.sleep(0.01)
        assert len(running) == 2
        release.set()
        for _ in range(300):
            if count_tasks(pg_dsn, schema, status="completed") == 3:
                break
            await asyncio.sleep(0.01)
    finally:
        release.set()
        consumer.stop()
        counts = await asyncio.wait_for(runner, 10)
    assert counts.completed == 3
    assert await aclient.list_workers() == []
    assert not any(q.paused for q in await aclient.list_queues())
    history = await aclient.queue_history()
    assert sum(d.processed for d in history) == 3


@pytest.mark.parametrize("task_id", BAD_TASK_IDS, ids=repr)
async def test_a_bad_task_id_is_refused_before_any_sql(
    pg_dsn: str, schema: str, task_id: Any
) -> None:
    (kept,) = enqueue(pg_dsn, schema, Task("t"))
    client = AsyncClient(schema=schema)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await conn.execute("SELECT 1")  # a transaction of the caller's is open
        for call in (client.get_task, client.cancel_task, client.retry_task, client.delete_task):
            with pytest.raises(TaskValidationError, match="task_id: expected a task id"):
                await call(task_id, conn=conn)
            assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert (await client.get_task(kept, conn=conn)).id == kept
    async with AsyncClient(pg_dsn, schema=schema) as own:
        with pytest.raises(TaskValidationError):
            await own.get_task(task_id)
