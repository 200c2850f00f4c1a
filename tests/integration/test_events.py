"""Watching task events as they happen."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

import pgtasq
from pgtasq import AsyncClient, Client, Consumer, Producer, Task, TaskContext, TaskEvent, _sql


def _consumer(schema: str) -> Consumer:
    consumer = Consumer(schema=schema, retry_delay=lambda i, e: 0.0, poll_interval=0.2, events=True)

    @consumer.task("ok")
    def ok(ctx: TaskContext) -> None: ...

    @consumer.task("bad")
    def bad(ctx: TaskContext) -> None:
        raise RuntimeError("no")

    return consumer


def test_events_follow_tasks_through_their_states(pg_dsn: str, schema: str) -> None:
    got: list[TaskEvent] = []
    listening = threading.Event()

    def watch() -> None:
        with Client(pg_dsn, schema=schema) as client:
            stream = client.events(timeout=2.0)
            listening.set()
            got.extend(stream)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert listening.wait(5)
    import time

    time.sleep(0.3)  # the LISTENs are in place
    with Producer(pg_dsn, schema=schema) as producer:
        ok, bad, doomed = producer.enqueue_many(
            [Task("ok"), Task("bad", max_attempts=2), Task("ok", queue="other")]
        )
    _consumer(schema).run(pg_dsn, burst=True)
    with Client(pg_dsn, schema=schema) as client:
        client.cancel_task(doomed.id)
    watcher.join(15)
    kinds = [e.kind for e in got]
    assert kinds[0] == "enqueued" and sorted(got[0].queues) == ["default", "other"]
    ids_by_kind: dict[str, set[int]] = {}
    for event in got:
        assert event.count is None or event.count == len(event.task_ids)
        ids_by_kind.setdefault(event.kind, set()).update(event.task_ids)
    assert ids_by_kind["started"] == {ok.id, bad.id}
    assert ids_by_kind["completed"] == {ok.id}
    assert ids_by_kind["retried"] == {bad.id}
    assert ids_by_kind["failed"] == {bad.id}
    assert ids_by_kind["cancelled"] == {doomed.id}


async def test_async_events(pg_dsn: str, schema: str) -> None:
    async with AsyncClient(pg_dsn, schema=schema) as client:
        stream = client.events(timeout=3.0)
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.3)
        with Producer(pg_dsn, schema=schema) as producer:
            info = producer.enqueue("ok")
        event = await asyncio.wait_for(first, 5)
        assert event.kind == "enqueued" and event.queues == ["default"]
        cancelled = asyncio.ensure_future(stream.__anext__())
        await client.cancel_task(info.id)
        event = await asyncio.wait_for(cancelled, 5)
        assert (event.kind, event.task_ids) == ("cancelled", [info.id])
        await stream.aclose()


def _foreign_notifications(dsn: str, listener_schema: str, act: Callable[[], None]) -> list[str]:
    """What a connection listening on ``listener_schema``'s wake and events channels receives
    while ``act`` works on another schema: its notifications up to a marker sent on the
    listener's own channel afterwards (commit order, so anything foreign arrives first)."""
    stmts = _sql.statements(listener_schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(stmts.listen.text)
        conn.execute(stmts.listen_events.text)
        act()
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute("SELECT pg_notify(%s, 'marker')", [stmts.channel])
        got = []
        for note in conn.notifies(timeout=5):
            if note.payload == "marker":
                return got
            got.append(f"{note.channel}: {note.payload}")
    raise AssertionError(f"the marker never came; got {got}")


def _enqueue_and_cancel(dsn: str, schema: str) -> Callable[[], None]:
    def act() -> None:
        with Producer(dsn, schema=schema) as producer, Client(dsn, schema=schema) as client:
            client.cancel_task(producer.enqueue("t").id)

    return act


@pytest.fixture
def schema_pair(pg_dsn: str) -> Iterator[Callable[[str, str], tuple[str, str]]]:
    made: list[str] = []

    def make(a: str, b: str) -> tuple[str, str]:
        for name in (a, b):
            made.append(name)
            pgtasq.migrate(pg_dsn, schema=name)
        return a, b

    yield make
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def test_long_schemas_sharing_a_prefix_never_see_each_others_notifications(
    pg_dsn: str, schema_pair: Callable[[str, str], tuple[str, str]]
) -> None:
    base = ("t_" + uuid.uuid4().hex[:12]).ljust(49, "x")  # 55 characters, the first 49 shared
    a, b = schema_pair(base + "_aaaaa", base + "_bbbbb")
    assert _foreign_notifications(pg_dsn, a, _enqueue_and_cancel(pg_dsn, b)) == []
    assert _foreign_notifications(pg_dsn, b, _enqueue_and_cancel(pg_dsn, a)) == []
    # 63 characters, the longest: hashed, still one channel per schema and purpose
    c, d = schema_pair(base.ljust(62, "y") + "c", base.ljust(62, "y") + "d")
    assert _foreign_notifications(pg_dsn, c, _enqueue_and_cancel(pg_dsn, d)) == []


def test_a_schemas_events_are_not_another_schemas_wake_ups(
    pg_dsn: str, schema_pair: Callable[[str, str], tuple[str, str]]
) -> None:
    name = "t_" + uuid.uuid4().hex[:12]
    x, x_events = schema_pair(name, name + "_events")
    assert _foreign_notifications(pg_dsn, x_events, _enqueue_and_cancel(pg_dsn, x)) == []
    assert _foreign_notifications(pg_dsn, x, _enqueue_and_cancel(pg_dsn, x_events)) == []
