"""Daily counters written with the outcomes, the stats snapshot, and the cleaner."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from pgtasq import Client, Consumer, Producer, Task, TaskContext


def _consumer(schema: str) -> Consumer:
    consumer = Consumer(
        schema=schema, queues=["default", "mail"], retry_delay=lambda i, e: 0.0, poll_interval=0.2
    )

    @consumer.task("ok")
    def ok(ctx: TaskContext) -> None: ...

    @consumer.task("flaky")
    def flaky(ctx: TaskContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("once")

    @consumer.task("bad")
    def bad(ctx: TaskContext) -> None:
        raise RuntimeError("always")

    return consumer


def test_counters_and_snapshot(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many(
            [Task("ok"), Task("ok", queue="mail"), Task("flaky"), Task("bad", max_attempts=2)]
        )
        producer.enqueue("never-run", queue="other")
    _consumer(schema).run(pg_dsn, burst=True)
    with Client(pg_dsn, schema=schema) as client:
        history = {(d.queue, d.day): d for d in client.queue_history()}
        assert len(history) == 2
        default = next(d for (q, _), d in history.items() if q == "default")
        mail = next(d for (q, _), d in history.items() if q == "mail")
        # default: ok + flaky completed; flaky once and bad once retried; bad failed at the end
        assert (default.completed, default.retried, default.failed) == (2, 2, 1)
        assert default.processed == 5
        assert (mail.completed, mail.retried, mail.failed) == (1, 0, 0)
        queues = {q.name: q for q in client.list_queues()}
        assert (queues["default"].processed_today, queues["default"].failed_today) == (5, 3)
        assert queues["default"].processed_total == 5
        stats = client.stats()
        assert stats.enqueued == 5
        assert (stats.completed, stats.failed, stats.retried) == (3, 1, 2)
        assert (stats.pending_now, stats.completed_now, stats.failed_now) == (1, 3, 1)
        assert stats.started == 6  # every attempt made


def test_rescue_counts_too(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("ok", max_attempts=1), Task("ok", max_attempts=3)])
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(
            f"UPDATE {schema}.tasks SET status = 'running', attempts = 1, attempted_at = now(), "
            "locked_by = 'ghost', locked_until = now() - interval '1 s'"
        )
    _consumer(schema).run(pg_dsn, burst=True)
    with Client(pg_dsn, schema=schema) as client:
        (day,) = client.queue_history()
        assert (day.failed, day.retried, day.completed) == (1, 1, 1)


def _finish_old(dsn: str, schema: str, ids: list[int], age: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            f"UPDATE {schema}.tasks SET status = 'completed', finalized_at = now() - %s::interval "
            "WHERE id = ANY(%s)",
            (age, ids),
        )


def test_cleaner_honours_retention(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        old = [i.id for i in producer.enqueue_many([Task("t") for _ in range(25)])]
        kept = producer.enqueue("t", retention=timedelta(days=30)).id
        fresh = producer.enqueue("t").id
        pending = producer.enqueue("t").id
    _finish_old(pg_dsn, schema, [*old, kept], "2 days")
    _finish_old(pg_dsn, schema, [fresh], "1 minute")
    seen: list[int] = []
    with Client(pg_dsn, schema=schema) as client:
        deleted = client.clean(batch_size=10, progress=seen.append)
        assert deleted == 25 and seen == [10, 20, 25]
        remaining = {t.id for t in client.list_tasks().tasks}
        assert remaining == {kept, fresh, pending}
        assert client.clean(retention=30.0) == 1  # fresh is older than 30 s
        assert client.clean() == 0


def test_only_one_cleaner_at_a_time(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        ids = [i.id for i in producer.enqueue_many([Task("t") for _ in range(5)])]
    _finish_old(pg_dsn, schema, ids, "2 days")
    lock = f"hashtext('pgtasq.clean.{schema}')"
    with psycopg.connect(pg_dsn) as holder:
        holder.execute(f"SELECT pg_advisory_xact_lock({lock})")  # another cleaner is at work
        with Client(pg_dsn, schema=schema) as client:
            assert client.clean() == 0
        holder.rollback()
    with Client(pg_dsn, schema=schema) as client:
        assert client.clean() == 5


def test_workers_clean_periodically(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        ids = [i.id for i in producer.enqueue_many([Task("t") for _ in range(3)])]
    _finish_old(pg_dsn, schema, ids, "2 days")
    consumer = Consumer(schema=schema, clean_interval=0.1, poll_interval=0.2)
    consumer.register("t", lambda ctx: None)
    consumer.start(pg_dsn)
    try:
        import time

        deadline = time.monotonic() + 5
        remaining: Any = None
        while time.monotonic() < deadline:
            with psycopg.connect(pg_dsn) as c:
                remaining = c.execute(f"SELECT count(*) FROM {schema}.tasks").fetchone()
            if remaining == (0,):
                break
            time.sleep(0.1)
        assert remaining == (0,)
    finally:
        consumer.stop(timeout=10)
