"""Watching task events as they happen."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from pgtasq import (
    AsyncClient,
    Client,
    Consumer,
    EventStream,
    Producer,
    Task,
    TaskContext,
    TaskEvent,
    TaskFilter,
    _sql,
)
from pgtasq import _client_ops as ops
from tests.conftest import clone_schema, count_tasks


def _consumer(schema: str) -> Consumer:
    consumer = Consumer(schema=schema, retry_delay=lambda i, e: 0.0, poll_interval=0.2, events=True)

    @consumer.task("ok")
    def ok(ctx: TaskContext) -> None: ...

    @consumer.task("bad")
    def bad(ctx: TaskContext) -> None:
        raise RuntimeError("no")

    return consumer


def test_events_follow_tasks_through_their_states(pg_dsn: str, schema: str) -> None:
    with Client(pg_dsn, schema=schema) as client, client.events(timeout=2.0) as stream:
        # Listening already: everything committed from here on is seen.
        with Producer(pg_dsn, schema=schema) as producer:
            ok, bad, doomed = producer.enqueue_many(
                [Task("ok"), Task("bad", max_attempts=2), Task("ok", queue="other")]
            )
        _consumer(schema).run(pg_dsn, burst=True)
        client.cancel_task(doomed.id)
        got = list(stream)  # until 2 s pass without an event
    kinds = [e.kind for e in got]
    assert kinds[0] == "enqueued" and sorted(got[0].queues) == ["default", "other"]
    ids_by_kind: dict[str, set[int]] = {}
    for event in got:
        assert event.count == len(event.task_ids)
        ids_by_kind.setdefault(event.kind, set()).update(event.task_ids)
    assert ids_by_kind["started"] == {ok.id, bad.id}
    assert ids_by_kind["completed"] == {ok.id}
    assert ids_by_kind["retried"] == {bad.id}
    assert ids_by_kind["failed"] == {bad.id}
    assert ids_by_kind["cancelled"] == {doomed.id}


async def test_async_events(pg_dsn: str, schema: str) -> None:
    async with AsyncClient(pg_dsn, schema=schema) as client, client.events(timeout=3.0) as stream:
        with Producer(pg_dsn, schema=schema) as producer:
            info = producer.enqueue("ok")
        event = await asyncio.wait_for(stream.__anext__(), 5)
        assert event.kind == "enqueued" and event.queues == ["default"]
        cancelled = asyncio.ensure_future(stream.__anext__())
        await client.cancel_task(info.id)
        event = await asyncio.wait_for(cancelled, 5)
        assert (event.kind, event.task_ids) == ("cancelled", [info.id])
    with pytest.raises(StopAsyncIteration):  # closed with the block
        await stream.__anext__()


def _listeners(dsn: str, schema: str) -> int:
    """Sessions whose last statement was the LISTEN on ``schema``'s events channel."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
            [_sql.statements(schema).listen_events.text],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_block_is_listening_from_its_start_to_its_end(pg_dsn: str, schema: str) -> None:
    with Client(pg_dsn, schema=schema) as client:
        with client.events(timeout=5.0) as stream:
            assert stream.listening and _listeners(pg_dsn, schema) == 1
            with Producer(pg_dsn, schema=schema) as producer:
                info = producer.enqueue("t")
            event = next(stream)
            assert (event.kind, event.task_ids) == ("enqueued", [info.id])
        assert not stream.listening and _listeners(pg_dsn, schema) == 0
        assert list(stream) == []  # closed


def test_plain_iteration_connects_at_the_first_event_asked_for(pg_dsn: str, schema: str) -> None:
    """Without ``with``: nothing happens until iterated, and a loop left with break closes
    the connection once the stream is dropped."""
    got: list[TaskEvent] = []
    with Client(pg_dsn, schema=schema) as client:
        stream = client.events(timeout=5.0)
        assert not stream.listening and _listeners(pg_dsn, schema) == 0

        def watch(events: EventStream) -> None:
            for event in events:
                got.append(event)
                break

        watcher = threading.Thread(target=watch, args=(stream,))
        watcher.start()
        _wait_for(lambda: _listeners(pg_dsn, schema) == 1)  # the LISTEN is in place
        with Producer(pg_dsn, schema=schema) as producer:
            info = producer.enqueue("t")
        watcher.join(10)
        assert not watcher.is_alive()
        assert [(e.kind, e.task_ids) for e in got] == [("enqueued", [info.id])]
        del stream
        gc.collect()
        assert _listeners(pg_dsn, schema) == 0


async def test_async_plain_iteration(pg_dsn: str, schema: str) -> None:
    async with AsyncClient(pg_dsn, schema=schema) as client:
        stream = client.events(timeout=5.0)
        first = asyncio.ensure_future(stream.__anext__())
        while _listeners(pg_dsn, schema) == 0:  # the LISTEN is in place
            assert not first.done(), first
            await asyncio.sleep(0.01)
        with Producer(pg_dsn, schema=schema) as producer:
            info = producer.enqueue("t")
        event = await asyncio.wait_for(first, 5)
        assert (event.kind, event.task_ids) == ("enqueued", [info.id])
        await stream.aclose()
        assert _listeners(pg_dsn, schema) == 0


def test_events_end_after_the_timeout_without_an_event(pg_dsn: str, schema: str) -> None:
    with Client(pg_dsn, schema=schema) as client, client.events(timeout=0.2) as stream:
        assert list(stream) == []


# -- single and bulk operations send the same events, and every event has its count --------


@contextlib.contextmanager
def _listening(pg_dsn: str, schema: str) -> Iterator[Callable[[], list[TaskEvent]]]:
    """LISTEN on both of the schema's channels (in place when this returns); the callable
    returns the events received so far, as `Client.events` parses them."""
    stmts = _sql.statements(schema)
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute(stmts.listen.text)
        listener.execute(stmts.listen_events.text)

        def received() -> list[TaskEvent]:
            notes = listener.notifies(timeout=0.5)
            events = [ops.parse_event(stmts, n.channel, n.payload) for n in notes]
            return [e for e in events if e is not None]

        yield received


def test_enqueued_events_carry_count_and_ids_on_every_path(pg_dsn: str, schema: str) -> None:
    producer = Producer(schema=schema)
    with _listening(pg_dsn, schema) as received, psycopg.connect(pg_dsn) as conn:
        # Three single enqueues in one transaction: three events, not one folded notification.
        singles = [producer.enqueue("t", i, queue="q1", conn=conn) for i in range(3)]
        keyed = producer.enqueue_many(
            [Task("t", queue="q2", idempotency_key="k"), Task("t", queue="q1")], conn=conn
        )  # one INSERT … unnest
        copied = producer.enqueue_many([Task("t", queue="q3") for _ in range(400)], conn=conn)
        conn.commit()
        got = received()
    assert [e.kind for e in got] == ["enqueued"] * 5
    assert [(e.count, e.task_ids, e.queues) for e in got[:3]] == [
        (1, [info.id], ["q1"]) for info in singles
    ]
    assert (got[3].count, got[3].task_ids, got[3].queues) == (
        2,
        sorted(i.id for i in keyed),
        ["q1", "q2"],
    )
    # 400 tasks: all counted, the first 300 ids listed.
    assert (got[4].count, got[4].queues) == (400, ["q3"])
    assert got[4].task_ids == [i.id for i in copied][: _sql.EVENT_IDS_MAX]
    assert sum(e.count for e in got) == 405 == count_tasks(pg_dsn, schema)


def test_single_and_bulk_operations_send_the_same_events(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        infos = producer.enqueue_many([Task("t", queue=f"q{i % 2}") for i in range(6)])
    a, b, c, d, e, f = (i.id for i in infos)
    seen: dict[str, list[tuple[str, int, list[int]]]] = {}
    with Client(pg_dsn, schema=schema) as client, _listening(pg_dsn, schema) as received:
        client.cancel_task(a)
        client.cancel_tasks(TaskFilter().ids(b, c))
        seen["cancel"] = [(x.kind, x.count, x.task_ids) for x in received()]
        client.retry_task(a)
        client.retry_tasks(TaskFilter().ids(b, c))
        seen["retry"] = [(x.kind, x.count, x.task_ids) for x in received()]
        client.delete_task(d)
        client.delete_tasks(TaskFilter().ids(e, f))
        seen["delete"] = [(x.kind, x.count, x.task_ids) for x in received()]
    assert seen == {
        "cancel": [("cancelled", 1, [a]), ("cancelled", 2, [b, c])],
        "retry": [("enqueued", 1, [a]), ("enqueued", 2, [b, c])],
        "delete": [("deleted", 1, [d]), ("deleted", 2, [e, f])],
    }


def test_odd_notifications_are_not_events(pg_dsn: str, schema: str) -> None:
    stmts = _sql.statements(schema)
    events = _sql.events_channel(schema)
    for channel, payload in [
        (stmts.channel, '["default"]'),
        (stmts.channel, '"*"'),
        (stmts.channel, '{"queues": ["q"], "count": "many"}'),
        (events, '{"event": "deleted", "count": 1, "ids": 7}'),
        (events, '{"event": 1, "count": 1}'),
        (events, "not json"),
    ]:
        assert ops.parse_event(stmts, channel, payload) is None
    assert ops.parse_event(
        stmts, stmts.channel, '{"queues": "*", "count": 3, "ids": [1, 2, 3]}'
    ) == TaskEvent("enqueued", 3, [1, 2, 3], [])


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
            clone_schema(pg_dsn, name)
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
