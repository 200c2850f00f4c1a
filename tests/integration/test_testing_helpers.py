"""`pgtasq.testing` on a real PostgreSQL: isolated schemas, assertions, burst runs."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from pgtasq import Consumer, Producer, Task, TaskContext, TaskStatus
from pgtasq.testing import (
    arun_until_empty,
    assert_enqueued,
    enqueued_tasks,
    isolated_schema,
    run_until_empty,
)


def schema_exists(dsn: str, name: str) -> bool:
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [name]).fetchone()
    assert row is not None
    return bool(row[0])


def test_isolated_schema_is_migrated_then_dropped(pg_dsn: str) -> None:
    with isolated_schema(pg_dsn) as name:
        assert name.startswith("pgtasq_test_")
        assert schema_exists(pg_dsn, name)
        with Producer(pg_dsn, schema=name) as producer:
            producer.enqueue("a")
        assert_enqueued(pg_dsn, schema=name, type="a", count=1)
    assert not schema_exists(pg_dsn, name)


def test_isolated_schema_is_dropped_when_the_test_fails(pg_dsn: str) -> None:
    with pytest.raises(RuntimeError), isolated_schema(pg_dsn, prefix="pgtasq_fail_") as name:
        raise RuntimeError
    assert not schema_exists(pg_dsn, name)


def test_assert_enqueued_matches_type_payload_queue_and_count(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many(
            [
                Task("mail", {"to": "ann", "tags": ("a",)}),
                Task("mail", {"to": "bob"}, queue="low"),
                Task("sms", {"to": "ann"}),
            ]
        )
    assert len(assert_enqueued(pg_dsn, schema=schema, type="mail")) == 2
    assert_enqueued(pg_dsn, schema=schema, type="mail", count=2)
    # A tuple in the expected payload compares as the list it became.
    [info] = assert_enqueued(pg_dsn, schema=schema, payload={"to": "ann", "tags": ("a",)})
    assert info.type == "mail"
    assert_enqueued(pg_dsn, schema=schema, type="mail", queue="low", count=1)
    assert_enqueued(pg_dsn, schema=schema, type="push", count=0)
    assert [t.type for t in enqueued_tasks(pg_dsn, schema=schema)] == ["mail", "mail", "sms"]

    with pytest.raises(AssertionError) as wrong_count:
        assert_enqueued(pg_dsn, schema=schema, type="mail", count=1)
    message = str(wrong_count.value)
    assert "expected 1 task(s) matching type='mail'" in message and "found 2" in message
    assert "sms queue=default status=pending payload={'to': 'ann'}" in message
    with pytest.raises(AssertionError, match="expected at least one task matching type='push'"):
        assert_enqueued(pg_dsn, schema=schema, type="push")


def test_a_connection_sees_its_own_uncommitted_tasks_and_a_dsn_does_not(
    pg_dsn: str, schema: str
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        Producer(schema=schema).enqueue("mail", {"n": 1}, conn=conn)
        assert_enqueued(conn, schema=schema, type="mail", count=1)
        assert_enqueued(pg_dsn, schema=schema, type="mail", count=0)
        conn.rollback()
        assert_enqueued(conn, schema=schema, type="mail", count=0)


def test_run_until_empty_drains_and_status_filters_follow(pg_dsn: str, schema: str) -> None:
    consumer = Consumer(pg_dsn, schema=schema)
    done: list[int] = []

    @consumer.task("work")
    def work(ctx: TaskContext) -> int:
        done.append(ctx.payload)
        return int(ctx.payload) * 2

    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("work", n) for n in range(5)])
        producer.enqueue("work", 99, delay=3600)  # not ready: left pending
    counts = run_until_empty(consumer)
    assert counts.completed == 5 and sorted(done) == [0, 1, 2, 3, 4]
    [later] = assert_enqueued(pg_dsn, schema=schema, type="work", count=1)
    assert later.payload == 99
    finished = assert_enqueued(
        pg_dsn, schema=schema, type="work", status=TaskStatus.COMPLETED, count=5
    )
    assert sorted(t.result for t in finished) == [0, 2, 4, 6, 8]
    assert len(enqueued_tasks(pg_dsn, schema=schema, status=None)) == 6


def test_enqueued_tasks_reads_past_one_page(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("bulk", n) for n in range(2500)])
    found = enqueued_tasks(pg_dsn, schema=schema, type="bulk")
    assert [t.payload for t in found] == list(range(2500))


def test_arun_until_empty(pg_dsn: str, schema: str) -> None:
    consumer = Consumer(pg_dsn, schema=schema)

    @consumer.task("work")
    async def work(ctx: TaskContext) -> None:
        await asyncio.sleep(0)

    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("work"), Task("work")])
    counts = asyncio.run(arun_until_empty(consumer))
    assert counts.completed == 2
    assert_enqueued(pg_dsn, schema=schema, count=0)
