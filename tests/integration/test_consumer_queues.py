"""How a worker shares its claims between queues: weighted (6/3/1 -> 60/30/10 %) or strict.

One worker, concurrency 1, batch 1: every claim is one task and the handlers run in claim
order, so the order of runs is the order of the queue choices.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from pgtasq import Consumer, Producer, Task, TaskContext

WEIGHTS = {"critical": 6, "default": 3, "low": 1}
RUNS = 2000
TOLERANCE_POINTS = 5.0  # 4.5 standard deviations or more for each queue at 2000 runs


def enqueue(dsn: str, schema: str, per_queue: int) -> None:
    """``per_queue`` tasks in each queue, the least important queue first (lowest ids)."""
    with psycopg.connect(dsn) as conn:
        Producer(schema=schema).enqueue_many(
            [Task("job", queue=q) for q in reversed(WEIGHTS) for _ in range(per_queue)], conn=conn
        )


def consumer_recording(schema: str, order: list[str], *, strict: bool, stop_after: int) -> Consumer:
    consumer = Consumer(
        schema=schema,
        queues=WEIGHTS,
        strict=strict,
        concurrency=1,
        batch_size=1,
        poll_interval=0.1,
        listen=False,
    )

    @consumer.task("job")
    async def job(ctx: TaskContext) -> None:
        order.append(ctx.queue)
        if len(order) == stop_after:
            consumer.stop()

    return consumer


def test_weighted_queues_share_the_claims_by_weight(pg_dsn: str, schema: str) -> None:
    # Enough in every queue that none runs dry before the run ends (critical needs ~1200).
    enqueue(pg_dsn, schema, per_queue=RUNS)
    order: list[str] = []
    consumer = consumer_recording(schema, order, strict=False, stop_after=RUNS)
    counts = consumer.run(pg_dsn, burst=True, handle_signals=False)

    assert len(order) == RUNS and counts.completed == RUNS
    shares = {queue: 100 * n / RUNS for queue, n in Counter(order).items()}
    total = sum(WEIGHTS.values())
    for queue, weight in WEIGHTS.items():
        expected = 100 * weight / total
        assert abs(shares.get(queue, 0.0) - expected) <= TOLERANCE_POINTS, shares
    # No queue waits for the others to drain: each is served from the start.
    assert set(order[:100]) == set(WEIGHTS)


def test_strict_queues_run_the_heaviest_queue_first(pg_dsn: str, schema: str) -> None:
    per_queue = 20
    enqueue(pg_dsn, schema, per_queue=per_queue)
    order: list[str] = []
    consumer = consumer_recording(schema, order, strict=True, stop_after=-1)
    counts = consumer.run(pg_dsn, burst=True, handle_signals=False)

    assert counts.completed == 3 * per_queue
    assert order == ["critical"] * per_queue + ["default"] * per_queue + ["low"] * per_queue


def test_idle_worker_on_many_queues_polls_with_few_statements(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queues = [f"q{i}" for i in range(2000)]
    statements = 0
    execute = psycopg.AsyncCursor.execute

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal statements
        statements += 1
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counting)
    done = threading.Event()
    consumer = Consumer(schema=schema, queues=queues, poll_interval=0.5)

    @consumer.task("job")
    async def job(ctx: TaskContext) -> None:
        done.set()

    consumer.start(pg_dsn)  # returns once registered, listening, the first poll done
    try:
        before = statements
        time.sleep(2.0)  # four polls, two heartbeats
        idle = statements - before
        # Still claims from any of its queues, woken by the NOTIFY.
        Producer(pg_dsn, schema=schema).enqueue("job", queue="q1234")
        assert done.wait(10.0)
    finally:
        consumer.stop(timeout=10.0)
    # One claim statement per queue per poll sent ~4000 here; a probe of all the queues
    # per poll, and the heartbeat, stay in the tens.
    assert idle <= 40, idle
