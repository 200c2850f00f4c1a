# Generated from src/pgtasq/_client_async.py by `python tools/gen_sync.py`: do not edit.
"""`AsyncClient` is written by hand in ``_client_async.py``; `Client`, in ``_client_sync.py``,
is generated from it by ``python tools/gen_sync.py`` (tests/unit/test_sync_generated.py fails
while it is not current). Docstrings are copied unchanged, so they name no class of their
own: they say "the client".
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from pgtasq import _client_ops as ops
from pgtasq import _sql
from pgtasq._client_base import NO_DSN, RETENTION_DEFAULT
from pgtasq._client_ops import (
    DailyStats,
    Progress,
    QueueInfo,
    ScheduleInfo,
    Stats,
    TaskPage,
    WorkerInfo,
)
from pgtasq._connections import SyncConn, SyncRunner, sync_runner
from pgtasq._driver_errors import call_error
from pgtasq._events_sync import EventStream
from pgtasq._pool import (
    POOL_MAX_SIZE_DEFAULT,
    POOL_MIN_SIZE_DEFAULT,
    POOL_OPEN_TIMEOUT_DEFAULT,
    check_connect_timeout,
)
from pgtasq._pool_sync import LazyPool
from pgtasq.errors import ConfigurationError
from pgtasq.filters import COUNT_MODE_DEFAULT, CountMode, TaskFilter
from pgtasq.models import TaskInfo
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name


class Client:
    """Look at and manage tasks, queues and workers; see `pgtasq.client`.

    With a DSN the client owns a pool opened on first use; the first use waits up to
    ``connect_timeout`` seconds (default 10) for the server, then raises
    `DatabaseUnavailable`. Without a DSN it works only with ``conn=``. ``prepare=False``
    never uses server-side prepared statements (for PgBouncer before 1.21).
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

    def _run(self, op: ops.Op, conn: SyncConn | None) -> Any:
        if conn is None and self._pool is None:
            raise ConfigurationError(NO_DSN.format(name=type(self).__name__))
        try:
            if conn is not None:
                return _drive(op, sync_runner(conn))
            assert self._pool is not None
            pool = self._pool.get()
            with pool.connection() as own:
                return _drive(op, sync_runner(own))
        except (psycopg.Error, PoolTimeout) as exc:
            error = call_error(exc, self.schema, own=conn is None)
            if error is None:
                raise
            raise error from exc

    def get_task(self, task_id: int, *, conn: SyncConn | None = None) -> TaskInfo:
        """The task with this id, read whole; raises `TaskNotFound`."""
        result: TaskInfo = self._run(ops.get_task(self._stmts, task_id), conn)
        return result

    def list_tasks(
        self,
        task_filter: TaskFilter | None = None,
        *,
        count: CountMode = COUNT_MODE_DEFAULT,
        conn: SyncConn | None = None,
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

    def cancel_task(self, task_id: int, *, conn: SyncConn | None = None) -> TaskInfo:
        """Cancel the task (a running handler is told to stop); returns it as it is now.
        What each state allows: the table in `pgtasq.client`."""
        result: TaskInfo = self._run(ops.cancel_task(self._stmts, task_id), conn)
        return result

    def retry_task(self, task_id: int, *, conn: SyncConn | None = None) -> TaskInfo:
        """Make a failed or cancelled task pending again, now; returns it as it is now.
        What each state allows: the table in `pgtasq.client`."""
        result: TaskInfo = self._run(ops.retry_task(self._stmts, task_id), conn)
        return result

    def delete_task(self, task_id: int, *, conn: SyncConn | None = None) -> TaskInfo:
        """Delete the task unless it is running; returns it as it was.
        What each state allows: the table in `pgtasq.client`."""
        result: TaskInfo = self._run(ops.delete_task(self._stmts, task_id), conn)
        return result

    def cancel_tasks(
        self,
        task_filter: TaskFilter,
        *,
        conn: SyncConn | None = None,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        progress: Progress | None = None,
    ) -> int:
        """Cancel every task the filter selects (limit/offset ignored); returns how many.

        It works in batches of ``batch_size`` tasks, one statement each, and calls
        ``progress`` with the count so far after each batch.
        """
        op = ops.bulk(self._stmts, "cancel", task_filter, batch_size, progress)
        result: int = self._run(op, conn)
        return result

    def retry_tasks(
        self,
        task_filter: TaskFilter,
        *,
        conn: SyncConn | None = None,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        progress: Progress | None = None,
    ) -> int:
        """Retry every failed or cancelled task the filter selects; returns how many.
        Batches and ``progress`` as in `cancel_tasks`."""
        op = ops.bulk(self._stmts, "retry", task_filter, batch_size, progress)
        result: int = self._run(op, conn)
        return result

    def delete_tasks(
        self,
        task_filter: TaskFilter,
        *,
        conn: SyncConn | None = None,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        progress: Progress | None = None,
    ) -> int:
        """Delete every task the filter selects, except running ones; returns how many.
        Batches and ``progress`` as in `cancel_tasks`."""
        op = ops.bulk(self._stmts, "delete", task_filter, batch_size, progress)
        result: int = self._run(op, conn)
        return result

    def list_queues(self, *, conn: SyncConn | None = None) -> list[QueueInfo]:
        """Every known queue: its tasks by state, latency and counters (`QueueInfo`)."""
        result: list[QueueInfo] = self._run(ops.list_queues(self._stmts), conn)
        return result

    def pause_queue(self, name: str, *, conn: SyncConn | None = None, create: bool = True) -> None:
        """Workers stop claiming the queue's tasks. ``create=False``: raise `QueueNotFound`
        for a queue that has neither a row in ``queues`` nor a task."""
        self._run(ops.pause_queue(self._stmts, name, True, create), conn)

    def resume_queue(self, name: str, *, conn: SyncConn | None = None, create: bool = True) -> None:
        """Workers claim the queue's tasks again; ``create`` as in `pause_queue`."""
        self._run(ops.pause_queue(self._stmts, name, False, create), conn)

    def queue_history(
        self, name: str | None = None, *, days: int = 7, conn: SyncConn | None = None
    ) -> list[DailyStats]:
        """Finished attempts by outcome per queue and UTC day (`DailyStats`), over the last
        ``days`` days, for the queue ``name`` or every queue."""
        op = ops.queue_history(self._stmts, name, days)
        result: list[DailyStats] = self._run(op, conn)
        return result

    def list_workers(self, *, conn: SyncConn | None = None) -> list[WorkerInfo]:
        """The registered workers: host, pid, queues, heartbeat, running tasks (`WorkerInfo`)."""
        result: list[WorkerInfo] = self._run(ops.list_workers(self._stmts), conn)
        return result

    def stats(self, *, conn: SyncConn | None = None) -> Stats:
        """Totals since the schema was created and the tasks per state now (`Stats`)."""
        result: Stats = self._run(ops.stats(self._stmts), conn)
        return result

    def list_schedules(self, *, conn: SyncConn | None = None) -> list[ScheduleInfo]:
        """Scheduler entries with their last and next run and the tasks they enqueued."""
        result: list[ScheduleInfo] = self._run(ops.list_schedules(self._stmts), conn)
        return result

    def clean(
        self,
        *,
        retention: float = RETENTION_DEFAULT,
        batch_size: int = ops.BULK_BATCH_DEFAULT,
        conn: SyncConn | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Delete finished tasks older than their retention (``retention`` seconds for tasks
        without one); returns how many. One cleaner at a time works across all sessions."""
        op = ops.clean(self._stmts, retention, batch_size, progress)
        result: int = self._run(op, conn)
        return result

    def events(self, *, timeout: float | None = None) -> EventStream:
        """Task events as they happen, from LISTEN on a connection of its own.

        As a context manager (``with``, ``async with`` for the asyncio client) it is
        listening when the block starts, so what the block commits is seen, and closes its
        connection at the end of the block; iterated directly, it connects when the first
        event is asked for.

        Ends after ``timeout`` seconds without an event (None: never). Events are delivered
        at the commit of the statement that caused them; a watcher that is not connected
        misses them (they are not stored). While the database is away, from the start or
        later, it reconnects with backoff (one log line when the database goes, one when it
        is back); what no retry can fix raises `DatabaseMisconfigured`.
        """
        if self._pool is None:
            raise ConfigurationError(NO_DSN.format(name=type(self).__name__))
        return EventStream(self._pool.dsn, self._stmts, timeout)

    def close(self) -> None:
        """Close the client's pool, if it has one; a later call opens a new one."""
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drive(op: ops.Op, runner: SyncRunner) -> Any:
    """Run the operation's statements on ``runner``; returns what the operation returns."""
    try:
        step = next(op)
        while True:
            step = op.send(runner.fetch(*step))
    except StopIteration as stop:
        return stop.value
