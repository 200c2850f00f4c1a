"""Enqueue on SQLAlchemy connections and sessions: sync, and async with psycopg and asyncpg."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from pgtasq import (
    AsyncProducer,
    DuplicateTask,
    Producer,
    Task,
    TaskInfo,
    TaskValidationError,
    _sql,
)
from tests.conftest import count_tasks


def _url(dsn: str, driver: str) -> str:
    assert dsn.startswith("postgresql://"), "these tests take a URL-style DSN"
    return f"postgresql+{driver}://" + dsn[len("postgresql://") :]


@pytest.fixture
def engine(pg_dsn: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(_url(pg_dsn, "psycopg"))
    yield eng
    eng.dispose()


@pytest.fixture(params=["psycopg", "asyncpg"])
async def async_engine(request: pytest.FixtureRequest, pg_dsn: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(_url(pg_dsn, request.param))
    yield eng
    await eng.dispose()


def test_connection_commit_and_rollback(pg_dsn: str, schema: str, engine: sa.Engine) -> None:
    producer = Producer(schema=schema)
    with engine.connect() as conn:
        producer.enqueue("a", {"x": 1}, conn=conn)
        conn.rollback()
        assert count_tasks(pg_dsn, schema) == 0
        infos = producer.enqueue_many([Task("b"), Task("c", [1])], conn=conn)
        assert count_tasks(pg_dsn, schema) == 0
        conn.commit()
    assert count_tasks(pg_dsn, schema) == 2
    assert [(i.type, i.payload) for i in infos] == [("b", None), ("c", [1])]


def test_session_shares_the_users_transaction(pg_dsn: str, schema: str, engine: sa.Engine) -> None:
    producer = Producer(schema=schema)
    with Session(engine) as session:
        session.execute(sa.text(f"CREATE TABLE {schema}.orders (id int PRIMARY KEY)"))
        session.execute(sa.text(f"INSERT INTO {schema}.orders VALUES (1)"))
        producer.enqueue("order.ship", {"order": 1}, conn=session)
        session.rollback()
    assert count_tasks(pg_dsn, schema) == 0
    with Session(engine) as session, session.begin():
        session.execute(sa.text(f"CREATE TABLE {schema}.orders (id int PRIMARY KEY)"))
        session.execute(sa.text(f"INSERT INTO {schema}.orders VALUES (1)"))
        info = producer.enqueue("order.ship", {"order": 1}, conn=session)
    assert count_tasks(pg_dsn, schema) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {schema}.orders")).scalar() == 1
    assert info.payload == {"order": 1}


def test_session_errors_keep_the_session_usable(
    pg_dsn: str, schema: str, engine: sa.Engine
) -> None:
    producer = Producer(schema=schema)
    with Session(engine) as session:
        producer.enqueue("a", idempotency_key="k", conn=session)
        with pytest.raises(TaskValidationError):
            producer.enqueue("b", queue="", conn=session)
        with pytest.raises(DuplicateTask):
            producer.enqueue("a", idempotency_key="k", conn=session, on_conflict="raise")
        again = producer.enqueue("a", idempotency_key="k", conn=session)
        assert not again.created
        producer.enqueue("c", conn=session)
        session.commit()
    assert count_tasks(pg_dsn, schema) == 2


async def test_async_connection(pg_dsn: str, schema: str, async_engine: AsyncEngine) -> None:
    producer = AsyncProducer(schema=schema)
    async with async_engine.connect() as conn:
        await producer.enqueue("a", conn=conn)
        await conn.rollback()
        assert count_tasks(pg_dsn, schema) == 0
        infos = await producer.enqueue_many(
            [Task("b", {"k": "v"}, timeout=5, idempotency_key="x"), Task("c")], conn=conn
        )
        dup = await producer.enqueue("b", idempotency_key="x", conn=conn)
        await conn.commit()
    assert count_tasks(pg_dsn, schema) == 2
    assert infos[0].payload == {"k": "v"} and dup.id == infos[0].id and not dup.created
    assert (
        dup.payload == {"k": "v"} and dup.timeout is not None and dup.timeout.total_seconds() == 5
    )


async def test_async_session(pg_dsn: str, schema: str, async_engine: AsyncEngine) -> None:
    producer = AsyncProducer(schema=schema)
    async with AsyncSession(async_engine) as session:
        await producer.enqueue("a", conn=session)
        await session.rollback()
    assert count_tasks(pg_dsn, schema) == 0
    async with AsyncSession(async_engine) as session:
        await producer.enqueue("a", idempotency_key="k", conn=session)
        with pytest.raises(DuplicateTask):
            await producer.enqueue("a", idempotency_key="k", conn=session, on_conflict="raise")
        await producer.enqueue("b", conn=session)
        await session.commit()
    assert count_tasks(pg_dsn, schema) == 2


def test_sync_producer_refuses_async_sqlalchemy(pg_dsn: str) -> None:
    eng = create_async_engine(_url(pg_dsn, "psycopg"))
    with pytest.raises(TypeError, match="asynchronous"):
        Producer().enqueue("t", conn=AsyncSession(eng))


async def test_async_producer_refuses_sync_sqlalchemy(engine: sa.Engine) -> None:
    with Session(engine) as session, pytest.raises(TypeError, match="synchronous"):
        await AsyncProducer().enqueue("t", conn=session)


def _infos_of_rows(pg_dsn: str, schema: str) -> list[TaskInfo]:
    with psycopg.connect(pg_dsn) as c, c.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(f"SELECT {_sql.TASK_COLUMNS} FROM {schema}.tasks ORDER BY id")
        return [TaskInfo.from_row(r) for r in rows.fetchall()]


def _tasks() -> list[Task]:
    return [
        Task("a", {"s": "tab\t back\\slash é"}, delay=1.5, timeout=3),
        Task("b", [1], queue="q", priority=7, retention=timedelta(hours=2)),
        Task("c", run_at=datetime(2030, 1, 1, tzinfo=timezone.utc), max_attempts=2),
    ]


def test_batches_and_single_tasks_return_their_rows(
    pg_dsn: str, schema: str, engine: sa.Engine
) -> None:
    """SQLAlchemy cannot COPY generically: batches go through unnest, one task through INSERT."""
    producer = Producer(schema=schema)
    with Session(engine) as session:
        infos = producer.enqueue_many(_tasks(), conn=session)
        infos.append(producer.enqueue("one", {"x": 1}, delay=2, conn=session))
        session.commit()
    assert _infos_of_rows(pg_dsn, schema) == infos
    assert infos[0].run_at - infos[0].created_at == timedelta(seconds=1.5)


async def test_async_batches_and_single_tasks_return_their_rows(
    pg_dsn: str, schema: str, async_engine: AsyncEngine
) -> None:
    producer = AsyncProducer(schema=schema)
    async with async_engine.connect() as conn:
        infos = await producer.enqueue_many(_tasks(), conn=conn)
        infos.append(await producer.enqueue("one", {"x": 1}, delay=2, conn=conn))
        infos.append(await producer.enqueue("k", idempotency_key="k", conn=conn))
        again = await producer.enqueue("k", {"other": 1}, idempotency_key="k", conn=conn)
        await conn.commit()
    assert _infos_of_rows(pg_dsn, schema) == infos
    assert again.id == infos[-1].id and not again.created
