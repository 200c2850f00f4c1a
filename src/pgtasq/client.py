"""`Client` and `AsyncClient`: look at and manage tasks, queues and workers.

Every method takes ``conn=None``: with a connection of yours it runs there and never
commits; without one it uses the client's pool and each statement commits on its own.
What each operation does by the task's current state:

=========  ==========================  ===========================  =======================
 status     cancel_task                 retry_task                   delete_task
=========  ==========================  ===========================  =======================
pending    cancelled                   TaskAlreadyAvailable         deleted
running    cancelled (handler stops)   TaskRunning                  TaskRunning
completed  TaskAlreadyFinalized        TaskAlreadyFinalized         deleted
failed     cancelled                   pending (an attempt left)    deleted
cancelled  no change                   pending (an attempt left)    deleted
missing    TaskNotFound                TaskNotFound                 TaskNotFound
=========  ==========================  ===========================  =======================

Each change is one conditional statement, so a race with a worker is decided in the database.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from pgtasq import _client_ops as ops
from pgtasq import _sql
from pgtasq._client_ops import (
    DailyStats,
    Preview,
    Progress,
    QueueInfo,
    ScheduleInfo,
    Stats,
    TaskEvent,
    TaskPage,
    WorkerInfo,
)
from pgtasq._connections import async_runner, sync_runner
from pgtasq._database import RETRYABLE, Backoff, Outage, connect_misconfigured, misconfigured
from pgtasq._events_async import AsyncEventStream
from pgtasq._events_sync import EventStream
from pgtasq._pool import (
    POOL_MAX_SIZE_DEFAULT,
    POOL_MIN_SIZE_DEFAULT,
    POOL_OPEN_TIMEOUT_DEFAULT,
    AsyncLazyPool,
    LazyPool,
    check_connect_timeout,
)
from pgtasq.errors import ConfigurationError
from pgtasq.filters import COUNT_MODE_DEFAULT, CountMode, TaskFilter
from pgtasq.models import TaskInfo
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name

__all__ = [
    "AsyncClient",
    "AsyncEventStream",
    "Client",
    "DailyStats",
    "EventStream",
    "Preview",
    "QueueInfo",
    "ScheduleInfo",
    "Stats",
    "TaskEvent",
    "TaskPage",
    "WorkerInfo",
]

RETENTION_DEFAULT = 86400.0  # finished tasks without a retention of their own: one day
EVENTS_CHECK_EVERY = 5.0  # seconds without a notification before the connection is checked
EVENTS_BACKOFF_CAP = 5.0  # the longest wait between two attempts to reconnect

log = logging.getLogger("pgtasq.client")

_NO_DSN = "this {} has no DSN: pass conn=, or create it with {}(dsn)"


class Client:
    """Synchronous client; see the module docstring.

    ``Client(dsn)`` owns a pool opened on first use; the first use waits up to
    ``connect_timeout`` seconds (default 10) for the server, then raises
    `DatabaseUnavailable`. ``Client()`` without a DSN works only with ``conn=``.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = SCHEMA_DEFAULT,
        pool_min_size: int = POOL_MIN_SIZE_DEFAULT,
        pool_max_size: int = POOL_MAX_SIZE_DEFAULT,
        connect_timeout: float = POOL_OPEN_TIMEOUT_DEFAULT,
        prepare: bool = True,
    ) -> None:
        self.schema = check_schema_name(schema)
        self._stmts = _sql.statements(schema)
        connect_timeout = check_connect_timeout(connect_timeout)
        self._pool = (
            LazyPool(
                dsn,
                min_size=pool_min_size,
                max_size=pool_max_size,
                name="pgtasq-client",
                open_timeout=connect_timeout,
                prepare=prepare,
            )
            if dsn is not None
            else None
        )

    def _run(self, op: ops.Op, conn: object) -> Any:
        if conn is not None:
            return _drive(op, sync_runner(conn))
        if self._pool is None:
            raise ConfigurationError(_NO_DSN.format("Client", "Client"))
        with self._pool.get().connection() as own:
            return _drive(op, sync_runner(own))

    def get_task(self, task_id: int, *, conn: object = None) -> TaskInfo:
        result: TaskInfo = self._run(ops.get_task(self._stmts, task_id), conn)
        return result

    def list_tasks(
        self,
        task_filter: TaskFilter | None = None,
        *,
        count: CountMode = COUNT_MODE_DEFAULT,
        conn: object = None,
        full: bool = True,
    ) -> TaskPage:
        """A page of the tasks the filter selects, and how many it selects in all.

        The total as ``count`` asks: "auto" (exact up to 1 000, then the planner's estimate),
        "exact" or "none" (see `TaskPage`). ``full=False`` reads what a listing shows and no
        more: ``payload`` and ``result`` are a `Preview` (the first 200 characters of their
        JSON) and ``errors`` holds the latest error only, without its traceback; `get_task`
        reads the whole row.
        """
        op = ops.list_tasks(self._stmts, task_filter or TaskFilter(), count, full)
        result: TaskPage = self._run(op, conn)
        return result

    def cancel_task(self, task_id: int, *, conn: object = None) -> TaskInfo:
        result: TaskInfo = self._run(ops.cancel_task(self._stmts, task_id), conn)
        return result

    def retry_task(self, task_id: int, *, conn: object = None) -> TaskInfo:
        result: TaskInfo = self._run(ops.retry_task(self._stmts, task_id), conn)
        return result

    def delete_task(self, task_id: int, *, conn: object = None) -> TaskInfo:
        result: TaskInfo = self._run(ops.delete_task(self._stmts, task_id), conn)
        return result

    def cancel_tasks(
        self,
        task_filter: TaskFilter,
        *,
        conn: object = None,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        progress: Progress | None = None,
    ) -> int:
        """Cancel every task the filter selects (limit/offset ignored); returns how many."""
        op = ops.bulk(self._stmts, "cancel", task_filter, batch_size, progress)
        result: int = self._run(op, conn)
        return result

    def retry_tasks(
        self,
        task_filter: TaskFilter,
        *,
        conn: object = None,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        progress: Progress | None = None,
    ) -> int:
        """Retry every failed or cancelled task the filter selects; returns how many."""
        op = ops.bulk(self._stmts, "retry", task_filter, batch_size, progress)
        result: int = self._run(op, conn)
        return result

    def delete_tasks(
        self,
        task_filter: TaskFilter,
        *,
        conn: object = None,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        progress: Progress | None = None,
    ) -> int:
        """Delete every task the filter selects, except running ones; returns how many."""
        op = ops.bulk(self._stmts, "delete", task_filter, batch_size, progress)
        result: int = self._run(op, conn)
        return result

    def list_queues(self, *, conn: object = None) -> list[QueueInfo]:
        result: list[QueueInfo] = self._run(ops.list_queues(self._stmts), conn)
        return result

    def pause_queue(self, name: str, *, conn: object = None, create: bool = True) -> None:
        """Workers stop claiming the queue's tasks. ``create=False``: raise `QueueNotFound`
        for a queue that has neither a row in ``queues`` nor a task."""
        self._run(ops.pause_queue(self._stmts, name, True, create), conn)

    def resume_queue(self, name: str, *, conn: object = None, create: bool = True) -> None:
        self._run(ops.pause_queue(self._stmts, name, False, create), conn)

    def queue_history(
        self, name: str | None = None, *, days: int = 7, conn: object = None
    ) -> list[DailyStats]:
        result: list[DailyStats] = self._run(ops.queue_history(self._stmts, name, days), conn)
        return result

    def list_workers(self, *, conn: object = None) -> list[WorkerInfo]:
        result: list[WorkerInfo] = self._run(ops.list_workers(self._stmts), conn)
        return result

    def stats(self, *, conn: object = None) -> Stats:
        result: Stats = self._run(ops.stats(self._stmts), conn)
        return result

    def list_schedules(self, *, conn: object = None) -> list[ScheduleInfo]:
        """Scheduler entries with their last and next run and the tasks they enqueued."""
        result: list[ScheduleInfo] = self._run(ops.list_schedules(self._stmts), conn)
        return result

    def clean(
        self,
        *,
        retention: float = RETENTION_DEFAULT,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        conn: object = None,
        progress: Progress | None = None,
    ) -> int:
        """Delete finished tasks older than their retention (``retention`` seconds for tasks
        without one); returns how many. One cleaner at a time works across all sessions."""
        result: int = self._run(ops.clean(self._stmts, retention, batch_size, progress), conn)
        return result

    def events(self, *, timeout: float | None = None) -> EventStream:
        """Task events as they happen, from LISTEN on a connection of its own.

        ``with client.events() as events:`` is listening when the block starts (so what
        the block enqueues is seen), and closes the connection at its end;
        ``for event in client.events():`` connects at the first event asked for.

        Ends after ``timeout`` seconds without an event (None: never). Events are delivered
        at the commit of the statement that caused them; a watcher that is not connected
        misses them (they are not stored). While the database is away, from the start or
        later, it reconnects with backoff (one log line when the database goes, one when it
        is back); what no retry can fix raises `DatabaseMisconfigured`.
        """
        if self._pool is None:
            raise ConfigurationError(_NO_DSN.format("Client", "Client"))
        return EventStream(self._pool.dsn, self._stmts, _EventWatch(timeout, self._stmts.schema))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """`Client` for asyncio: the same methods, awaited."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = SCHEMA_DEFAULT,
        pool_min_size: int = POOL_MIN_SIZE_DEFAULT,
        pool_max_size: int = POOL_MAX_SIZE_DEFAULT,
        connect_timeout: float = POOL_OPEN_TIMEOUT_DEFAULT,
        prepare: bool = True,
    ) -> None:
        self.schema = check_schema_name(schema)
        self._stmts = _sql.statements(schema)
        connect_timeout = check_connect_timeout(connect_timeout)
        self._pool = (
            AsyncLazyPool(
                dsn,
                min_size=pool_min_size,
                max_size=pool_max_size,
                name="pgtasq-client",
                open_timeout=connect_timeout,
                prepare=prepare,
            )
            if dsn is not None
            else None
        )

    async def _run(self, op: ops.Op, conn: object) -> Any:
        if conn is not None:
            return await _adrive(op, async_runner(conn))
        if self._pool is None:
            raise ConfigurationError(_NO_DSN.format("AsyncClient", "AsyncClient"))
        pool = await self._pool.get()
        async with pool.connection() as own:
            return await _adrive(op, async_runner(own))

    async def get_task(self, task_id: int, *, conn: object = None) -> TaskInfo:
        result: TaskInfo = await self._run(ops.get_task(self._stmts, task_id), conn)
        return result

    async def list_tasks(
        self,
        task_filter: TaskFilter | None = None,
        *,
        count: CountMode = COUNT_MODE_DEFAULT,
        conn: object = None,
        full: bool = True,
    ) -> TaskPage:
        """See `Client.list_tasks`."""
        op = ops.list_tasks(self._stmts, task_filter or TaskFilter(), count, full)
        result: TaskPage = await self._run(op, conn)
        return result

    async def cancel_task(self, task_id: int, *, conn: object = None) -> TaskInfo:
        result: TaskInfo = await self._run(ops.cancel_task(self._stmts, task_id), conn)
        return result

    async def retry_task(self, task_id: int, *, conn: object = None) -> TaskInfo:
        result: TaskInfo = await self._run(ops.retry_task(self._stmts, task_id), conn)
        return result

    async def delete_task(self, task_id: int, *, conn: object = None) -> TaskInfo:
        result: TaskInfo = await self._run(ops.delete_task(self._stmts, task_id), conn)
        return result

    async def cancel_tasks(
        self,
        task_filter: TaskFilter,
        *,
        conn: object = None,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        progress: Progress | None = None,
    ) -> int:
        op = ops.bulk(self._stmts, "cancel", task_filter, batch_size, progress)
        result: int = await self._run(op, conn)
        return result

    async def retry_tasks(
        self,
        task_filter: TaskFilter,
        *,
        conn: object = None,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        progress: Progress | None = None,
    ) -> int:
        op = ops.bulk(self._stmts, "retry", task_filter, batch_size, progress)
        result: int = await self._run(op, conn)
        return result

    async def delete_tasks(
        self,
        task_filter: TaskFilter,
        *,
        conn: object = None,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        progress: Progress | None = None,
    ) -> int:
        op = ops.bulk(self._stmts, "delete", task_filter, batch_size, progress)
        result: int = await self._run(op, conn)
        return result

    async def list_queues(self, *, conn: object = None) -> list[QueueInfo]:
        result: list[QueueInfo] = await self._run(ops.list_queues(self._stmts), conn)
        return result

    async def pause_queue(self, name: str, *, conn: object = None, create: bool = True) -> None:
        await self._run(ops.pause_queue(self._stmts, name, True, create), conn)

    async def resume_queue(self, name: str, *, conn: object = None, create: bool = True) -> None:
        await self._run(ops.pause_queue(self._stmts, name, False, create), conn)

    async def queue_history(
        self, name: str | None = None, *, days: int = 7, conn: object = None
    ) -> list[DailyStats]:
        op = ops.queue_history(self._stmts, name, days)
        result: list[DailyStats] = await self._run(op, conn)
        return result

    async def list_workers(self, *, conn: object = None) -> list[WorkerInfo]:
        result: list[WorkerInfo] = await self._run(ops.list_workers(self._stmts), conn)
        return result

    async def stats(self, *, conn: object = None) -> Stats:
        result: Stats = await self._run(ops.stats(self._stmts), conn)
        return result

    async def list_schedules(self, *, conn: object = None) -> list[ScheduleInfo]:
        result: list[ScheduleInfo] = await self._run(ops.list_schedules(self._stmts), conn)
        return result

    async def clean(
        self,
        *,
        retention: float = RETENTION_DEFAULT,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        conn: object = None,
        progress: Progress | None = None,
    ) -> int:
        """See `Client.clean`."""
        op = ops.clean(self._stmts, retention, batch_size, progress)
        result: int = await self._run(op, conn)
        return result

    def events(self, *, timeout: float | None = None) -> AsyncEventStream:
        """See `Client.events`: ``async with client.events() as events:`` is listening when
        the block starts; ``async for event in client.events():`` works too."""
        if self._pool is None:
            raise ConfigurationError(_NO_DSN.format("AsyncClient", "AsyncClient"))
        watch = _EventWatch(timeout, self._stmts.schema)
        return AsyncEventStream(self._pool.dsn, self._stmts, watch)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _EventWatch:
    """What `Client.events` decides between its I/O: when to stop (``timeout`` seconds
    without an event), how long to wait for notifications before checking the connection,
    and, when it fails, whether to retry (and after how long) or to raise."""

    def __init__(self, timeout: float | None, schema: str) -> None:
        self._timeout = timeout
        self._schema = schema
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._backoff = Backoff(cap=EVENTS_BACKOFF_CAP)
        self._outage = Outage(log, "events")

    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def wait(self) -> float:
        if self._deadline is None:
            return EVENTS_CHECK_EVERY
        return max(0.0, min(EVENTS_CHECK_EVERY, self._deadline - time.monotonic()))

    def seen(self) -> None:
        if self._timeout is not None:
            self._deadline = time.monotonic() + self._timeout

    def connected(self) -> None:
        self._backoff.reset()
        self._outage.back()

    def lost(self, exc: psycopg.Error) -> float:
        """Seconds to wait before reconnecting; raises what no retry can fix."""
        fatal = connect_misconfigured(exc) or misconfigured(exc, self._schema)
        if fatal is not None:
            raise fatal from None  # psycopg's text may quote the DSN
        if not isinstance(exc, RETRYABLE):
            raise exc
        self._outage.lost(exc)
        return min(self._backoff.next(), self.wait())


def _drive(op: ops.Op, runner: Any) -> Any:
    try:
        step = next(op)
        while True:
            step = op.send(runner.fetch(*step))
    except StopIteration as stop:
        return stop.value


async def _adrive(op: ops.Op, runner: Any) -> Any:
    try:
        step = next(op)
        while True:
            step = op.send(await runner.fetch(*step))
    except StopIteration as stop:
        return stop.value
