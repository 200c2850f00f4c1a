"""Watching task events as they happen."""

from __future__ import annotations

import asyncio
import threading

from pgtasq import AsyncClient, Client, Consumer, Producer, Task, TaskContext, TaskEvent


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
