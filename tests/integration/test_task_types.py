"""Task declarations on a real PostgreSQL: defaults on enqueue, overrides, the per-type retry
delay the worker uses, typed payloads from producer to handler and back."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any, TypedDict

import psycopg
import pytest
from psycopg.rows import dict_row

from pgtasq import (
    AsyncProducer,
    Client,
    ConfigurationError,
    Consumer,
    Producer,
    TaskContext,
    TaskStatus,
    task_type,
)


@dataclasses.dataclass
class Email:
    to: str
    subject: str = ""


class Sms(TypedDict):
    number: str
    text: str


email_send = task_type("email.send", Email, queue="mail", priority=5, max_attempts=3, timeout=30)


def _row(dsn: str, schema: str, task_id: int) -> dict[str, Any]:
    with psycopg.connect(dsn) as c, c.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT queue, priority, max_attempts, timeout, payload, run_at > now() AS later "
            f"FROM {schema}.tasks WHERE id = %s",
            (task_id,),
        ).fetchone()
    assert row is not None
    return row


def test_defaults_apply_on_enqueue_and_overrides_win(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        plain = email_send.enqueue(Email("a@example.com"), producer=producer)
        other = email_send.enqueue(Email("b"), producer=producer, queue="bulk", priority=0)
        many = producer.enqueue_many(
            [email_send.task(Email(str(n)), max_attempts=9) for n in (1, 2)]
        )
    assert _row(pg_dsn, schema, plain.id) == {
        "queue": "mail",
        "priority": 5,
        "max_attempts": 3,
        "timeout": timedelta(seconds=30),
        "payload": {"to": "a@example.com", "subject": ""},
        "later": False,
    }
    assert _row(pg_dsn, schema, other.id) | {"payload": None} == {
        "queue": "bulk",
        "priority": 0,
        "max_attempts": 3,
        "timeout": timedelta(seconds=30),
        "payload": None,
        "later": False,
    }
    for info in many:
        row = _row(pg_dsn, schema, info.id)
        assert (row["queue"], row["priority"], row["max_attempts"]) == ("mail", 5, 9)


def test_enqueue_in_the_callers_transaction(pg_dsn: str, schema: str) -> None:
    """``conn=`` with a producer that has no DSN: the task exists iff the caller commits."""
    producer = Producer(schema=schema)
    with psycopg.connect(pg_dsn) as conn:
        kept = email_send.enqueue(Email("kept"), producer=producer, conn=conn)
    with psycopg.connect(pg_dsn) as conn:
        dropped = email_send.enqueue(Email("dropped"), producer=producer, conn=conn)
        conn.rollback()
    with Client(pg_dsn, schema=schema) as client:
        assert client.get_task(kept.id).queue == "mail"
        with pytest.raises(Exception, match="does not exist"):
            client.get_task(dropped.id)


def test_a_default_producer_and_the_async_one(pg_dsn: str, schema: str) -> None:
    sms = task_type("sms.send", Sms, priority=7)

    async def main() -> int:
        async with AsyncProducer(pg_dsn, schema=schema) as producer:
            bound = dataclasses.replace(sms, producer=producer)
            info = await bound.aenqueue({"number": "1", "text": "hi"})
            with pytest.raises(ConfigurationError, match="is for aenqueue"):
                bound.enqueue({"number": "1", "text": "hi"})
            return info.id

    task_id = asyncio.run(main())
    assert _row(pg_dsn, schema, task_id)["priority"] == 7


def test_typed_payloads_round_trip_through_a_worker(pg_dsn: str, schema: str) -> None:
    sms = task_type("sms.send", Sms)
    consumer = Consumer(schema=schema, queues={"mail": 1, "default": 1})
    seen: list[Any] = []

    @email_send.handler(consumer)
    def send(ctx: TaskContext) -> dict[str, Any]:
        mail = ctx.payload_as(Email)
        seen.append(mail)
        return {"sent_to": mail.to}

    @consumer.task(sms)
    def text(ctx: TaskContext) -> str:
        message = sms.load(ctx.payload)
        seen.append(message)
        return message["text"]

    with Producer(pg_dsn, schema=schema) as producer:
        mail_id = email_send.enqueue(Email("a@example.com", "hello"), producer=producer).id
        sms_id = sms.enqueue({"number": "1", "text": "hi"}, producer=producer).id
    consumer.run(pg_dsn, burst=True, handle_signals=False)
    assert sorted(seen, key=repr) == [
        Email("a@example.com", "hello"),
        {"number": "1", "text": "hi"},
    ]
    with Client(pg_dsn, schema=schema) as client:
        assert client.get_task(mail_id).result == {"sent_to": "a@example.com"}
        assert client.get_task(sms_id).result == "hi"


def test_the_worker_uses_a_types_own_retry_delay(pg_dsn: str, schema: str) -> None:
    consumer = Consumer(schema=schema, retry_delay=lambda info, exc: 0.0)

    @consumer.task("slow.retry", retry=3600)
    def slow(ctx: TaskContext) -> None:
        raise ValueError("again later")

    @consumer.task("quick.retry")
    def quick(ctx: TaskContext) -> None:
        raise ValueError("again now")

    with Producer(pg_dsn, schema=schema) as producer:
        slow_id = producer.enqueue("slow.retry", max_attempts=2).id
        quick_id = producer.enqueue("quick.retry", max_attempts=2).id
    consumer.run(pg_dsn, burst=True, handle_signals=False)
    with Client(pg_dsn, schema=schema) as client:
        waiting = client.get_task(slow_id)
        assert waiting.status is TaskStatus.PENDING and waiting.attempts == 1
        assert _row(pg_dsn, schema, slow_id)["later"]  # an hour away, not the consumer's 0 s
        done = client.get_task(quick_id)
        assert done.status is TaskStatus.FAILED and done.attempts == 2  # retried at once
