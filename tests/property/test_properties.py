"""Property-based tests (Hypothesis): whatever a caller hands pgtasq, only documented errors.

Generated strings (NUL, lone surrogates, escapes, every plane), numbers (huge, tiny, NaN,
infinite, of the wrong type), points in time (any offset, years 1 to 9999), JSON (nested,
wide, odd keys) drive `Task`, `TaskFilter`, the Client, the Scheduler and a burst worker.
The properties:

- only documented errors: subclasses of `PgtasqError`;
- the caller's transaction is usable after any error (``SELECT 1`` in it, on psycopg and on
  SQLAlchemy over asyncpg, where a bad value used to reach the server);
- a value that was accepted is stored and read back (and a registered schedule entry runs);
- every task a burst worker is given reaches a final state.

One migrated schema per module; each example rolls its transaction back (the worker's
property commits, and checks only its own tasks). Failures found here are kept as
``@example`` regressions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

import pgtasq
from pgtasq import (
    AsyncClient,
    AsyncProducer,
    Client,
    Consumer,
    Cursor,
    InvalidSchedule,
    PgtasqError,
    Producer,
    Scheduler,
    SkipRetry,
    Task,
    TaskContext,
    TaskFilter,
    TaskStatus,
    TaskValidationError,
)
from pgtasq._limits import PAYLOAD_MAX_DEPTH, json_depth
from pgtasq.filters import ORDER_FIELDS, STATES
from pgtasq.models import dump_payload
from tests.conftest import clone_schema

UTC = timezone.utc
# Found here: COPY sent it as text, which PostgreSQL refuses (past ±15:59, with a fraction).
ODD_OFFSET = timezone(-timedelta(hours=23, minutes=22, seconds=19, microseconds=996968))

# PGTASQ_PROPERTY_SCALE=10 runs ten times as many examples (a longer hunt than the suite's).
SCALE = int(os.environ.get("PGTASQ_PROPERTY_SCALE", "1"))
DB = settings(
    max_examples=60 * SCALE,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the fixtures are module-scoped or stateless
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
PURE = settings(
    max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- strategies -----------------------------------------------------------------------------
# Each value comes from a "good" strategy (what pgtasq must accept, odd as it may be: every
# Unicode plane, the limits themselves) or a "bad" one (NUL, lone surrogates, out of range,
# wrong types). A spec is drawn all-good half of the time, mixed otherwise, so accepted
# values reach the database as often as refused ones exercise the checks.

# Every code point, lone surrogates included (Hypothesis leaves them out by default).
any_char = st.characters(exclude_categories=())
storable_char = st.characters(codec="utf-8", exclude_characters="\x00")
SPECIAL = ["\x00", "\ud800", "\udfff", "\\u0000", "\\", "", " ", "\n", "\t", "'", '"', "%s"]
texts = st.one_of(
    st.text(any_char, max_size=20),
    st.sampled_from(SPECIAL),
    st.builds("".join, st.lists(st.sampled_from([*SPECIAL, "a", "é", "🙂"]), max_size=6)),
    st.text(st.characters(codec="utf-8"), min_size=120, max_size=300),  # around the length limits
)
good_texts = st.one_of(
    st.text(storable_char, max_size=30),
    st.builds(
        "".join, st.lists(st.sampled_from(["\\u0000", "\\", "%s", "\n", "🙂", "a"]), max_size=5)
    ),
)
good_names = st.one_of(
    st.text(storable_char, min_size=1, max_size=128).filter(str.strip),
    st.text("abc.:_-", min_size=1, max_size=8),
)
names = st.one_of(good_names, texts)
wrong_types = st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.binary(max_size=3))

good_durations = st.one_of(
    st.floats(1e-6, 3_155_760_000),
    st.integers(1, 3_155_760_000),
    st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=36524)),
    st.sampled_from([1e-6, 3_155_760_000]),
)
numbers = st.one_of(
    good_durations,
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.floats(min_value=0, max_value=1e-5),
    st.floats(min_value=1e8, max_value=1e14),
    st.timedeltas(),
    st.sampled_from([0, 1e-7, 5e-7, 3_155_760_001, 9.3e12, 10**400]),
)
durations = st.one_of(st.none(), numbers, wrong_types)

offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
    ),
)
good_times = st.one_of(
    st.datetimes(datetime(1, 1, 3), datetime(9999, 12, 28), timezones=offsets),
    st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=st.timezones()),
)
aware_times = st.one_of(
    good_times,
    st.datetimes(timezones=offsets),
    st.sampled_from(
        [
            datetime.min.replace(tzinfo=UTC),
            datetime.max.replace(tzinfo=UTC),
            datetime.min.replace(tzinfo=timezone(timedelta(hours=5))),
            datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),
        ]
    ),
)
times = st.one_of(st.none(), aware_times, st.datetimes(), wrong_types)


def _json(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=20,
    )


good_json = _json(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**30), 10**30),
        st.floats(allow_nan=False, allow_infinity=False),
        good_texts,
    ),
    good_texts,
)
json_values = _json(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts), texts)


@st.composite
def deep_json(draw: st.DrawFn, good: bool) -> Any:
    """Arrays and objects nested up to the depth limit (and, if not good, far past it)."""
    depths = (
        st.integers(PAYLOAD_MAX_DEPTH - 3, PAYLOAD_MAX_DEPTH)
        if good
        else st.one_of(
            st.integers(PAYLOAD_MAX_DEPTH - 2, PAYLOAD_MAX_DEPTH + 2), st.sampled_from([500, 5000])
        )
    )
    depth = draw(depths)
    value: Any = draw(st.one_of(st.none(), st.integers(), good_texts))
    for i in range(depth - 1):
        value = [value] if (i % 3) else {draw(st.sampled_from(["k", "[", "\\u0000"])): value}
    return value


# Sizes: long strings around the default limit of 1 MiB (a 🙂 is 4 bytes of UTF-8).
big_payloads = st.builds(
    lambda n, c: {"blob": c * n}, st.integers(0, 300_000), st.sampled_from(["a", "é", "🙂", "\\"])
)
good_payloads = st.one_of(good_json, good_json, deep_json(good=True), big_payloads)
payloads = st.one_of(good_payloads, json_values, deep_json(good=False), st.sets(st.integers()))

good_options = st.fixed_dictionaries(
    {},
    optional={
        "queue": good_names,
        "priority": st.integers(-100, 100),
        "run_at": good_times,
        "max_attempts": st.integers(1, 2**31 - 1),
        "timeout": good_durations,
        "deadline": good_times,
        "idempotency_key": st.one_of(st.none(), good_names),
        "retention": good_durations,
    },
).flatmap(
    # run_at or delay, not both
    lambda opts: (
        st.just(opts)
        if "run_at" in opts
        else st.fixed_dictionaries(
            {k: st.just(v) for k, v in opts.items()}, optional={"delay": good_durations}
        )
    )
)
task_options = st.fixed_dictionaries(
    {},
    optional={
        "queue": names,
        "priority": st.one_of(st.integers(-200, 200), wrong_types),
        "run_at": times,
        "delay": durations,
        "max_attempts": st.one_of(st.integers(-2, 2**32), wrong_types),
        "timeout": durations,
        "deadline": times,
        "idempotency_key": st.one_of(st.none(), names),
        "retention": durations,
    },
)
# (type, payload, options): all good half of the time, anything otherwise.
task_specs = st.one_of(
    st.tuples(good_names, good_payloads, good_options),
    st.tuples(st.one_of(names, wrong_types), payloads, st.one_of(good_options, task_options)),
)
task_ids = st.one_of(st.integers(), st.integers(-5, 5), wrong_types, texts)


def as_numbers(value: Any) -> Any:
    """JSON with its numbers as Decimals: jsonb keeps numbers as numeric, so 1e308 comes back
    as the integer 10**308, equal in value but not as a float."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if isinstance(value, list):
        return [as_numbers(v) for v in value]
    return {k: as_numbers(v) for k, v in value.items()}


def make_task(task_type: Any, payload: Any, options: dict[str, Any]) -> Task:
    return Task(task_type, payload, **options)


filter_calls = st.lists(
    st.one_of(
        st.tuples(
            st.just("statuses"),
            st.lists(st.one_of(st.sampled_from([*STATES, "bogus"]), st.just(TaskStatus.FAILED))),
        ),
        st.tuples(st.just("types"), st.lists(st.one_of(names, wrong_types), max_size=3)),
        st.tuples(st.just("queues"), st.lists(st.one_of(names, wrong_types), max_size=3)),
        st.tuples(st.just("ids"), st.lists(st.one_of(st.integers(), wrong_types), max_size=3)),
        st.tuples(st.just("created_after"), st.tuples(times)),
        st.tuples(st.just("created_before"), st.tuples(times)),
        st.tuples(
            st.just("order_by"),
            st.tuples(
                st.sampled_from([*ORDER_FIELDS, "payload"]), st.sampled_from(["asc", "desc", "up"])
            ),
        ),
        st.tuples(st.just("limit"), st.tuples(st.one_of(st.integers(-5, 20_000), wrong_types))),
        st.tuples(st.just("offset"), st.tuples(st.one_of(st.integers(-5, 2_000_000), wrong_types))),
        st.tuples(
            st.just("after"),
            st.tuples(
                st.one_of(
                    st.none(),
                    st.builds(Cursor, st.one_of(st.integers(), aware_times, texts), st.integers()),
                )
            ),
        ),
    ),
    max_size=4,
)


def build_filter(calls: list[tuple[str, Any]]) -> TaskFilter:
    f = TaskFilter()
    for method, args in calls:
        f = getattr(f, method)(*args)
    return f


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_schema(pg_dsn: str) -> Iterator[str]:
    name = "p_" + uuid.uuid4().hex[:12]
    clone_schema(pg_dsn, name)
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture(scope="module")
def caller_conn(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn) as conn:
        yield conn


class AsyncpgCaller:
    """SQLAlchemy over asyncpg, driven from sync tests on a loop of its own."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        url = "postgresql+asyncpg://" + dsn[len("postgresql://") :]
        self.engine: AsyncEngine = create_async_engine(url)

    def run(self, op: Callable[[AsyncConnection], Any]) -> None:
        """``op(conn)`` inside a transaction with work of the caller's in it; then the
        property: a PgtasqError at most, and the transaction usable after it."""

        async def main() -> None:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
                try:
                    await op(conn)
                    event("accepted")
                except PgtasqError as exc:
                    event(f"refused: {type(exc).__name__}")
                assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
                await conn.rollback()

        self.loop.run_until_complete(main())

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.dispose())
        self.loop.close()


@pytest.fixture(scope="module")
def asyncpg_caller(pg_dsn: str) -> Iterator[AsyncpgCaller]:
    caller = AsyncpgCaller(pg_dsn)
    yield caller
    caller.close()


def in_caller_transaction(conn: psycopg.Connection[Any], op: Callable[[], Any]) -> Any:
    """Run ``op`` inside the caller's transaction (which already holds a statement of the
    caller's); only a PgtasqError may come out, and the transaction must stay usable."""
    conn.rollback()  # a clean start, whatever an earlier failing example left
    conn.execute("SELECT 1")
    result: Any = None
    try:
        result = op()
        event("accepted")
    except PgtasqError as exc:
        result = exc
        event(f"refused: {type(exc).__name__}")
    finally:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.rollback()
    return result


# -- Task and payloads, without a database --------------------------------------------------


@PURE
@given(task_specs)
@example(("t", [float("nan")], {}))
@example(("t", None, {"timeout": 10**400}))  # float() of it raised OverflowError
@example(("t", None, {"deadline": datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))}))
def test_task_and_payload_raise_only_task_validation_error(spec: Any) -> None:
    task_type, payload, options = spec
    try:
        task = make_task(task_type, payload, options)
        text = dump_payload(task.payload, 1 << 20)
    except TaskValidationError:
        return
    # Accepted: what PostgreSQL text and jsonb take.
    assert "\x00" not in task.type + task.queue + (task.idempotency_key or "")
    (task.type + task.queue + (task.idempotency_key or "") + text).encode()
    assert json.loads(text) == json.loads(json.dumps(task.payload))


@PURE
@given(st.text(any_char))
@example("\\u0000")
@example("\\\x00")
def test_payload_nul_check_is_exact(text: str) -> None:
    """Refused for a NUL character; the text backslash-u0000 is fine."""
    refused: TaskValidationError | None = None
    try:
        dump_payload({text: text}, 1 << 20)
    except TaskValidationError as exc:
        refused = exc
    if refused is None:
        assert "\x00" not in text
    else:
        assert "\x00" in text or "surrogate" in refused.message


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@PURE
@given(st.one_of(json_values, deep_json(good=True)), st.booleans())
@example(["\\", '"[', '\\"{'], False)  # brackets, quotes and backslashes inside strings
def test_json_depth_counts_nesting_not_brackets_in_strings(value: Any, ascii: bool) -> None:
    try:
        text = json.dumps(value, ensure_ascii=ascii)
    except ValueError:  # more digits than int->str allows
        return
    assert json_depth(text) == _depth(value)


@PURE
@given(filter_calls)
@example([("types", ["a\x00b"])])
@example([("queues", ["\ud800"])])
@example([("created_after", (datetime.min.replace(tzinfo=timezone(timedelta(hours=5))),))])
def test_filters_raise_only_invalid_filter(calls: list[tuple[str, Any]]) -> None:
    with contextlib.suppress(pgtasq.InvalidFilter):
        build_filter(calls)


# -- the caller's transaction, psycopg -----------------------------------------------------


@DB
@given(task_specs)
@example(("t", None, {"retention": 1e12}))  # every worker's cleaner overflowed on it
@example(("t", None, {"timeout": 4e-7}))  # rounds to a zero interval
@example(("t", None, {"delay": 1e13}))
@example(("a\x00b", None, {}))
@example(("t", {"k": "\\u0000"}, {}))
def test_enqueue_keeps_the_callers_transaction(
    caller_conn: psycopg.Connection[Any], module_schema: str, spec: Any
) -> None:
    task_type, payload, options = spec
    producer = Producer(schema=module_schema)

    def op() -> Any:
        task = make_task(task_type, payload, options)
        info = producer.enqueue(task, conn=caller_conn)
        stored = Client(schema=module_schema).get_task(info.id, conn=caller_conn)
        assert as_numbers(stored.payload) == as_numbers(json.loads(dump_payload(payload, 1 << 20)))
        assert (stored.type, stored.queue, stored.idempotency_key) == (
            task.type,
            task.queue,
            task.idempotency_key,
        )
        return info

    in_caller_transaction(caller_conn, op)


@DB
@given(st.lists(task_specs, min_size=2, max_size=6))
@example([("a", None, {}), ("b", None, {"delay": 1e12})])  # COPY raised OverflowError
@example([("a", None, {}), ("b", None, {"deadline": datetime(263, 8, 16, tzinfo=ODD_OFFSET)})])
def test_enqueue_many_keeps_the_callers_transaction(
    caller_conn: psycopg.Connection[Any], module_schema: str, specs: list[Any]
) -> None:
    producer = Producer(schema=module_schema)

    def op() -> Any:
        tasks = [make_task(*spec) for spec in specs]
        return producer.enqueue_many(tasks, conn=caller_conn)

    in_caller_transaction(caller_conn, op)


CLIENT_CALLS = st.one_of(
    st.tuples(
        st.sampled_from(["get_task", "cancel_task", "retry_task", "delete_task"]),
        st.tuples(task_ids),
        st.just({}),
    ),
    st.tuples(
        st.sampled_from(["list_tasks", "cancel_tasks", "retry_tasks", "delete_tasks"]),
        st.tuples(filter_calls),
        st.just({}),
    ),
    st.tuples(
        st.sampled_from(["pause_queue", "resume_queue"]),
        st.tuples(st.one_of(names, wrong_types)),
        st.just({}),
    ),
    st.tuples(
        st.just("queue_history"),
        st.tuples(st.one_of(st.none(), names, wrong_types)),
        st.fixed_dictionaries({"days": st.one_of(st.integers(-5, 5000), wrong_types)}),
    ),
    st.tuples(
        st.just("clean"),
        st.just(()),
        st.fixed_dictionaries(
            {"retention": numbers, "batch_size": st.one_of(st.integers(-5, 20_000), wrong_types)}
        ),
    ),
)


def _client_args(method: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if method in ("list_tasks", "cancel_tasks", "retry_tasks", "delete_tasks"):
        return (build_filter(args[0]),)
    return args


@DB
@given(CLIENT_CALLS)
@example(("list_tasks", ([("types", ["a\x00b"])],), {}))
@example(("pause_queue", ("q\x00",), {}))
@example(("queue_history", ("x\x00",), {"days": 7}))
@example(("clean", (), {"retention": 1e12, "batch_size": 10}))
def test_client_keeps_the_callers_transaction(
    caller_conn: psycopg.Connection[Any], module_schema: str, call: Any
) -> None:
    method, args, kwargs = call
    client = Client(schema=module_schema)
    in_caller_transaction(
        caller_conn,
        lambda: getattr(client, method)(*_client_args(method, args), conn=caller_conn, **kwargs),
    )


# -- the caller's transaction, SQLAlchemy over asyncpg -----------------------------------------


@DB
@given(CLIENT_CALLS)
@example(("list_tasks", ([("types", ["a\x00b"])],), {}))  # reached the server and aborted
@example(
    (
        "list_tasks",
        ([("created_after", (datetime.min.replace(tzinfo=timezone(timedelta(hours=5))),))],),
        {},
    )
)
@example(("queue_history", ("x\x00",), {"days": 7}))
def test_asyncpg_client_keeps_the_callers_transaction(
    asyncpg_caller: AsyncpgCaller, module_schema: str, call: Any
) -> None:
    method, args, kwargs = call
    client = AsyncClient(schema=module_schema)

    async def op(conn: AsyncConnection) -> Any:
        return await getattr(client, method)(*_client_args(method, args), conn=conn, **kwargs)

    asyncpg_caller.run(op)


@DB
@given(st.lists(task_specs, min_size=1, max_size=4))
@example([("t", None, {"retention": 1e13})])
@example([("t", {"deep": [[[[[[]]]]]]}, {"deadline": datetime(9999, 12, 31, 23, tzinfo=UTC)})])
def test_asyncpg_enqueue_keeps_the_callers_transaction(
    asyncpg_caller: AsyncpgCaller, module_schema: str, specs: list[Any]
) -> None:
    producer = AsyncProducer(schema=module_schema)

    async def op(conn: AsyncConnection) -> Any:
        return await producer.enqueue_many([make_task(*spec) for spec in specs], conn=conn)

    asyncpg_caller.run(op)


# -- the Scheduler ------------------------------------------------------------------------------


@st.composite
def good_crons(draw: st.DrawFn) -> str:
    """5 or 6 fields, each a value, range, step or list within its field's range."""
    ranges = [(0, 59), (0, 23), (1, 28), (1, 12), (0, 6)]
    if draw(st.booleans()):
        ranges.insert(0, (0, 59))  # seconds first
    fields = []
    for low, high in ranges:
        n = st.integers(low, high)
        fields.append(
            draw(
                st.one_of(
                    st.just("*"),
                    st.builds("*/{}".format, st.integers(1, high - low + 1)),
                    st.builds(str, n),
                    st.builds(lambda a, b: f"{min(a, b)}-{max(a, b)}", n, n),
                    st.builds("{},{}".format, n, n),
                )
            )
        )
    return " ".join(fields)


cron_field = st.one_of(
    st.just("*"),
    st.builds("*/{}".format, st.integers(-1, 70)),
    st.builds("{}".format, st.integers(-1, 70)),
    st.builds("{}-{}".format, st.integers(-1, 70), st.integers(-1, 70)),
    st.builds("{},{}".format, st.integers(-1, 70), st.integers(-1, 70)),
    st.sampled_from(["L", "?", "mon", "jan", "1#2", "5L", "W", "15W", "\x00", "\ud800"]),
)
crons = st.one_of(
    good_crons(),
    st.builds(" ".join, st.lists(cron_field, min_size=4, max_size=7)),
    st.sampled_from(
        ["@daily", "@hourly", "@yearly", "@reboot", "@every", "0 0 29 2 *", "0 0 31 2 *"]
    ),
    texts,
)
zones = st.one_of(
    st.none(),
    st.sampled_from(["UTC", "Europe/Berlin", "Pacific/Kiritimati", "America/St_Johns"]),
    st.sampled_from(["Nowhere/X", "../etc/passwd", "UTC\x00", ""]),
    texts,
)


# (cron, entry name, time zone, task type, payload): all good half of the time.
schedule_specs = st.one_of(
    st.tuples(
        good_crons(),
        st.one_of(st.none(), good_names.filter(lambda n: len(n) <= 150)),
        st.one_of(st.none(), st.sampled_from(["UTC", "Europe/Berlin", "Pacific/Kiritimati"])),
        good_names,
        good_payloads,
    ),
    st.tuples(
        st.one_of(good_crons(), crons),
        st.one_of(st.none(), good_names, names),
        zones,
        st.one_of(good_names, names),
        st.one_of(good_payloads, payloads),
    ),
)


@DB
@given(
    schedule_specs,
    st.datetimes(datetime(1971, 1, 1), datetime(2200, 1, 1), timezones=offsets),
)
@example(
    ("* * * * *", "nightly\x00", None, "t", None), datetime(2026, 1, 1, tzinfo=UTC)
)  # killed Scheduler.run
@example(("* * * * *", "\ud800", None, "t", None), datetime(2026, 1, 1, tzinfo=UTC))
@example(("* * * * *", None, "0" * 300, "t", None), datetime(2000, 1, 1, tzinfo=UTC))  # OSError
def test_a_registered_entry_always_runs(
    caller_conn: psycopg.Connection[Any], module_schema: str, spec: Any, now: datetime
) -> None:
    """register raises only InvalidSchedule or TaskValidationError; what it accepts, run_once
    writes (taken up, then a tick later enqueued) inside the caller's transaction."""
    cron, name, zone, task_type, payload = spec
    scheduler = Scheduler(schema=module_schema)
    try:
        scheduler.register(cron, Task(task_type, payload), name=name, timezone=zone)
    except (InvalidSchedule, TaskValidationError) as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("registered")
    caller_conn.execute("SELECT 1")
    try:
        scheduler.run_once(now, conn=caller_conn)
        (entry,) = scheduler.entries()
        tick = entry.next_after(now)
        counts = scheduler.run_once(tick, conn=caller_conn)
        assert counts.ticks == 1 and counts.enqueued + counts.existing == 1
    finally:
        caller_conn.rollback()


# -- a burst worker ---------------------------------------------------------------------------

BEHAVIOURS = ["return payload", "return value", "raise", "skip"]
# What a handler returns or raises is generated from what a payload may hold; results and
# error messages PostgreSQL cannot store are the outcome writer's concern (tested there).
valid_texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
worker_task_options = st.fixed_dictionaries(
    {},
    optional={
        "priority": st.integers(-100, 100),
        "max_attempts": st.integers(1, 3),
        "timeout": st.one_of(st.floats(1e-6, 1e-3), st.floats(1, 1e9)),
        "deadline": st.datetimes(datetime(1, 1, 3), datetime(9999, 12, 28), timezones=offsets),
        "retention": st.floats(1e-6, 3e9),
        "run_at": st.datetimes(datetime(1, 1, 3), datetime(2020, 1, 1), timezones=offsets),
    },
)


@settings(DB, max_examples=25 * SCALE)
@given(
    st.lists(
        st.tuples(
            good_names,
            good_names,
            good_payloads,
            worker_task_options,
            st.sampled_from(BEHAVIOURS),
            good_json,
            valid_texts,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_every_task_a_burst_worker_is_given_reaches_a_final_state(
    pg_dsn: str, module_schema: str, specs: list[Any]
) -> None:
    accepted: list[tuple[Task, str, Any, str]] = []
    for task_type, queue, payload, options, behaviour, value, message in specs:
        try:
            task = Task(task_type, payload, queue=queue, **options)
            dump_payload(payload, 1 << 20)
            dump_payload(value, 1 << 20)
        except TaskValidationError:
            continue
        accepted.append((task, behaviour, value, message))
    event(f"tasks: {min(len(accepted), 3)}{'+' if len(accepted) >= 3 else ''}")
    if not accepted:
        return
    with Producer(pg_dsn, schema=module_schema) as producer:
        infos = producer.enqueue_many([t for t, *_ in accepted])
    plan = {info.id: rest for info, (_, *rest) in zip(infos, accepted, strict=True)}
    queues = sorted({t.queue for t, *_ in accepted})
    consumer = Consumer(
        schema=module_schema,
        queues=queues,
        lease=5.0,
        heartbeat_interval=0.2,
        poll_interval=0.1,
        shutdown_timeout=2.0,
        retry_delay=lambda info, exc: 0.0,
    )

    async def handle(ctx: TaskContext) -> Any:
        behaviour, value, message = plan[ctx.info.id]
        if behaviour == "raise":
            raise RuntimeError(message)
        if behaviour == "skip":
            raise SkipRetry(message)
        return ctx.payload if behaviour == "return payload" else value

    for task_type in sorted({t.type for t, *_ in accepted}):
        consumer.register(task_type, handle)
    consumer.run(pg_dsn, burst=True, handle_signals=False)
    with Client(pg_dsn, schema=module_schema) as client:
        for task_id in plan:
            status = client.get_task(task_id).status
            assert status.is_final, (task_id, status, plan[task_id])
