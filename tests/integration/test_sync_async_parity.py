"""One behaviour table, run through `Client`/`Producer` and through `AsyncClient`/
`AsyncProducer` on a real PostgreSQL: the same results and the same errors.

The sync classes are generated from the async ones (tools/gen_sync.py), and
tests/unit/test_sync_async_surface.py compares their signatures; this compares what they do.
Each flavour runs in a schema of its own, from the same setup, so even the ids agree.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from pgtasq import AsyncClient, AsyncProducer, Client, Producer, Task, TaskFilter, TaskInfo
from pgtasq._client_ops import Preview, TaskPage
from tests.integration.test_client import enqueue, set_state

STATES = ("pending", "running", "completed", "failed", "cancelled")


@dataclasses.dataclass
class Env:
    """One flavour's objects: a client, a producer, a caller's connection (psycopg, not in
    autocommit) and a SQLAlchemy connection, all on the flavour's own schema."""

    client: Client | AsyncClient
    producer: Producer | AsyncProducer
    bare_client: Client | AsyncClient  # no DSN
    conn: Any
    sa_conn: Any
    ids: dict[str, int]  # the id of a task in each state, and of a missing one


async def done(value: Any) -> Any:
    """A sync call's result, or an async call's awaited result."""
    return await value if inspect.isawaitable(value) else value


def _when(value: datetime | None) -> bool:
    return value is not None


def shape(value: Any) -> Any:
    """What must agree between the flavours: everything but wall-clock times."""
    if isinstance(value, TaskInfo):
        fields = dataclasses.asdict(value)
        for name in ("run_at", "created_at", "updated_at", "attempted_at", "finalized_at"):
            fields[name] = _when(fields[name])
        fields["locked_until"] = _when(fields["locked_until"])
        fields["payload"] = shape(value.payload)
        fields["result"] = shape(value.result)
        return fields
    if isinstance(value, TaskPage):
        return ([shape(t) for t in value.tasks], value.total, value.next_cursor is None)
    if isinstance(value, Preview):
        return ("preview", value.text, value.truncated)
    if isinstance(value, list):
        return [shape(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            k: v
            for k, v in dataclasses.asdict(value).items()
            if not isinstance(v, (datetime, timedelta))
        }
    return value


def _neutral(message: str) -> str:
    """An error message with the flavour's own class names made neutral."""
    return re.sub(r"\bAsync(?=[A-Z])", "", message)


async def outcome(call: Callable[[Env], Any], env: Env) -> tuple[Any, ...]:
    try:
        value = await done(call(env))
    except Exception as exc:
        return ("raises", type(exc).__name__, _neutral(str(exc)))
    return ("returns", shape(value))


async def commit_after(env: Env, call: Callable[[Env], Any]) -> Any:
    """The call on the caller's connection, then the caller's commit."""
    value = await done(call(env))
    await done(env.conn.commit())
    return value


async def rollback_after(env: Env, call: Callable[[Env], Any]) -> Any:
    """The call on the caller's connection, then the caller's rollback: nothing stays."""
    value = await done(call(env))
    await done(env.conn.rollback())
    return value


def _bulk_filter(env: Env) -> TaskFilter:
    return TaskFilter().ids(*[env.ids[s] for s in STATES])


# (name, call): the calls every flavour makes, in this order, on the same data.
CASES: list[tuple[str, Callable[[Env], Any]]] = [
    *[(f"get {s}", lambda e, s=s: e.client.get_task(e.ids[s])) for s in (*STATES, "missing")],
    ("get bad id", lambda e: e.client.get_task(0)),
    ("get not an id", lambda e: e.client.get_task("1")),  # type: ignore[arg-type]
    ("list", lambda e: e.client.list_tasks(TaskFilter().order_by("id"), count="exact")),
    ("list preview", lambda e: e.client.list_tasks(full=False, count="none")),
    ("list bad count", lambda e: e.client.list_tasks(count="many")),  # type: ignore[arg-type]
    ("stats", lambda e: e.client.stats()),
    ("queues", lambda e: e.client.list_queues()),
    ("pause", lambda e: e.client.pause_queue("q1")),
    ("pause unknown", lambda e: e.client.pause_queue("nope", create=False)),
    ("queues paused", lambda e: e.client.list_queues()),
    ("resume", lambda e: e.client.resume_queue("q1")),
    ("history", lambda e: e.client.queue_history(days=3)),
    ("history bad days", lambda e: e.client.queue_history(days=0)),
    ("workers", lambda e: e.client.list_workers()),
    ("schedules", lambda e: e.client.list_schedules()),
    ("no dsn", lambda e: e.bare_client.stats()),
    ("conn of the other kind", lambda e: e.client.stats(conn=object())),  # type: ignore[arg-type]
    ("stats on caller's conn", lambda e: rollback_after(e, lambda e: e.client.stats(conn=e.conn))),
    *[
        (f"{op} {s}", lambda e, op=op, s=s: getattr(e.client, f"{op}_task")(e.ids[f"{op}/{s}"]))
        for op in ("cancel", "retry", "delete")
        for s in (*STATES, "missing")
    ],
    ("cancel many", lambda e: e.client.cancel_tasks(_bulk_filter(e), batch_size=2)),
    ("retry many", lambda e: e.client.retry_tasks(_bulk_filter(e))),
    ("delete many", lambda e: e.client.delete_tasks(_bulk_filter(e), batch_size=1)),
    ("bulk bad batch", lambda e: e.client.delete_tasks(TaskFilter(), batch_size=0)),
    ("clean", lambda e: e.client.clean(retention=0.001)),
    ("clean bad retention", lambda e: e.client.clean(retention=-1)),
    ("enqueue", lambda e: e.producer.enqueue("t", {"n": 1}, queue="q2", priority=3)),
    ("enqueue task", lambda e: e.producer.enqueue(Task("t", [1], idempotency_key="k"))),
    ("enqueue same key", lambda e: e.producer.enqueue(Task("t", [2], idempotency_key="k"))),
    (
        "enqueue same key, raise",
        lambda e: e.producer.enqueue(Task("t", idempotency_key="k"), on_conflict="raise"),
    ),
    ("enqueue bad on_conflict", lambda e: e.producer.enqueue("t", on_conflict="no")),  # type: ignore[arg-type]
    ("enqueue bad type", lambda e: e.producer.enqueue("")),
    ("enqueue too big", lambda e: e.producer.enqueue("t", "x" * 2_000_000)),
    ("enqueue none", lambda e: e.producer.enqueue_many([])),
    ("enqueue many", lambda e: e.producer.enqueue_many([Task("m", i) for i in range(7)])),
    (
        "enqueue many keyed",
        lambda e: e.producer.enqueue_many(
            [Task("m", i, idempotency_key=f"m{i % 3}") for i in range(6)]
        ),
    ),
    (
        "enqueue on caller's conn",
        lambda e: commit_after(e, lambda e: e.producer.enqueue("c", 1, conn=e.conn)),
    ),
    (
        "enqueue many on caller's conn (COPY)",
        lambda e: commit_after(
            e, lambda e: e.producer.enqueue_many([Task("c", i) for i in range(50)], conn=e.conn)
        ),
    ),
    (
        "enqueue rolled back",
        lambda e: rollback_after(e, lambda e: e.producer.enqueue("gone", conn=e.conn)),
    ),
    (
        "duplicate on caller's conn",
        lambda e: commit_after(
            e,
            lambda e: e.producer.enqueue(
                Task("t", idempotency_key="k"), conn=e.conn, on_conflict="raise"
            ),
        ),
    ),
    (
        "duplicate among many on caller's conn",
        lambda e: commit_after(
            e,
            lambda e: e.producer.enqueue_many(
                [Task("t", idempotency_key="new"), Task("t", idempotency_key="k")],
                conn=e.conn,
                on_conflict="raise",
            ),
        ),
    ),
    (
        "caller's conn still usable",
        lambda e: commit_after(e, lambda e: e.client.stats(conn=e.conn)),
    ),
    (
        "enqueue on SQLAlchemy",
        lambda e: e.producer.enqueue_many([Task("s", i) for i in range(3)], conn=e.sa_conn),
    ),
    ("list at the end", lambda e: e.client.list_tasks(TaskFilter().order_by("id").limit(500))),
]


def _setup(dsn: str, schema: str) -> dict[str, int]:
    """Tasks in every state, one set per single-task operation; the same ids in any schema."""
    ids: dict[str, int] = {}
    for prefix in ("", "cancel/", "retry/", "delete/"):
        made = enqueue(dsn, schema, *[Task("t", i, queue="q1") for i in range(len(STATES))])
        for state, task_id in zip(STATES, made, strict=True):
            if state != "pending":
                set_state(dsn, schema, [task_id], state)
            ids[prefix + state] = task_id
        ids[prefix + "missing"] = made[-1] + 10_000
    return ids


async def _run_sync(dsn: str, schema: str) -> list[tuple[Any, ...]]:
    ids = _setup(dsn, schema)
    engine = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with (
            Client(dsn, schema=schema) as client,
            Producer(dsn, schema=schema) as producer,
            psycopg.connect(dsn) as conn,
            engine.begin() as sa_conn,
        ):
            env = Env(client, producer, Client(schema=schema), conn, sa_conn, ids)
            return [await outcome(call, env) for _, call in CASES]
    finally:
        engine.dispose()


async def _run_async(dsn: str, schema: str) -> list[tuple[Any, ...]]:
    ids = _setup(dsn, schema)
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        async with (
            AsyncClient(dsn, schema=schema) as client,
            AsyncProducer(dsn, schema=schema) as producer,
            await psycopg.AsyncConnection.connect(dsn) as conn,
            engine.begin() as sa_conn,
        ):
            env = Env(client, producer, AsyncClient(schema=schema), conn, sa_conn, ids)
            return [await outcome(call, env) for _, call in CASES]
    finally:
        await engine.dispose()


async def test_sync_and_async_agree_on_one_behaviour_table(
    pg_dsn: str, schema: str, other_schema: str
) -> None:
    sync = await _run_sync(pg_dsn, schema)
    async_ = await _run_async(pg_dsn, other_schema)
    differ = [
        f"{name}:\n  sync:  {str(s)[:400]}\n  async: {str(a)[:400]}"
        for (name, _), s, a in zip(CASES, sync, async_, strict=True)
        if s != a
    ]
    assert not differ, "\n".join(differ)
    # The table exercises both outcomes, and the errors users meet.
    raised = {o[1] for o in sync if o[0] == "raises"}
    assert {
        "TaskNotFound",
        "TaskRunning",
        "TaskAlreadyAvailable",
        "TaskAlreadyFinalized",
        "DuplicateTask",
        "QueueNotFound",
        "ConfigurationError",
        "TypeError",
        "TaskValidationError",
    } <= raised, raised
    assert sum(o[0] == "returns" for o in sync) > len(CASES) // 2
