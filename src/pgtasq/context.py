"""`TaskContext`: what a handler receives.

A handler is ``def handler(ctx)`` or ``async def handler(ctx)``. Its return value (JSON)
becomes the task's result. ``ctx.payload`` is the task's payload; ``ctx.info`` the row as it
was claimed.

Cancellation: an async handler is cancelled (``asyncio.CancelledError``) when its task is
cancelled, times out or is taken away. A sync handler cannot be interrupted from outside its
thread: it should check ``ctx.cancelled`` (a `threading.Event`) in its loops and return.

Progress: ``ctx.set_progress(0.4, note="page 4 of 10")`` (from either kind of handler)
reports how far the task got; `Client.get_task` shows it (`TaskInfo.progress`). See
docs/progress.md and `pgtasq._progress`.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pgtasq._connections import AsyncConn, SyncConn, async_runner, sync_runner
from pgtasq._progress import progress_text
from pgtasq._records import RESULT_MAX_BYTES_LIMIT, prepare_result
from pgtasq.errors import TaskLost, TaskValidationError
from pgtasq.models import TaskInfo
from pgtasq.task_types import payload_as

if TYPE_CHECKING:
    from pgtasq import _sql

P = TypeVar("P")


def dump_result(value: Any) -> str | None:
    """A result given to `TaskContext.complete` as JSON text (None stays SQL NULL): lone
    surrogates and NUL characters replaced by U+FFFD; `TaskValidationError` when it cannot
    be stored (not JSON, NaN, nested too deep, over `RESULT_MAX_BYTES_LIMIT`)."""
    prepared = prepare_result(value, RESULT_MAX_BYTES_LIMIT)
    assert prepared is not None  # no budget: always an answer
    if prepared.error is not None:
        raise TaskValidationError("result", prepared.error)
    return prepared.text


class _Flag:
    """The part of `threading.Event` a single-threaded reader needs."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


# Where a worker takes the progress its handlers report: (task id, claim time, JSON text).
ProgressSink = Callable[[int, datetime, str], None]


class TaskContext:
    """The running task, handed to its handler."""

    def __init__(
        self,
        info: TaskInfo,
        *,
        worker_id: str,
        stmts: _sql.Statements,
        threaded: bool = True,
        progress: ProgressSink | None = None,
    ) -> None:
        self.info = info
        self.worker_id = worker_id
        # Sync handlers poll a real Event from their thread; async ones get a cheaper flag
        # (they are cancelled with CancelledError anyway).
        self.cancelled: threading.Event | _Flag = threading.Event() if threaded else _Flag()
        self.completed_in_transaction = False
        self._stmts = stmts
        # Set by the worker; cleared when the handler ends (later reports are ignored).
        self.progress_sink = progress

    @property
    def id(self) -> int:
        """The task's id."""
        return self.info.id

    @property
    def type(self) -> str:
        """The task's type: the name its handler was registered under."""
        return self.info.type

    @property
    def payload(self) -> Any:
        """The task's payload, as decoded from its JSON."""
        return self.info.payload

    def payload_as(self, cls: builtins.type[P]) -> P:
        """The payload as ``cls``, a dataclass or a TypedDict (`pgtasq.task_types.payload_as`):
        `TaskValidationError` when it does not fit."""
        return payload_as(cls, self.info.payload)

    @property
    def queue(self) -> str:
        """The queue the task was claimed from."""
        return self.info.queue

    @property
    def attempt(self) -> int:
        """This run's attempt number, from 1."""
        return self.info.attempts

    @property
    def max_attempts(self) -> int:
        """How many attempts the task may have in all (this one included)."""
        return self.info.max_attempts

    @property
    def claimed_at(self) -> datetime:
        """When this attempt claimed the task (the database's clock)."""
        assert self.info.attempted_at is not None
        return self.info.attempted_at

    def set_progress(self, value: float | dict[str, Any], note: str | None = None) -> None:
        """Report how far the task got: a fraction done from 0.0 to 1.0, or a JSON object of
        your own (``{"done": 30, "total": 120}``), and an optional short ``note``.

        Safe to call as often as you like, from an async handler or from a sync handler's
        thread: it returns at once, without I/O. The worker writes the latest value at most
        once per half second per task (and the last one before the task's outcome), so
        `Client.get_task` sees it within about that. A bad value raises
        `TaskValidationError` here; a database error never reaches the handler (the value
        is written when the database is back), and the report of a task this worker lost
        changes nothing. A new attempt starts with no progress. See docs/progress.md.
        """
        text = progress_text(value, note)
        sink = self.progress_sink
        if sink is not None:
            sink(self.info.id, self.claimed_at, text)

    def _finish_params(self, result: Any) -> dict[str, Any]:
        return {
            "worker": self.worker_id,
            "id": [self.info.id],
            "claimed_at": [self.claimed_at],
            "status": ["completed"],
            "delay": [0.0],
            "refund": [0],
            "error": [None],
            "result": [dump_result(result)],
        }

    def complete(self, conn: SyncConn, result: Any = None) -> None:
        """Mark the task completed inside ``conn``'s open transaction (sync connections).

        Your writes and the completion then commit together or not at all. Raises
        `TaskLost` when this worker no longer owns the task: let it propagate, so your
        transaction rolls back.
        """
        rows = sync_runner(conn).fetch(
            self._stmts.task_finish_many_in_tx, self._finish_params(result)
        )
        if not rows:
            raise TaskLost(self.info.id)
        self.completed_in_transaction = True

    async def acomplete(self, conn: AsyncConn, result: Any = None) -> None:
        """`complete` for async connections (psycopg AsyncConnection, SQLAlchemy async)."""
        params = await asyncio.to_thread(self._finish_params, result)  # off the loop
        rows = await async_runner(conn).fetch(self._stmts.task_finish_many_in_tx, params)
        if not rows:
            raise TaskLost(self.info.id)
        self.completed_in_transaction = True

    def __repr__(self) -> str:
        return (
            f"<TaskContext id={self.id} type={self.type!r} "
            f"attempt={self.attempt}/{self.max_attempts}>"
        )


Handler = Callable[[TaskContext], Any]
"""``def handler(ctx) -> result`` or ``async def handler(ctx) -> result``."""

CallNext = Callable[[TaskContext], Awaitable[Any]]
Middleware = Callable[[TaskContext, CallNext], Awaitable[Any]]
"""``async def middleware(ctx, call_next): ...; return await call_next(ctx)``."""

ErrorHook = Callable[[TaskContext, BaseException], Any]
"""Called on every failure with the context and the exception (sync or async)."""
