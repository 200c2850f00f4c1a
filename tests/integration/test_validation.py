"""Every value a caller hands to pgtasq is checked before any SQL, the same on every driver.

Each case is a value PostgreSQL (or a later computation, or a reader of the row) would refuse.
It must raise the documented error, naming the field, and leave the caller's transaction
usable: the caller's own work and a good task enqueued after the error commit together.
The drivers: psycopg (sync and async), and SQLAlchemy over psycopg, psycopg2 and asyncpg.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import pgtasq
from pgtasq import (
    AsyncClient,
    AsyncProducer,
    Client,
    ConfigurationError,
    Consumer,
    InvalidFilter,
    PgtasqError,
    Producer,
    Task,
    TaskContext,
    TaskFilter,
    TaskValidationError,
)
from pgtasq._limits import (
    DURATION_MAX_SECONDS,
    PAYLOAD_MAX_DEPTH,
    SQL_KEYWORDS_NOT_UNRESERVED,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
)
from tests.conftest import count_tasks

UTC = timezone.utc
DRIVERS = ["psycopg", "psycopg-async", "sqlalchemy+psycopg", "sqlalchemy+psycopg2", "asyncpg"]


def nested(depth: int) -> Any:
    """A payload whose arrays nest ``depth`` levels deep (``[[…]]``)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _url(dsn: str, driver: str) -> str:
    assert dsn.startswith("postgresql://"), "these tests take a URL-style DSN"
    return f"postgresql+{driver}://" + dsn[len("postgresql://") :]


class Caller:
    """A caller's open transaction on one driver, with pgtasq used on it.

    Every method is awaited, whatever the driver, so one test body serves them all.
    """

    def __init__(self, driver: str, conn: Any, schema: str) -> None:
        self.driver = driver
        self.conn = conn
        self.asynchronous = driver in ("psycopg-async", "asyncpg")
        producer = AsyncProducer if self.asynchronous else Producer
        client = AsyncClient if self.asynchronous else Client
        self.producer: Any = producer(schema=schema)
        self.client: Any = client(schema=schema)
        self.schema = schema

    async def _await(self, value: Any) -> Any:
        return await value if self.asynchronous else value

    async def execute(self, sql: str) -> Any:
        """Run the caller's own statement; returns the first column of the first row."""
        if self.driver.startswith("psycopg"):
            cur = await self._await(self.conn.execute(sql))
            row = await self._await(cur.fetchone()) if cur.description else None
        else:
            result = await self._await(self.conn.execute(sa.text(sql)))
            row = result.first() if result.returns_rows else None
        return None if row is None else row[0]

    async def enqueue(self, *args: Any, **kwargs: Any) -> Any:
        return await self._await(self.producer.enqueue(*args, conn=self.conn, **kwargs))

    async def enqueue_many(self, tasks: Callable[[], list[Task]]) -> Any:
        return await self._await(self.producer.enqueue_many(tasks(), conn=self.conn))

    async def client_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._await(getattr(self.client, method)(*args, conn=self.conn, **kwargs))

    async def commit(self) -> None:
        await self._await(self.conn.commit())


@pytest.fixture(params=DRIVERS)
async def caller(request: pytest.FixtureRequest, pg_dsn: str, schema: str) -> AsyncIterator[Caller]:
    """A caller's connection with a transaction open and some of the caller's own work in it
    (a row in ``<schema>.marks``)."""
    driver: str = request.param
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute(f"CREATE TABLE {schema}.marks (id int)")
    if driver == "psycopg":
        with psycopg.connect(pg_dsn) as conn:
            c = Caller(driver, conn, schema)
            await c.execute(f"INSERT INTO {schema}.marks VALUES (1)")
            yield c
    elif driver == "psycopg-async":
        async with await psycopg.AsyncConnection.connect(pg_dsn) as aconn:
            c = Caller(driver, aconn, schema)
            await c.execute(f"INSERT INTO {schema}.marks VALUES (1)")
            yield c
    elif driver == "asyncpg":
        engine = create_async_engine(_url(pg_dsn, "asyncpg"))
        try:
            async with engine.connect() as saconn:
                c = Caller(driver, saconn, schema)
                await c.execute(f"INSERT INTO {schema}.marks VALUES (1)")
                yield c
        finally:
            await engine.dispose()
    else:
        name = driver.split("+")[1]
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")
        sync_engine = sa.create_engine(_url(pg_dsn, name))
        try:
            with sync_engine.connect() as sconn:
                c = Caller(driver, sconn, schema)
                await c.execute(f"INSERT INTO {schema}.marks VALUES (1)")
                yield c
        finally:
            sync_engine.dispose()


async def _still_usable(caller: Caller, pg_dsn: str, schema: str) -> None:
    """The caller's transaction goes on: a statement, a good enqueue, and the commit keep the
    caller's own work and that task together."""
    assert await caller.execute("SELECT 1") == 1
    await caller.enqueue("good")
    await caller.commit()
    assert count_tasks(pg_dsn, schema) == 1
    with psycopg.connect(pg_dsn) as c:
        assert c.execute(f"SELECT count(*) FROM {schema}.marks").fetchone() == (1,)


_FAR = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)
_KIRITIMATI = timezone(timedelta(hours=14))

ENQUEUE_CASES: list[tuple[str, dict[str, Any]]] = [
    # durations: an interval holds microseconds; now() ± the value must stay a timestamp
    ("timeout", {"timeout": 1e13}),
    ("timeout", {"timeout": 4e-7}),
    ("timeout", {"timeout": timedelta(days=999_999_999)}),
    ("retention", {"retention": 1e13}),
    ("retention", {"retention": 1e-7}),
    ("delay", {"delay": 1e13}),  # past the year 294276
    ("delay", {"delay": 10**400}),  # float() of it overflows
    ("delay", {"delay": DURATION_MAX_SECONDS * 1.01}),
    # points in time that a session in another time zone could not read back
    ("deadline", {"deadline": _FAR}),
    ("run_at", {"run_at": datetime(1, 1, 1, tzinfo=UTC)}),
    ("run_at", {"run_at": datetime(1, 1, 1, 3, tzinfo=_KIRITIMATI)}),
    # text PostgreSQL refuses: NUL, and lone surrogates (not UTF-8)
    ("type", {"task": "a\ud800"}),
    ("queue", {"queue": "q\udc80"}),
    ("idempotency_key", {"idempotency_key": "k\ud800"}),
    ("idempotency_key", {"idempotency_key": "k\x00"}),
    # JSON that jsonb or a reader of it refuses
    ("payload", {"payload": nested(10_000)}),
    ("payload", {"payload": nested(PAYLOAD_MAX_DEPTH + 1)}),
    ("payload", {"payload": {"text": "lone \ud800"}}),
    ("payload", {"payload": {"key \udc80": 1}}),
    ("payload", {"payload": {"nul": "a\x00b"}}),
    ("payload", {"payload": [float("nan")]}),
]


@pytest.mark.parametrize(("field", "options"), ENQUEUE_CASES, ids=[c[0] for c in ENQUEUE_CASES])
async def test_enqueue_refuses_before_any_sql(
    caller: Caller, pg_dsn: str, schema: str, field: str, options: dict[str, Any]
) -> None:
    options = dict(options)
    task = options.pop("task", "t")
    payload = options.pop("payload", None)
    with pytest.raises(TaskValidationError) as caught:
        await caller.enqueue(task, payload, **options)
    assert caught.value.field == field
    await _still_usable(caller, pg_dsn, schema)


MANY_CASES: list[tuple[str, Callable[[], list[Task]]]] = [
    # several keyless tasks: the COPY path on psycopg (it raised OverflowError midway)
    ("delay", lambda: [Task("a"), Task("b", delay=1e12)]),
    ("timeout", lambda: [Task("a"), Task("b", timeout=1e13)]),
    ("retention", lambda: [Task("a", retention=1e13), Task("b")]),
    ("payload", lambda: [Task("a"), Task("b", "\udc80")]),
    ("type", lambda: [Task("a"), Task("b\udc80")]),
]


@pytest.mark.parametrize(("field", "tasks"), MANY_CASES, ids=[c[0] for c in MANY_CASES])
async def test_enqueue_many_refuses_before_any_sql(
    caller: Caller, pg_dsn: str, schema: str, field: str, tasks: Callable[[], list[Task]]
) -> None:
    with pytest.raises(TaskValidationError) as caught:
        await caller.enqueue_many(tasks)
    assert caught.value.field == field
    await _still_usable(caller, pg_dsn, schema)


_PLUS5 = timezone(timedelta(hours=5))

CLIENT_CASES: list[tuple[type[PgtasqError], str, Callable[[], tuple[Any, ...]], dict[str, Any]]] = [
    (InvalidFilter, "list_tasks", lambda: (TaskFilter().types("a\x00b"),), {}),
    (InvalidFilter, "list_tasks", lambda: (TaskFilter().queues("q\x00"),), {}),
    (InvalidFilter, "list_tasks", lambda: (TaskFilter().types("\ud800"),), {}),
    (InvalidFilter, "list_tasks", lambda: (TaskFilter().queues("\udc80x"),), {}),
    # year 1 at +05:00 has no UTC time in Python: asyncpg raised OverflowError
    (
        InvalidFilter,
        "list_tasks",
        lambda: (TaskFilter().created_after(datetime(1, 1, 1, tzinfo=_PLUS5)),),
        {},
    ),
    (InvalidFilter, "list_tasks", lambda: ("not a filter",), {}),
    (InvalidFilter, "cancel_tasks", lambda: (TaskFilter().types("a\x00"),), {}),
    (InvalidFilter, "delete_tasks", lambda: (TaskFilter().queues("\ud800"),), {}),
    (InvalidFilter, "pause_queue", lambda: ("q\x00",), {}),
    (InvalidFilter, "resume_queue", lambda: ("q\ud800",), {}),
    (InvalidFilter, "queue_history", lambda: ("x\x00",), {}),
    (InvalidFilter, "queue_history", lambda: ("\udc80",), {}),
    (InvalidFilter, "queue_history", lambda: (), {"days": "7"}),
    (TaskValidationError, "clean", lambda: (), {"retention": 1e12}),
    (TaskValidationError, "clean", lambda: (), {"retention": float("inf")}),
]


@pytest.mark.parametrize(
    ("error", "method", "args", "kwargs"),
    CLIENT_CASES,
    ids=[f"{c[1]}-{i}" for i, c in enumerate(CLIENT_CASES)],
)
async def test_client_refuses_before_any_sql(
    caller: Caller,
    pg_dsn: str,
    schema: str,
    error: type[PgtasqError],
    method: str,
    args: Callable[[], tuple[Any, ...]],
    kwargs: dict[str, Any],
) -> None:
    with pytest.raises(error):
        await caller.client_call(method, *args(), **kwargs)
    await _still_usable(caller, pg_dsn, schema)


_ODD = timezone(-timedelta(hours=23, minutes=22, seconds=19, microseconds=996968))


async def test_utc_offsets_postgresql_text_refuses_are_stored(
    caller: Caller, pg_dsn: str, schema: str
) -> None:
    """Python allows offsets past ±15:59 and with fractions of a second; PostgreSQL's text
    input does not (COPY and psycopg2 sent them as text and aborted the transaction)."""
    run_at = datetime(2020, 1, 1, tzinfo=_ODD)
    deadline = datetime(2999, 1, 1, tzinfo=timezone(timedelta(hours=17)))
    one = await caller.enqueue("t", run_at=run_at, deadline=deadline)
    many = await caller.enqueue_many(
        lambda: [Task("a", run_at=run_at), Task("b", deadline=deadline), Task("c")]
    )
    page = await caller.client_call(
        "list_tasks", TaskFilter().created_after(datetime(2000, 1, 1, tzinfo=_ODD)).limit(10)
    )
    assert page.total == 4
    await caller.commit()
    with Client(pg_dsn, schema=schema) as client:
        assert client.get_task(one.id).run_at == run_at
        assert client.get_task(one.id).deadline == deadline
        assert client.get_task(many[0].id).run_at == run_at
        assert client.get_task(many[1].id).deadline == deadline


async def test_the_text_backslash_u0000_is_stored(caller: Caller, pg_dsn: str, schema: str) -> None:
    """The six characters \\u0000 are ordinary text (only a NUL character is refused)."""
    payload = {"text": "\\u0000", "\\u0000": ["\\\\u0000", "a\\u0000b"]}
    info = await caller.enqueue("t", payload)
    await caller.commit()
    assert info.payload == payload
    assert Client(pg_dsn, schema=schema).get_task(info.id).payload == payload


def test_accepted_extremes_are_stored_run_and_read_back_in_any_time_zone(
    pg_dsn: str, schema: str
) -> None:
    """The limits are what every reader can hold: a payload nested PAYLOAD_MAX_DEPTH deep, the
    longest durations and the earliest and latest times, read back in sessions at UTC+14 and
    UTC-12, and run by a worker."""
    deep = nested(PAYLOAD_MAX_DEPTH)
    with Producer(pg_dsn, schema=schema) as producer:
        early = producer.enqueue(
            "t",
            deep,
            run_at=TIMESTAMP_MIN,
            deadline=TIMESTAMP_MAX,
            timeout=DURATION_MAX_SECONDS,
            retention=DURATION_MAX_SECONDS,
        )
        late = producer.enqueue("t", run_at=TIMESTAMP_MAX, retention=1e-6, timeout=1e-6)
        producer.enqueue_many([Task("t", delay=DURATION_MAX_SECONDS), Task("t", retention=1e-6)])
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):
        with psycopg.connect(pg_dsn, options=f"-c TimeZone={zone}") as conn:
            assert Client(schema=schema).get_task(early.id, conn=conn).payload == deep
            assert Client(schema=schema).get_task(late.id, conn=conn).run_at == TIMESTAMP_MAX
            assert Client(schema=schema).list_tasks(conn=conn).total == 4
    seen: list[Any] = []
    consumer = Consumer(schema=schema, lease=5.0, heartbeat_interval=0.2, poll_interval=0.2)

    @consumer.task("t")
    def handle(ctx: TaskContext) -> Any:
        seen.append(ctx.payload)
        return ctx.payload

    counts = consumer.run(pg_dsn, burst=True)
    assert counts.completed == 2 and deep in seen  # the others wait for run_at
    with Client(pg_dsn, schema=schema) as client:
        assert client.get_task(early.id).result == deep
        assert client.clean(retention=DURATION_MAX_SECONDS) >= 1  # the 1 µs retention one
        assert client.clean(retention=1e-6) == 0


def test_the_keyword_list_is_the_servers(conn: psycopg.Connection[Any]) -> None:
    """Every keyword this server does not let name a schema unquoted is in our list, and no
    unreserved one is (it would refuse a good name)."""
    rows = conn.execute("SELECT word, catcode FROM pg_get_keywords()").fetchall()
    not_unreserved = {word for word, catcode in rows if catcode != "U"}
    unreserved = {word for word, catcode in rows if catcode == "U"}
    assert not_unreserved <= SQL_KEYWORDS_NOT_UNRESERVED
    assert not unreserved & SQL_KEYWORDS_NOT_UNRESERVED


@pytest.mark.parametrize("schema", ["information_schema", "pg_catalog", "user", "pgtasq\n"])
def test_migrate_refuses_a_system_or_keyword_schema(pg_dsn: str, schema: str) -> None:
    """Before: tables were created inside information_schema, and a second migrate crashed."""
    with pytest.raises(ConfigurationError, match="schema name"):
        pgtasq.migrate(pg_dsn, schema=schema)
    with psycopg.connect(pg_dsn) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = 'tasks'",
            [schema],
        ).fetchone()
    assert found == (0,)
