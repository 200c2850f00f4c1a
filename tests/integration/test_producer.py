"""Producer and AsyncProducer on psycopg connections and on their own pools."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest

from pgtasq import (
    AsyncProducer,
    ConfigurationError,
    DuplicateTask,
    Producer,
    Task,
    TaskInfo,
    TaskStatus,
    TaskValidationError,
    _sql,
)
from tests.conftest import count_tasks


@pytest.fixture
def producer(pg_dsn: str, schema: str):  # type: ignore[no-untyped-def]
    with Producer(pg_dsn, schema=schema) as p:
        yield p


def _row(dsn: str, schema: str, task_id: int) -> dict[str, object]:
    with psycopg.connect(dsn) as c, c.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(f"SELECT * FROM {schema}.tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return row


def test_commit_makes_exactly_one_task(pg_dsn: str, schema: str, conn: psycopg.Connection) -> None:
    producer = Producer(schema=schema)
    with conn.transaction():
        info = producer.enqueue("email.send", {"to": "a@example.com"}, conn=conn)
        assert count_tasks(pg_dsn, schema) == 0  # not visible before commit
    assert count_tasks(pg_dsn, schema) == 1
    assert info.status is TaskStatus.PENDING and info.created
    row = _row(pg_dsn, schema, info.id)
    assert row["type"] == "email.send" and row["payload"] == {"to": "a@example.com"}
    assert row["created_at"] == info.created_at and row["run_at"] == info.run_at


def test_rollback_leaves_no_task(pg_dsn: str, schema: str, conn: psycopg.Connection) -> None:
    producer = Producer(schema=schema)
    producer.enqueue("t", conn=conn)
    producer.enqueue_many([Task("t"), Task("u")], conn=conn)
    conn.rollback()
    assert count_tasks(pg_dsn, schema) == 0


def test_producer_never_commits_the_callers_transaction(
    pg_dsn: str, schema: str, conn: psycopg.Connection
) -> None:
    producer = Producer(schema=schema)
    producer.enqueue("t", conn=conn)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    conn.close()  # closing without commit discards
    assert count_tasks(pg_dsn, schema) == 0


def test_validation_error_leaves_transaction_usable(
    pg_dsn: str, schema: str, conn: psycopg.Connection
) -> None:
    producer = Producer(schema=schema, max_payload_bytes=100)
    producer.enqueue("first", conn=conn)
    with pytest.raises(TaskValidationError, match="payload"):
        producer.enqueue("big", "x" * 200, conn=conn)
    with pytest.raises(TaskValidationError, match="payload"):
        producer.enqueue_many([Task("ok"), Task("bad", {"d": datetime.now()})], conn=conn)
    with pytest.raises(TaskValidationError, match="priority"):
        producer.enqueue("t", priority=500, conn=conn)
    producer.enqueue("second", conn=conn)
    conn.commit()
    assert count_tasks(pg_dsn, schema) == 2


def test_options_are_stored(pg_dsn: str, schema: str, producer: Producer) -> None:
    run_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    deadline = run_at + timedelta(days=1)
    info = producer.enqueue(
        Task(
            "report", [1, 2], queue="low", priority=-7, run_at=run_at, max_attempts=9,
            timeout=30, deadline=deadline, idempotency_key="r-1", retention=timedelta(days=2),
        )
    )  # fmt: skip
    row = _row(pg_dsn, schema, info.id)
    assert row["queue"] == "low" and row["priority"] == -7 and row["payload"] == [1, 2]
    assert row["run_at"] == run_at == info.run_at
    assert row["max_attempts"] == 9 and row["deadline"] == deadline
    assert row["timeout"] == timedelta(seconds=30) == info.timeout
    assert row["retention"] == timedelta(days=2) == info.retention
    assert row["idempotency_key"] == "r-1" and row["status"] == "pending"


def test_delay_is_computed_by_the_database(pg_dsn: str, schema: str, producer: Producer) -> None:
    info = producer.enqueue("later", delay=timedelta(hours=1))
    row = _row(pg_dsn, schema, info.id)
    assert row["run_at"] - row["created_at"] == timedelta(hours=1)
    now_info = producer.enqueue("now")
    assert now_info.run_at == now_info.created_at


class _CountingCursor(psycopg.Cursor):  # type: ignore[type-arg]
    statements: list[str] = []

    def execute(self, query, params=None, **kwargs):  # type: ignore[no-untyped-def,override]
        _CountingCursor.statements.append(str(query).split()[0])
        return super().execute(query, params, **kwargs)

    def copy(self, statement, params=None, **kwargs):  # type: ignore[no-untyped-def,override]
        _CountingCursor.statements.append(str(statement).split()[0])
        return super().copy(statement, params, **kwargs)


def test_enqueue_many_keeps_order_and_is_two_statements_per_batch(pg_dsn: str, schema: str) -> None:
    producer = Producer(schema=schema, batch_size=1000)
    tasks = [Task("n", {"i": i}) for i in range(2500)]
    _CountingCursor.statements = []
    with psycopg.connect(pg_dsn, cursor_factory=_CountingCursor) as conn:
        infos = producer.enqueue_many(tasks, conn=conn)
        conn.commit()
    # 1000 + 1000 + 500: the ids, time and NOTIFY of a batch, then its COPY
    assert _CountingCursor.statements == ["WITH", "COPY"] * 3
    assert [i.payload["i"] for i in infos] == list(range(2500))
    assert infos == sorted(infos, key=lambda i: i.id)
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute(f"SELECT id, payload FROM {schema}.tasks ORDER BY id").fetchall()
    assert [(r[0], r[1]["i"]) for r in rows] == [(i.id, i.payload["i"]) for i in infos]


def test_enqueue_many_without_conn_is_all_or_nothing(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema, batch_size=10) as producer:
        infos = producer.enqueue_many(Task("t", i) for i in range(35))
        assert len(infos) == 35 and count_tasks(pg_dsn, schema) == 35
        assert producer.enqueue_many([]) == []
        # A duplicate in the last batch with on_conflict="raise" undoes the earlier batches.
        tasks = [Task("t", i) for i in range(25)] + [Task("dup", idempotency_key="k")] * 2
        with pytest.raises(DuplicateTask):
            producer.enqueue_many(tasks, on_conflict="raise")
        assert count_tasks(pg_dsn, schema) == 35


def test_idempotency_returns_existing_unchanged(
    pg_dsn: str, schema: str, producer: Producer
) -> None:
    first = producer.enqueue("charge", {"amount": 10}, idempotency_key="order-1")
    again = producer.enqueue("charge", {"amount": 99}, idempotency_key="order-1", queue="other")
    assert first.created and not again.created
    assert again.id == first.id and again.payload == {"amount": 10} and again.queue == "default"
    assert count_tasks(pg_dsn, schema) == 1
    assert _row(pg_dsn, schema, first.id)["payload"] == {"amount": 10}


def test_idempotency_inside_enqueue_many(pg_dsn: str, schema: str, producer: Producer) -> None:
    old = producer.enqueue("t", "old", idempotency_key="a")
    infos = producer.enqueue_many(
        [Task("t", "x", idempotency_key="a"), Task("t", "y"), Task("t", "z", idempotency_key="b"),
         Task("t", "w", idempotency_key="b")]
    )  # fmt: skip
    assert [(i.payload, i.created) for i in infos] == [
        ("old", False),
        ("y", True),
        ("z", True),
        ("z", False),
    ]
    assert infos[0].id == old.id and infos[2].id == infos[3].id
    assert count_tasks(pg_dsn, schema) == 3


def test_on_conflict_raise_keeps_callers_transaction_usable(
    pg_dsn: str, schema: str, conn: psycopg.Connection
) -> None:
    producer = Producer(schema=schema)
    producer.enqueue("t", idempotency_key="k", conn=conn)
    producer.enqueue("before", conn=conn)
    with pytest.raises(DuplicateTask) as info:
        producer.enqueue_many(
            [Task("new"), Task("t", idempotency_key="k")], conn=conn, on_conflict="raise"
        )
    assert info.value.idempotency_key == "k" and info.value.existing.type == "t"
    producer.enqueue("after", conn=conn)  # the transaction still works
    conn.commit()
    with psycopg.connect(pg_dsn) as c:
        types = sorted(r[0] for r in c.execute(f"SELECT type FROM {schema}.tasks").fetchall())
    assert types == ["after", "before", "t"]  # "new" was rolled back with the savepoint


def test_idempotency_under_concurrent_inserts(pg_dsn: str, schema: str) -> None:
    """Eight transactions race on one key: one row, every caller gets its id."""
    producer = Producer(schema=schema)
    barrier = threading.Barrier(8)
    ids: list[int] = []
    created: list[bool] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with psycopg.connect(pg_dsn) as c:
                barrier.wait(timeout=10)
                info = producer.enqueue("pay", {"by": n}, idempotency_key="same", conn=c)
                c.commit()
                ids.append(info.id)
                created.append(info.created)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert count_tasks(pg_dsn, schema) == 1
    assert len(set(ids)) == 1 and len(ids) == 8
    assert sorted(created) == [False] * 7 + [True]


def test_key_freed_by_rollback_is_inserted(pg_dsn: str, schema: str) -> None:
    """A racing transaction that rolls back leaves the key to the waiting one."""
    producer = Producer(schema=schema)
    with psycopg.connect(pg_dsn) as holder, psycopg.connect(pg_dsn) as waiter:
        producer.enqueue("t", "holder", idempotency_key="k", conn=holder)
        result: list[object] = []
        t = threading.Thread(
            target=lambda: result.append(
                producer.enqueue("t", "waiter", idempotency_key="k", conn=waiter)
            )
        )
        t.start()
        t.join(timeout=0.5)
        assert t.is_alive()  # blocked on the holder's uncommitted key
        holder.rollback()
        t.join(timeout=10)
        waiter.commit()
    (info,) = result
    assert info.created and info.payload == "waiter"  # type: ignore[attr-defined]
    assert count_tasks(pg_dsn, schema) == 1


def test_notify_once_per_statement_at_commit(
    pg_dsn: str, schema: str, conn: psycopg.Connection
) -> None:
    channel = _sql.notify_channel(schema)
    producer = Producer(schema=schema)
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {channel}")
        producer.enqueue_many(
            [Task("a", queue="q1"), Task("b", queue="q2"), Task("c", queue="q1")], conn=conn
        )
        assert list(listener.notifies(timeout=0.3)) == []  # nothing before commit
        conn.commit()
        got = list(listener.notifies(timeout=1, stop_after=5))
        assert [json.loads(n.payload)["queues"] for n in got] == [["q1", "q2"]]
        producer.enqueue("x", conn=conn)
        producer.enqueue_many([Task("y"), Task("z")], conn=conn)  # COPY
        conn.rollback()
        assert list(listener.notifies(timeout=0.3)) == []  # a rollback wakes nobody


def test_two_schemas_never_see_each_other(pg_dsn: str, schema: str, other_schema: str) -> None:
    fresh_schema = other_schema
    with Producer(pg_dsn, schema=schema) as a, Producer(pg_dsn, schema=fresh_schema) as b:
        a.enqueue("t", idempotency_key="k")
        info = b.enqueue("t", idempotency_key="k")
        assert info.created
    assert count_tasks(pg_dsn, schema) == 1 and count_tasks(pg_dsn, fresh_schema) == 1
    assert _sql.notify_channel(schema) != _sql.notify_channel(fresh_schema)


def test_wrong_connection_types() -> None:
    producer = Producer()
    with pytest.raises(TypeError, match="psycopg Connection"):
        producer.enqueue("t", conn=object())
    with pytest.raises(TypeError, match="asynchronous"):
        producer.enqueue("t", conn=psycopg.AsyncConnection.__new__(psycopg.AsyncConnection))
    with pytest.raises(ConfigurationError, match="no DSN"):
        producer.enqueue("t")
    with pytest.raises(TypeError):
        producer.enqueue(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_conflict"):
        producer.enqueue("t", conn=object(), on_conflict="ignore")  # type: ignore[arg-type]


CLOSED_PORT_DSN = "postgresql://nobody:secret@127.0.0.1:1/none"  # nothing listens on port 1


def test_unreachable_database() -> None:
    from pgtasq import DatabaseUnavailable

    producer = Producer(CLOSED_PORT_DSN, connect_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL") as raised:
            producer.enqueue("t")
        assert time.monotonic() - started < 5  # 0.5 s asked; generous for a loaded machine
        assert "secret" not in str(raised.value) and "127.0.0.1" in str(raised.value)
        with pytest.raises(DatabaseUnavailable):  # the next use tries again, and fails again
            producer.enqueue("t")
    finally:
        producer.close()


async def test_unreachable_database_async() -> None:
    from pgtasq import DatabaseUnavailable

    producer = AsyncProducer(CLOSED_PORT_DSN, connect_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL"):
            await producer.enqueue("t")
        assert time.monotonic() - started < 5
    finally:
        await producer.close()


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "1", True, None])
def test_connect_timeout_is_checked_at_construction(bad: object) -> None:
    for make in (Producer, AsyncProducer):
        for dsn in (CLOSED_PORT_DSN, None):
            with pytest.raises(ConfigurationError, match="connect_timeout must be"):
                make(dsn, connect_timeout=bad)  # type: ignore[arg-type]


async def test_async_producer_commit_and_rollback(pg_dsn: str, schema: str) -> None:
    producer = AsyncProducer(schema=schema)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as aconn:
        await producer.enqueue("a", conn=aconn)
        await aconn.rollback()
        assert count_tasks(pg_dsn, schema) == 0
        infos = await producer.enqueue_many([Task("b"), Task("c")], conn=aconn)
        assert count_tasks(pg_dsn, schema) == 0
        await aconn.commit()
    assert count_tasks(pg_dsn, schema) == 2 and [i.type for i in infos] == ["b", "c"]


async def test_async_producer_own_pool_and_idempotency(pg_dsn: str, schema: str) -> None:
    async with AsyncProducer(pg_dsn, schema=schema) as producer:
        first = await producer.enqueue("a", idempotency_key="k")
        second = await producer.enqueue("a", {"other": 1}, idempotency_key="k")
        assert (first.id, first.created) == (second.id, False) or second.id == first.id
        assert not second.created
        with pytest.raises(DuplicateTask):
            await producer.enqueue("a", idempotency_key="k", on_conflict="raise")
    assert count_tasks(pg_dsn, schema) == 1


async def test_async_on_conflict_raise_keeps_transaction(pg_dsn: str, schema: str) -> None:
    producer = AsyncProducer(schema=schema)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as aconn:
        await producer.enqueue("a", idempotency_key="k", conn=aconn)
        with pytest.raises(DuplicateTask):
            await producer.enqueue("a", idempotency_key="k", conn=aconn, on_conflict="raise")
        await producer.enqueue("b", conn=aconn)
        await aconn.commit()
    assert count_tasks(pg_dsn, schema) == 2


async def test_async_wrong_connection_type(pg_dsn: str) -> None:
    producer = AsyncProducer()
    with psycopg.connect(pg_dsn) as c, pytest.raises(TypeError, match="synchronous"):
        await producer.enqueue("t", conn=c)
    with pytest.raises(ConfigurationError):
        await producer.enqueue("t")


# --- the three ways in: task_insert_one, COPY (task_insert_copy_ids + COPY), unnest ---------


def _rows(dsn: str, schema: str) -> list[dict[str, object]]:
    """Every row as TaskInfo.from_row reads it, in id order."""
    with psycopg.connect(dsn) as c, c.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(f"SELECT {_sql.TASK_COLUMNS} FROM {schema}.tasks ORDER BY id").fetchall()


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The COPY statements run through psycopg, sync or async."""
    seen: list[str] = []
    for cls in (psycopg.Cursor, psycopg.AsyncCursor):
        original = cls.copy

        def copy(self, statement, *args, _original=original, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(str(statement))
            return _original(self, statement, *args, **kwargs)

        monkeypatch.setattr(cls, "copy", copy)
    return seen


ROME = ZoneInfo("Europe/Rome")


def _varied_tasks() -> list[Task]:
    """Keyless tasks using every option COPY can send, and text COPY must escape."""
    return [
        Task("plain"),
        Task("tab\there", {"s": 'back\\slash "quote" new\nline é ✓'}, queue="q\\1"),
        Task("later", [1, 2], delay=timedelta(hours=1, microseconds=7), priority=-5),
        Task("at", run_at=datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=ROME), max_attempts=9),
        Task("limits", timeout=1.25, deadline=datetime(2031, 1, 1, tzinfo=timezone.utc),
             retention=timedelta(days=2, seconds=3)),
    ]  # fmt: skip


def test_copy_on_own_pool_returns_exactly_the_rows(
    pg_dsn: str, schema: str, copies: list[str]
) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        infos = producer.enqueue_many(_varied_tasks())
    assert len(copies) == 1 and copies[0].startswith(f"COPY {schema}.tasks (id, queue, type")
    rows = _rows(pg_dsn, schema)
    assert infos == [TaskInfo.from_row(r) for r in rows]  # every field, to the microsecond
    assert len({i.created_at for i in infos}) == 1 and infos[0].run_at == infos[0].created_at
    assert infos[2].run_at - infos[2].created_at == timedelta(hours=1, microseconds=7)
    assert infos[1].type == "tab\there" and infos[1].queue == "q\\1"


def test_copy_in_callers_transaction(pg_dsn: str, schema: str, copies: list[str]) -> None:
    producer = Producer(schema=schema)
    with psycopg.connect(pg_dsn) as conn:
        producer.enqueue("before", conn=conn)
        infos = producer.enqueue_many([Task("a", 1), Task("b", 2)], conn=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert count_tasks(pg_dsn, schema) == 0  # not committed by us
        conn.commit()
        assert len(copies) == 1
        assert [TaskInfo.from_row(r) for r in _rows(pg_dsn, schema)][1:] == infos
        producer.enqueue_many([Task("c"), Task("d")], conn=conn)
        conn.rollback()
    assert count_tasks(pg_dsn, schema) == 3  # the rollback took c and d


def test_copy_on_autocommit_connection_is_one_transaction(
    pg_dsn: str, schema: str, copies: list[str]
) -> None:
    producer = Producer(schema=schema)
    channel = _sql.notify_channel(schema)
    with (
        psycopg.connect(pg_dsn, autocommit=True) as conn,
        psycopg.connect(pg_dsn, autocommit=True) as listener,
    ):
        listener.execute(f"LISTEN {channel}")
        infos = producer.enqueue_many([Task("a", queue="q2"), Task("b", queue="q1")], conn=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert count_tasks(pg_dsn, schema) == 2 and len(copies) == 1
        assert [TaskInfo.from_row(r) for r in _rows(pg_dsn, schema)] == infos
        got = list(listener.notifies(timeout=1, stop_after=5))
        assert [json.loads(n.payload) for n in got] == [
            {"queues": ["q1", "q2"], "count": 2, "ids": sorted(i.id for i in infos)}
        ]
        # A row the server refuses fails the COPY: its ids and NOTIFY go with it.
        conn.execute(f"ALTER TABLE {schema}.tasks ADD CONSTRAINT no_boom CHECK (type <> 'boom')")
        with pytest.raises(psycopg.errors.CheckViolation):
            producer.enqueue_many([Task("ok"), Task("boom")], conn=conn)
        assert count_tasks(pg_dsn, schema) == 2
        assert list(listener.notifies(timeout=0.3)) == []
        assert producer.enqueue("after", conn=conn).created  # the connection is fine


def test_failed_copy_on_own_pool_leaves_nothing(pg_dsn: str, schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"ALTER TABLE {schema}.tasks ADD CONSTRAINT no_boom CHECK (type <> 'boom')")
    with Producer(pg_dsn, schema=schema, pool_max_size=1) as producer:
        with pytest.raises(psycopg.errors.CheckViolation):
            producer.enqueue_many([Task("ok"), Task("boom"), Task("ok")])
        assert count_tasks(pg_dsn, schema) == 0
        infos = producer.enqueue_many([Task("ok"), Task("ok")])  # the pooled connection works
    assert [i.id for i in infos] == sorted(i.id for i in infos)
    assert count_tasks(pg_dsn, schema) == 2


def test_mixed_batches_keep_order(pg_dsn: str, schema: str, copies: list[str]) -> None:
    with Producer(pg_dsn, schema=schema, batch_size=3) as producer:
        old = producer.enqueue("t", "old", idempotency_key="k0")
        tasks = [
            Task("t", 0), Task("t", 1), Task("t", 2),  # COPY
            Task("t", 3), Task("t", "dup", idempotency_key="k0"), Task("t", 5),  # unnest
            Task("t", 6), Task("t", 7), Task("t", 8),  # COPY
            Task("t", 9, idempotency_key="k9"),  # one INSERT
        ]  # fmt: skip
        infos = producer.enqueue_many(tasks)
    assert len(copies) == 2
    assert [i.payload for i in infos] == [0, 1, 2, 3, "old", 5, 6, 7, 8, 9]
    assert [i.created for i in infos] == [True] * 4 + [False] + [True] * 5
    assert infos[4].id == old.id
    created = [i.id for i in infos if i.created]
    assert created == sorted(created)
    by_id = {r["id"]: TaskInfo.from_row(r) for r in _rows(pg_dsn, schema)}
    assert all(by_id[i.id] == i for i in infos if i.created)


def test_single_task_is_one_insert_with_its_notify(
    pg_dsn: str, schema: str, conn: psycopg.Connection
) -> None:
    producer = Producer(schema=schema)
    channel = _sql.notify_channel(schema)
    _CountingCursor.statements = []
    with (
        psycopg.connect(pg_dsn, cursor_factory=_CountingCursor) as counted,
        psycopg.connect(pg_dsn, autocommit=True) as listener,
    ):
        listener.execute(f"LISTEN {channel}")
        info = producer.enqueue("one", {"x": 1}, queue="solo", delay=2.5, conn=counted)
        assert _CountingCursor.statements == ["INSERT"]
        assert list(listener.notifies(timeout=0.3)) == []
        counted.commit()
        assert [json.loads(n.payload) for n in listener.notifies(timeout=1, stop_after=1)] == [
            {"queues": ["solo"], "count": 1, "ids": [info.id]}
        ]
        # A taken key inserts nothing and wakes nobody.
        producer.enqueue("k", idempotency_key="k", conn=counted)
        counted.commit()
        list(listener.notifies(timeout=1, stop_after=1))
        again = producer.enqueue("k", idempotency_key="k", conn=counted)
        counted.commit()
        assert not again.created and list(listener.notifies(timeout=0.3)) == []
    (row, _) = _rows(pg_dsn, schema)
    assert TaskInfo.from_row(row) == info
    assert info.run_at - info.created_at == timedelta(seconds=2.5)


def test_single_task_on_own_pool_equals_its_row(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        infos = [producer.enqueue(task) for task in _varied_tasks()]
        # A pooled connection the pool replaces takes its cached cursor with it.
        pool = producer._pool.get()  # type: ignore[union-attr]
        own = pool.getconn()
        own.close()
        pool.putconn(own)
        infos.append(producer.enqueue("after"))
    assert [TaskInfo.from_row(r) for r in _rows(pg_dsn, schema)] == infos


def test_on_conflict_raise_never_commits_an_idle_connection(pg_dsn: str, schema: str) -> None:
    producer = Producer(schema=schema)
    with Producer(pg_dsn, schema=schema) as pooled:
        pooled.enqueue("held", idempotency_key="held")
    with psycopg.connect(pg_dsn) as conn:
        producer.enqueue("t", idempotency_key="k", conn=conn, on_conflict="raise")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert count_tasks(pg_dsn, schema) == 1  # not committed
        conn.rollback()
        producer.enqueue_many([Task("a"), Task("b")], conn=conn, on_conflict="raise")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert count_tasks(pg_dsn, schema) == 1
        conn.rollback()
        with pytest.raises(DuplicateTask):
            producer.enqueue_many(
                [Task("new"), Task("held", idempotency_key="held")], conn=conn, on_conflict="raise"
            )
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        producer.enqueue("after", conn=conn)
        conn.commit()
    assert count_tasks(pg_dsn, schema) == 2  # "held" and "after"; "new" was undone


def test_pipeline_mode_uses_unnest(pg_dsn: str, schema: str, copies: list[str]) -> None:
    producer = Producer(schema=schema)
    with psycopg.connect(pg_dsn) as conn:
        with conn.pipeline():
            infos = producer.enqueue_many([Task("a"), Task("b")], conn=conn)
            info = producer.enqueue("c", conn=conn)
        conn.commit()
    assert copies == []
    assert [TaskInfo.from_row(r) for r in _rows(pg_dsn, schema)] == [*infos, info]


async def test_async_copy_paths(pg_dsn: str, schema: str, copies: list[str]) -> None:
    producer = AsyncProducer(schema=schema)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as aconn:
        infos = await producer.enqueue_many([Task("a", 1), Task("b", 2)], conn=aconn)
        assert count_tasks(pg_dsn, schema) == 0
        await aconn.rollback()
        infos = await producer.enqueue_many([Task("a", 1), Task("b", 2)], conn=aconn)
        await aconn.commit()
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as aconn:
        infos += await producer.enqueue_many(_varied_tasks(), conn=aconn)
    async with AsyncProducer(pg_dsn, schema=schema) as pooled:
        infos += await pooled.enqueue_many([Task("c"), Task("d", delay=60)])
        infos.append(await pooled.enqueue("e", {"one": True}))
    assert len(copies) == 4
    assert [TaskInfo.from_row(r) for r in _rows(pg_dsn, schema)] == infos


async def test_async_on_conflict_raise_never_commits_an_idle_connection(
    pg_dsn: str, schema: str
) -> None:
    producer = AsyncProducer(schema=schema)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as aconn:
        await producer.enqueue("t", idempotency_key="k", conn=aconn, on_conflict="raise")
        assert aconn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert count_tasks(pg_dsn, schema) == 0
        await aconn.commit()
        with pytest.raises(DuplicateTask):
            await producer.enqueue_many(
                [Task("new"), Task("t", idempotency_key="k")], conn=aconn, on_conflict="raise"
            )
        assert aconn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert count_tasks(pg_dsn, schema) == 1


def test_copy_with_ids_that_are_not_consecutive(pg_dsn: str, schema: str) -> None:
    """Other sessions may draw ids meanwhile; then task_insert_copy_ids sends them all."""
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"ALTER SEQUENCE {schema}.tasks_id_seq INCREMENT BY 3")
    with Producer(pg_dsn, schema=schema) as producer:
        infos = producer.enqueue_many([Task("a"), Task("b"), Task("c")])
    assert [i.id for i in infos] == [infos[0].id, infos[0].id + 3, infos[0].id + 6]
    assert [TaskInfo.from_row(r) for r in _rows(pg_dsn, schema)] == infos


def test_a_wake_up_too_long_for_notify_says_any_queue(
    pg_dsn: str, schema: str, conn: psycopg.Connection
) -> None:
    """32 queues of 128 three-byte characters: the queue list would pass NOTIFY's 8000-byte
    limit (and abort the caller's transaction); the notification says "*" instead."""
    channel = _sql.notify_channel(schema)
    producer = Producer(schema=schema)
    queues = [f"{i:02d}" + "é" * 126 for i in range(32)]
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {channel}")
        producer.enqueue_many([Task("t", queue=q, idempotency_key=q) for q in queues], conn=conn)
        conn.commit()  # (identical notifications within one transaction are sent once)
        producer.enqueue_many([Task("t", queue=q) for q in queues], conn=conn)  # the COPY path
        conn.commit()
        got = [json.loads(n.payload) for n in listener.notifies(timeout=1, stop_after=2)]
    assert [(g["queues"], g["count"]) for g in got] == [("*", 32), ("*", 32)]
    assert count_tasks(pg_dsn, schema) == 64
