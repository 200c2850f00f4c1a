"""Unique tasks (docs/unique.md): one row holds a unique key while pending or running, or
until its unique_until; the database arbitrates, whatever the producers' transactions do."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest

from pgtasq import (
    AsyncProducer,
    Client,
    Consumer,
    DuplicateTask,
    Producer,
    Task,
    TaskInfo,
    TaskStatus,
    UniqueKeyHeld,
)
from tests.conftest import count_tasks

WAIT_FOR_LOCK = 20.0  # seconds a test waits for a backend to block on the other's key


@pytest.fixture
def producer(pg_dsn: str, schema: str):  # type: ignore[no-untyped-def]
    with Producer(pg_dsn, schema=schema) as p:
        yield p


def _complete_all(pg_dsn: str, schema: str) -> int:
    consumer = Consumer(schema=schema)
    consumer.register("t", lambda ctx: "done")
    return consumer.run(pg_dsn, burst=True).completed


def _expire(pg_dsn: str, schema: str, task_id: int) -> None:
    """Make the task's unique period lie in the past (as if it had passed)."""
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(
            f"UPDATE {schema}.tasks SET unique_until = now() - interval '1 second' WHERE id = %s",
            (task_id,),
        )


def _blocked(pg_dsn: str, pid: int) -> None:
    """Wait until backend ``pid`` waits for a lock (a polled state, not a sleep)."""
    end = time.monotonic() + WAIT_FOR_LOCK
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        while time.monotonic() < end:
            row = c.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
    raise AssertionError(f"backend {pid} never waited for the other transaction's key")


def test_a_pending_task_holds_its_key(producer: Producer, pg_dsn: str, schema: str) -> None:
    first = producer.enqueue("t", {"n": 1}, unique_key="k")
    again = producer.enqueue("t", {"n": 2}, unique_key="k", priority=5)
    assert first.created and first.unique_key == "k"
    assert not again.created and again.id == first.id
    assert again.payload == {"n": 1} and again.priority == 0  # left unchanged
    assert count_tasks(pg_dsn, schema) == 1
    with pytest.raises(DuplicateTask) as raised:
        producer.enqueue("t", unique_key="k", on_conflict="raise")
    assert raised.value.unique_key == "k" and raised.value.task_id == first.id
    assert "unique key 'k'" in str(raised.value)


def test_the_key_is_free_once_the_task_is_final(
    producer: Producer, pg_dsn: str, schema: str
) -> None:
    first = producer.enqueue("t", unique_key="k")
    assert _complete_all(pg_dsn, schema) == 1
    second = producer.enqueue("t", unique_key="k")
    assert second.created and second.id != first.id
    with Client(pg_dsn, schema=schema) as client:
        assert client.get_task(first.id).status is TaskStatus.COMPLETED
        assert client.get_task(second.id).unique_key == "k"
        client.cancel_task(second.id)  # cancelled is final too
    third = producer.enqueue("t", unique_key="k")
    assert third.created
    assert count_tasks(pg_dsn, schema) == 3


def test_unique_for_holds_the_key_after_completion_until_it_passes(
    producer: Producer, pg_dsn: str, schema: str
) -> None:
    first = producer.enqueue("t", unique_key="k", unique_for=timedelta(hours=1))
    assert first.unique_until == first.created_at + timedelta(hours=1)
    with Client(pg_dsn, schema=schema) as client:
        assert client.get_task(first.id).unique_until == first.unique_until  # as stored
    assert _complete_all(pg_dsn, schema) == 1
    held = producer.enqueue("t", unique_key="k")
    assert not held.created and held.id == first.id and held.status is TaskStatus.COMPLETED
    _expire(pg_dsn, schema, first.id)
    free = producer.enqueue("t", unique_key="k")
    assert free.created
    with Client(pg_dsn, schema=schema) as client:
        released = client.get_task(first.id)
    assert released.unique_until is None and released.unique_key == "k"  # the key was given up
    assert count_tasks(pg_dsn, schema) == 2


def test_an_expired_period_does_not_free_a_task_still_pending(
    producer: Producer, pg_dsn: str, schema: str
) -> None:
    first = producer.enqueue("t", unique_key="k", unique_for=1)
    _expire(pg_dsn, schema, first.id)
    again = producer.enqueue("t", unique_key="k")
    assert not again.created and again.id == first.id


def test_enqueue_many_arbitrates_unique_keys(producer: Producer, pg_dsn: str, schema: str) -> None:
    held = producer.enqueue("t", "held", unique_key="a")
    infos = producer.enqueue_many(
        [Task("t", "x", unique_key="a"), Task("t", "y"), Task("t", "z", unique_key="b"),
         Task("t", "w", unique_key="b"), Task("t", "v")]
    )  # fmt: skip
    assert [i.created for i in infos] == [False, True, True, False, True]
    assert infos[0].id == held.id and infos[2].id == infos[3].id
    assert [i.payload for i in infos] == ["held", "y", "z", "z", "v"]
    assert count_tasks(pg_dsn, schema) == 4


def test_unique_and_idempotency_keys_together(producer: Producer, pg_dsn: str, schema: str) -> None:
    first = producer.enqueue("t", idempotency_key="i", unique_key="u")
    by_unique = producer.enqueue("t", idempotency_key="other", unique_key="u")
    by_idempotency = producer.enqueue("t", idempotency_key="i", unique_key="v")
    assert not by_unique.created and by_unique.id == first.id
    assert not by_idempotency.created and by_idempotency.id == first.id
    assert count_tasks(pg_dsn, schema) == 1


def test_a_raise_leaves_the_callers_transaction_usable(
    pg_dsn: str, schema: str, conn: psycopg.Connection
) -> None:
    producer = Producer(schema=schema)
    producer.enqueue("t", unique_key="k", conn=conn)
    producer.enqueue("before", conn=conn)
    with pytest.raises(DuplicateTask):
        producer.enqueue_many(
            [Task("new"), Task("t", unique_key="k")], conn=conn, on_conflict="raise"
        )
    with pytest.raises(DuplicateTask):
        producer.enqueue("t", unique_key="k", conn=conn, on_conflict="raise")
    producer.enqueue("after", conn=conn)  # the transaction still works
    conn.commit()
    with psycopg.connect(pg_dsn) as c:
        types = sorted(r[0] for r in c.execute(f"SELECT type FROM {schema}.tasks").fetchall())
    assert types == ["after", "before", "t"]


def test_derived_keys_compare_payloads_not_their_key_order(
    producer: Producer, pg_dsn: str, schema: str
) -> None:
    first = producer.enqueue("t", {"a": 1, "b": [1, 2]}, unique_key=True)
    same = producer.enqueue("t", {"b": [1, 2], "a": 1}, unique_key=True)
    other_payload = producer.enqueue("t", {"a": 2, "b": [1, 2]}, unique_key=True)
    other_type = producer.enqueue("u", {"a": 1, "b": [1, 2]}, unique_key=True)
    assert first.unique_key is not None and first.unique_key.startswith("sha256:")
    assert not same.created and same.id == first.id
    assert other_payload.created and other_type.created
    assert count_tasks(pg_dsn, schema) == 3


async def test_async_producer_unique_keys(pg_dsn: str, schema: str) -> None:
    async with AsyncProducer(pg_dsn, schema=schema) as producer:
        first = await producer.enqueue("t", unique_key="k")
        again = await producer.enqueue("t", unique_key="k")
        many = await producer.enqueue_many([Task("t", unique_key="k"), Task("t", unique_key="l")])
    assert first.created and not again.created and again.id == first.id
    assert [i.created for i in many] == [False, True] and many[0].id == first.id


def _race(
    pg_dsn: str, schema: str, first_ends: Callable[[psycopg.Connection], None], **options: object
) -> tuple[TaskInfo, list[object]]:
    """Two producers, two transactions, one key: the second blocks on the first's row until
    the first transaction ends (``first_ends``); returns the first's info and the second's
    outcome (its TaskInfo, or the exception it raised)."""
    producer = Producer(schema=schema)
    outcome: list[object] = []
    with psycopg.connect(pg_dsn) as first, psycopg.connect(pg_dsn) as second:
        mine = producer.enqueue("t", "first", unique_key="k", conn=first)

        def enqueue() -> None:
            try:
                outcome.append(
                    producer.enqueue("t", "second", unique_key="k", conn=second, **options)  # type: ignore[arg-type]
                )
                second.commit()
            except Exception as exc:  # the outcome is what the test checks
                outcome.append(exc)
                second.rollback()

        thread = threading.Thread(target=enqueue)
        thread.start()
        _blocked(pg_dsn, second.info.backend_pid)
        assert outcome == []  # decided only when the first transaction ends
        first_ends(first)
        thread.join(timeout=30)
        assert not thread.is_alive()
    return mine, outcome


def test_race_second_producer_gets_the_first_after_it_commits(pg_dsn: str, schema: str) -> None:
    mine, (theirs,) = _race(pg_dsn, schema, lambda c: c.commit())
    assert isinstance(theirs, TaskInfo)
    assert not theirs.created and theirs.id == mine.id and theirs.payload == "first"
    assert count_tasks(pg_dsn, schema) == 1


def test_race_second_producer_raises_after_the_first_commits(pg_dsn: str, schema: str) -> None:
    mine, (theirs,) = _race(pg_dsn, schema, lambda c: c.commit(), on_conflict="raise")
    assert isinstance(theirs, DuplicateTask) and theirs.task_id == mine.id
    assert count_tasks(pg_dsn, schema) == 1


def test_race_second_producer_inserts_after_the_first_rolls_back(pg_dsn: str, schema: str) -> None:
    _, (theirs,) = _race(pg_dsn, schema, lambda c: c.rollback())
    assert isinstance(theirs, TaskInfo) and theirs.created and theirs.payload == "second"
    assert count_tasks(pg_dsn, schema) == 1


def test_many_producers_race_on_one_key(pg_dsn: str, schema: str) -> None:
    """Eight transactions at once, in threads with their own connections: one row."""
    producer = Producer(schema=schema)
    barrier = threading.Barrier(8)
    infos: list[TaskInfo] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with psycopg.connect(pg_dsn) as c:
                barrier.wait(timeout=10)
                info = producer.enqueue_many(
                    [Task("t", n, unique_key="same"), Task("t", n, unique_key=f"own-{n}")], conn=c
                )[0]
                c.commit()
                infos.append(info)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert count_tasks(pg_dsn, schema, unique_key="same") == 1
    assert count_tasks(pg_dsn, schema) == 9
    assert len({i.id for i in infos}) == 1 and sorted(i.created for i in infos) == [False] * 7 + [
        True
    ]


def test_retrying_a_task_whose_key_another_holds_is_refused_clearly(
    producer: Producer, pg_dsn: str, schema: str
) -> None:
    first = producer.enqueue("t", unique_key="k")
    with Client(pg_dsn, schema=schema) as client:
        client.cancel_task(first.id)
        second = producer.enqueue("t", unique_key="k")
        assert second.created
        with pytest.raises(UniqueKeyHeld) as refused:
            client.retry_task(first.id)
        assert refused.value.unique_key == "k"
        assert client.get_task(first.id).status is TaskStatus.CANCELLED  # nothing changed
        with psycopg.connect(pg_dsn) as c:
            with pytest.raises(UniqueKeyHeld):
                client.retry_task(first.id, conn=c)
            c.rollback()
        client.cancel_task(second.id)
        assert client.retry_task(first.id).status is TaskStatus.PENDING  # the key is free again


def test_on_conflict_update_moves_the_pending_holder(
    producer: Producer, pg_dsn: str, schema: str
) -> None:
    first = producer.enqueue("t", "first", unique_key="k", delay=3600)
    same_time = producer.enqueue("t", "second", unique_key="k", priority=7, on_conflict="update")
    assert not same_time.created and same_time.id == first.id
    assert same_time.priority == 7 and same_time.run_at == first.run_at  # no run_at given
    assert same_time.payload == "first"  # the payload is the holder's
    sooner = producer.enqueue("t", unique_key="k", priority=1, delay=1, on_conflict="update")
    assert sooner.priority == 1 and sooner.run_at < first.run_at
    with Client(pg_dsn, schema=schema) as client:
        stored = client.get_task(first.id)
    assert (stored.priority, stored.run_at) == (1, sooner.run_at)
    infos = producer.enqueue_many(
        [Task("t", unique_key="k", priority=4), Task("t", unique_key="k", priority=5),
         Task("t", unique_key="m", priority=6)],
        on_conflict="update",
    )  # fmt: skip
    assert [(i.id, i.priority, i.created) for i in infos][:2] == [
        (first.id, 5, False),
        (first.id, 5, False),
    ]  # the last of the batch wins
    assert infos[2].created and infos[2].priority == 6
    assert count_tasks(pg_dsn, schema) == 2


def test_on_conflict_update_leaves_a_holder_that_is_not_pending(
    producer: Producer, pg_dsn: str, schema: str
) -> None:
    first = producer.enqueue("t", unique_key="k", unique_for=3600)
    assert _complete_all(pg_dsn, schema) == 1
    again = producer.enqueue("t", unique_key="k", priority=9, on_conflict="update")
    assert not again.created and again.id == first.id
    assert again.status is TaskStatus.COMPLETED and again.priority == 0
