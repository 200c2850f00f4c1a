"""Inline mode (`pgtasq.testing.InlineProducer`): handlers run at enqueue, no database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pgtasq import ConfigurationError, Consumer, DuplicateTask, Task, TaskContext, TaskStatus
from pgtasq.testing import AsyncInlineProducer, InlineProducer


def make_consumer(seen: list[Any]) -> Consumer:
    consumer = Consumer()

    @consumer.task("sync.echo")
    def echo(ctx: TaskContext) -> Any:
        seen.append(("sync", ctx.payload, ctx.attempt))
        return {"echo": ctx.payload}

    @consumer.task("async.echo")
    async def aecho(ctx: TaskContext) -> Any:
        await asyncio.sleep(0)
        seen.append(("async", ctx.payload))
        return [ctx.payload]

    @consumer.task("boom")
    def boom(ctx: TaskContext) -> None:
        raise ValueError("no luck")

    @consumer.middleware
    async def tag(ctx: TaskContext, call_next: Any) -> Any:
        seen.append(("mw", ctx.type))
        return await call_next(ctx)

    return consumer


def test_enqueue_runs_the_handler_through_middleware_before_returning() -> None:
    seen: list[Any] = []
    producer = InlineProducer(make_consumer(seen))
    info = producer.enqueue("sync.echo", {"n": (1, 2)}, queue="mail")
    # The payload went through JSON as through the database: the tuple became a list.
    assert seen == [("mw", "sync.echo"), ("sync", {"n": [1, 2]}, 1)]
    assert info.status is TaskStatus.COMPLETED
    assert info.result == {"echo": {"n": [1, 2]}}
    assert info.queue == "mail"
    assert info.finalized_at is not None
    assert producer.tasks == [info]


def test_async_handlers_run_from_sync_code_and_async_code() -> None:
    seen: list[Any] = []
    consumer = make_consumer(seen)
    assert InlineProducer(consumer).enqueue("async.echo", 3).result == [3]

    async def main() -> None:
        producer = AsyncInlineProducer(consumer)
        infos = await producer.enqueue_many([Task("async.echo", 4), Task("sync.echo", 5)])
        assert [i.result for i in infos] == [[4], {"echo": 5}]
        assert [i.id for i in producer.tasks] == [1, 2]

    asyncio.run(main())
    assert ("async", 4) in seen and ("sync", 5, 1) in seen


def test_a_failing_handler_raises_or_is_recorded_as_failed() -> None:
    consumer = make_consumer([])
    with pytest.raises(ValueError, match="no luck"):
        InlineProducer(consumer).enqueue("boom")
    quiet = InlineProducer(consumer, raise_errors=False)
    info = quiet.enqueue("boom")
    assert info.status is TaskStatus.FAILED
    assert info.errors[0]["error"] == "ValueError: no luck"
    assert quiet.tasks == [info]


def test_an_idempotency_key_runs_once() -> None:
    seen: list[Any] = []
    producer = InlineProducer(make_consumer(seen))
    first = producer.enqueue("sync.echo", 1, idempotency_key="k")
    again = producer.enqueue("sync.echo", 2, idempotency_key="k")
    assert again.id == first.id and not again.created and again.payload == 1
    with pytest.raises(DuplicateTask):
        producer.enqueue("sync.echo", 3, idempotency_key="k", on_conflict="raise")
    assert len([s for s in seen if s[0] == "sync"]) == 1
    producer.clear()
    assert producer.tasks == []
    assert producer.enqueue("sync.echo", 4, idempotency_key="k").created


def test_a_unique_key_is_held_for_its_period_only() -> None:
    seen: list[Any] = []
    producer = InlineProducer(make_consumer(seen))
    first = producer.enqueue("sync.echo", 1, unique_key="u")
    assert first.unique_key == "u" and first.unique_until is None
    assert producer.enqueue("sync.echo", 2, unique_key="u").created  # final: free at once
    held = producer.enqueue("sync.echo", 3, unique_key="p", unique_for=3600)
    again = producer.enqueue("sync.echo", 4, unique_key="p", on_conflict="update")
    assert again.id == held.id and not again.created and again.payload == 3
    with pytest.raises(DuplicateTask) as raised:
        producer.enqueue("sync.echo", 5, unique_key="p", on_conflict="raise")
    assert raised.value.unique_key == "p"
    assert [s[1] for s in seen if s[0] == "sync"] == [1, 2, 3]
    producer.clear()
    assert producer.enqueue("sync.echo", 6, unique_key="p").created


def test_mistakes_are_clear_errors() -> None:
    producer = InlineProducer(make_consumer([]))
    with pytest.raises(ConfigurationError, match="no handler for task type 'nope'"):
        producer.enqueue("nope")
    with pytest.raises(Exception, match="payload"):
        producer.enqueue("sync.echo", {1, 2})  # a set is not JSON
    # As Producer's: all the tasks are checked before the first one runs.
    with pytest.raises(ConfigurationError, match="'nope'"):
        producer.enqueue_many([Task("sync.echo", 1), Task("nope")])
    assert producer.tasks == []

    async def inside_a_loop() -> None:
        with pytest.raises(ConfigurationError, match="AsyncInlineProducer"):
            producer.enqueue("sync.echo")

    asyncio.run(inside_a_loop())


def test_the_testing_module_exports_a_sorted_all() -> None:
    import pgtasq.testing

    names = pgtasq.testing.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    assert all(getattr(pgtasq.testing, n) is not None for n in names)
