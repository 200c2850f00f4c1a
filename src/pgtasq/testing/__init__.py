"""Helpers for your own tests of code that enqueues or handles pgtasq tasks.

::

    from pgtasq.testing import assert_enqueued, run_until_empty

    def test_signup_sends_mail(pgtasq_dsn, pgtasq_schema):       # the pytest plugin's fixtures
        signup("ann@example.com")                                 # your code, enqueueing
        assert_enqueued(pgtasq_dsn, schema=pgtasq_schema, type="email.send", count=1)
        counts = run_until_empty(consumer, pgtasq_dsn)            # a burst worker
        assert counts.completed == 1

- `isolated_schema`: a new pgtasq schema, migrated, dropped afterwards (what the
  ``pgtasq_schema`` fixture gives; usable from unittest or any other framework).
- `run_until_empty` / `arun_until_empty`: run a consumer until no task is ready, then
  return its `Counts`.
- `enqueued_tasks` / `assert_enqueued`: read the tasks a test's code enqueued.
- `InlineProducer` / `AsyncInlineProducer`: inline mode, handlers run at enqueue, no database
  (see `pgtasq.testing._inline` for its limits).

The pytest plugin (``pgtasq.testing.pytest_plugin``, loaded by pytest when pgtasq is
installed) adds the fixtures ``pgtasq_dsn``, ``pgtasq_schema``, ``pgtasq_producer`` and
``pgtasq_client``. docs/testing.md has the whole story.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasq._connections import SyncConn
from pgtasq._migrate import migrate
from pgtasq.filters import TaskFilter
from pgtasq.models import TaskInfo, TaskStatus
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name
from pgtasq.testing._inline import AsyncInlineProducer, InlineProducer

if TYPE_CHECKING:
    from pgtasq.consumer import Consumer, Counts

__all__ = [
    "TEST_DSN_ENV",
    "AsyncInlineProducer",
    "InlineProducer",
    "arun_until_empty",
    "assert_enqueued",
    "enqueued_tasks",
    "isolated_schema",
    "run_until_empty",
]

TEST_DSN_ENV = "PGTASQ_TEST_DSN"
"""The environment variable naming the PostgreSQL the fixtures use instead of an embedded one."""
SCHEMA_PREFIX_DEFAULT = "pgtasq_test_"

_ANY: Any = object()
_PENDING = (TaskStatus.PENDING,)
_PAGE = 1000


@contextlib.contextmanager
def isolated_schema(dsn: str, *, prefix: str = SCHEMA_PREFIX_DEFAULT) -> Iterator[str]:
    """A new schema named ``prefix`` + a random suffix, with pgtasq's tables migrated into
    it; dropped (``CASCADE``) when the block ends. Yields its name."""
    name = check_schema_name(prefix + uuid.uuid4().hex[:12])
    try:
        migrate(dsn, schema=name)
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def run_until_empty(consumer: Consumer, dsn: str | None = None) -> Counts:
    """Run ``consumer`` until no task is ready, then return what it did (`Counts`).

    A burst run (``Consumer.run(burst=True)``) without signal handling: tasks whose
    ``run_at`` is in the future, including retries waiting out their backoff, are left
    pending. ``dsn`` defaults to the consumer's. From async code, use `arun_until_empty`.
    """
    return consumer.run(dsn, burst=True, handle_signals=False)


async def arun_until_empty(consumer: Consumer, dsn: str | None = None) -> Counts:
    """`run_until_empty` on the running event loop."""
    return await consumer.arun(dsn, burst=True)


def _statuses(status: str | TaskStatus | Sequence[str | TaskStatus] | None) -> tuple[str, ...]:
    if status is None:
        return ()
    if isinstance(status, (str, TaskStatus)):
        return (str(status),)
    return tuple(str(s) for s in status)


def enqueued_tasks(
    db: str | SyncConn,
    *,
    type: str | None = None,
    payload: Any = _ANY,
    queue: str | None = None,
    status: str | TaskStatus | Sequence[str | TaskStatus] | None = _PENDING,
    schema: str = SCHEMA_DEFAULT,
) -> list[TaskInfo]:
    """The tasks in ``schema`` that match, oldest first.

    ``db``: a DSN (a new connection sees what was committed) or a connection that
    ``conn=`` accepts (it also sees what its own open transaction enqueued). ``payload`` is
    compared for equality with the stored JSON (a tuple compares as the list it becomes).
    ``status``: default pending (scheduled and waiting retries included); a state, several,
    or None for any.
    """
    from pgtasq.client import Client

    task_filter = TaskFilter().order_by("id").limit(_PAGE)
    if type is not None:
        task_filter = task_filter.types(type)
    if queue is not None:
        task_filter = task_filter.queues(queue)
    states = _statuses(status)
    if states:
        task_filter = task_filter.statuses(*states)
    client = Client(schema=schema)
    found: list[TaskInfo] = []
    with contextlib.ExitStack() as stack:
        conn = (
            stack.enter_context(psycopg.connect(db, autocommit=True)) if isinstance(db, str) else db
        )
        while True:
            page = client.list_tasks(task_filter, conn=conn, count="none")
            found.extend(page.tasks)
            if page.next_cursor is None:
                break
            task_filter = task_filter.after(page.next_cursor)
    if payload is not _ANY:
        wanted = json.loads(json.dumps(payload))
        found = [info for info in found if info.payload == wanted]
    return found


def _describe(filters: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not _ANY and v is not None)


def assert_enqueued(
    db: str | SyncConn,
    *,
    type: str | None = None,
    payload: Any = _ANY,
    queue: str | None = None,
    count: int | None = None,
    status: str | TaskStatus | Sequence[str | TaskStatus] | None = _PENDING,
    schema: str = SCHEMA_DEFAULT,
) -> list[TaskInfo]:
    """Assert that tasks matching the arguments were enqueued; returns them.

    ``count``: exactly that many (0 asserts that none was); default at least one. The
    other arguments are `enqueued_tasks`'s. The failure message lists what is there.
    """
    found = enqueued_tasks(
        db, type=type, payload=payload, queue=queue, status=status, schema=schema
    )
    if (count is None and found) or (count is not None and len(found) == count):
        return found
    expected = "at least one task" if count is None else f"{count} task(s)"
    criteria = _describe({"type": type, "payload": payload, "queue": queue})
    states = ", ".join(_statuses(status)) or "any status"
    others = enqueued_tasks(db, status=status, schema=schema)
    seen = "\n".join(
        f"  #{t.id} {t.type} queue={t.queue} status={t.status.value} payload={t.payload!r}"
        for t in others[:20]
    )
    more = f"\n  … and {len(others) - 20} more" if len(others) > 20 else ""
    raise AssertionError(
        f"expected {expected} matching {criteria or 'anything'} ({states}) in schema "
        f"{schema!r}, found {len(found)}.\n"
        + (f"Tasks there ({states}):\n{seen}{more}" if others else f"No task there ({states}).")
    )
