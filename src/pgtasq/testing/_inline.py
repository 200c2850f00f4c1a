"""Inline mode: `InlineProducer` and `AsyncInlineProducer` run a task's handler at enqueue.

For unit tests of code that enqueues, without a database and without a worker: hand an
inline producer to the code under test where it would get a `Producer`, and every enqueue
runs the consumer's handler (through its middleware) before it returns. What ran is kept in
``producer.tasks``, final: completed with its result, or failed with its error.

The limits (docs/testing.md says the same): no database, so no transaction: a task runs even
if the caller's transaction later rolls back, and ``conn=`` is accepted and ignored. One
attempt, no retries (``RetryIn`` and ``SkipRetry`` fail the task); ``run_at``/``delay``,
priorities, queues, pauses, timeouts and deadlines are recorded but not applied; a sync
handler runs in the caller's thread, so ``ctx.cancelled`` is never set;
``ctx.complete(conn)`` needs a real task row and raises `TaskLost`; ``ctx.set_progress``
checks its value as a worker would and keeps nothing. The payload goes through
JSON as it would through the database, so the handler sees what a worker would give it.
Test what the transaction promises, and the worker's behaviour, against PostgreSQL (the
``pgtasq_schema`` fixture and `run_until_empty`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import json
import threading
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pgtasq import _sql
from pgtasq._enqueue import as_task
from pgtasq._executor import handler_chain
from pgtasq.context import TaskContext, dump_result
from pgtasq.errors import ConfigurationError, DuplicateTask
from pgtasq.models import PAYLOAD_MAX_BYTES_DEFAULT, Task, TaskInfo, TaskStatus, dump_payload
from pgtasq.tables import SCHEMA_DEFAULT

if TYPE_CHECKING:
    from pgtasq.consumer import Consumer

INLINE_WORKER_ID = "pgtasq-inline"


class _CallerThread(concurrent.futures.Executor):
    """Runs a sync handler in the thread that asked, before `submit` returns."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class _InlineBase:
    def __init__(
        self,
        consumer: Consumer,
        *,
        raise_errors: bool = True,
        max_payload_bytes: int = PAYLOAD_MAX_BYTES_DEFAULT,
        schema: str = SCHEMA_DEFAULT,
    ) -> None:
        self.consumer = consumer
        self.raise_errors = raise_errors
        self.max_payload_bytes = max_payload_bytes
        self.schema = schema
        self.tasks: list[TaskInfo] = []
        """Every task this producer ran, in order, as it ended."""
        self._ids = itertools.count(1)
        self._by_key: dict[str, TaskInfo] = {}
        # unique keys within their unique_for (a task that ran is final: only the period holds)
        self._unique: dict[str, TaskInfo] = {}
        self._lock = threading.Lock()
        self._stmts = _sql.statements(schema)

    def _check(self, tasks: list[Task]) -> None:
        """What `Producer` checks before any SQL, for all the tasks before any runs."""
        for task in tasks:
            if not isinstance(task, Task):
                raise TypeError(f"enqueue_many takes Task objects, got {type(task).__name__}")
            dump_payload(task.payload, self.max_payload_bytes)
            if task.type not in self.consumer.handlers:
                raise ConfigurationError(
                    f"inline mode: no handler for task type {task.type!r} on this consumer "
                    f"(registered: {sorted(self.consumer.handlers)})"
                )

    def _claim(self, task: Task, on_conflict: str) -> tuple[TaskInfo, bool]:
        """The TaskInfo of the running task, and whether to run it (not a duplicate)."""
        if on_conflict not in ("return", "raise", "update"):
            raise ValueError(
                f"on_conflict must be 'return', 'raise' or 'update', got {on_conflict!r}"
            )
        payload = json.loads(dump_payload(task.payload, self.max_payload_bytes))
        now = datetime.now(timezone.utc)
        with self._lock:
            if task.idempotency_key is not None and task.idempotency_key in self._by_key:
                existing = self._by_key[task.idempotency_key]
                if on_conflict == "raise":
                    raise DuplicateTask(existing)
                return dataclasses.replace(existing, created=False), False
            held = self._unique.get(task.unique_key) if task.unique_key is not None else None
            if held is not None and held.unique_until is not None and now < held.unique_until:
                if on_conflict == "raise":
                    raise DuplicateTask(held, unique_key=task.unique_key)
                return dataclasses.replace(held, created=False), False  # final: no update
            task_id = next(self._ids)
        run_at = task.run_at or now + timedelta(seconds=_seconds(task.delay))
        timeout = None if task.timeout is None else timedelta(seconds=_seconds(task.timeout))
        retention = task.retention
        info = TaskInfo(
            id=task_id,
            queue=task.queue,
            type=task.type,
            payload=payload,
            priority=task.priority,
            status=TaskStatus.RUNNING,
            run_at=run_at,
            attempts=1,
            max_attempts=task.max_attempts,
            timeout=timeout,
            deadline=task.deadline,
            idempotency_key=task.idempotency_key,
            errors=[],
            result=None,
            locked_by=INLINE_WORKER_ID,
            locked_until=None,
            created_at=now,
            updated_at=now,
            attempted_at=now,
            finalized_at=None,
            retention=None if retention is None else timedelta(seconds=_seconds(retention)),
            unique_key=task.unique_key,
            unique_until=None
            if task.unique_for is None
            else now + timedelta(seconds=_seconds(task.unique_for)),
        )
        if task.idempotency_key is not None:
            with self._lock:
                self._by_key[task.idempotency_key] = info
        return info, True

    def _context(self, info: TaskInfo) -> TaskContext:
        return TaskContext(info, worker_id=INLINE_WORKER_ID, stmts=self._stmts, threaded=False)

    def _chain(self, task_type: str) -> Callable[[TaskContext], Any]:
        handler = self.consumer.handlers[task_type]
        return handler_chain(handler, list(self.consumer._middleware), _CallerThread())

    def _finish(self, info: TaskInfo, result: Any, error: BaseException | None) -> TaskInfo:
        now = datetime.now(timezone.utc)
        if error is None:
            text = dump_result(result)
            final = dataclasses.replace(
                info,
                status=TaskStatus.COMPLETED,
                result=None if text is None else json.loads(text),
                locked_by=None,
                updated_at=now,
                finalized_at=now,
            )
        else:
            entry = {
                "attempt": 1,
                "at": now.isoformat(),
                "error": f"{type(error).__name__}: {error}",
                "traceback": "".join(traceback.format_exception(error))[-2000:],
            }
            final = dataclasses.replace(
                info,
                status=TaskStatus.FAILED,
                errors=[entry],
                locked_by=None,
                updated_at=now,
                finalized_at=now,
            )
        with self._lock:
            self.tasks.append(final)
            if info.idempotency_key is not None:
                self._by_key[info.idempotency_key] = final
            if info.unique_key is not None and info.unique_until is not None:
                self._unique[info.unique_key] = final
        if error is not None and self.raise_errors:
            raise error
        return final

    def clear(self) -> None:
        """Forget the tasks that ran (and their idempotency and unique keys)."""
        with self._lock:
            self.tasks.clear()
            self._by_key.clear()
            self._unique.clear()


def _seconds(value: Any) -> float:
    if value is None:
        return 0.0
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class InlineProducer(_InlineBase):
    """A stand-in for `Producer` whose enqueue runs the task's handler at once.

    ``InlineProducer(consumer)``: the handlers and middleware registered on ``consumer``.
    A handler's exception propagates out of `enqueue` (``raise_errors=False`` records the
    task as failed instead). Async handlers run in a new event loop: from async code, use
    `AsyncInlineProducer`. See the module docstring for what inline mode does not do.
    """

    def enqueue(
        self,
        task: Task | str,
        payload: Any = None,
        *,
        conn: object = None,
        on_conflict: str = "return",
        **options: Any,
    ) -> TaskInfo:
        """Run the task now; returns its final TaskInfo. ``conn`` is ignored."""
        return self.enqueue_many([as_task(task, payload, options)], on_conflict=on_conflict)[0]

    def enqueue_many(
        self, tasks: Iterable[Task], *, conn: object = None, on_conflict: str = "return"
    ) -> list[TaskInfo]:
        """Run each task now, in order, once all of them passed `Producer`'s checks."""
        tasks = list(tasks)
        self._check(tasks)
        return [self._run(task, on_conflict) for task in tasks]

    def _run(self, task: Task, on_conflict: str) -> TaskInfo:
        info, fresh = self._claim(task, on_conflict)
        if not fresh:
            return info
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise ConfigurationError(
                "InlineProducer.enqueue was called inside a running event loop: "
                "use AsyncInlineProducer there"
            )
        chain = self._chain(task.type)
        try:
            result = asyncio.run(chain(self._context(info)))
        except Exception as exc:
            return self._finish(info, None, exc)
        return self._finish(info, result, None)

    def close(self) -> None:
        """Nothing to close; here to match `Producer`."""

    def __enter__(self) -> InlineProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncInlineProducer(_InlineBase):
    """`InlineProducer` for asyncio: ``await producer.enqueue(...)`` runs the handler on the
    current event loop (a sync handler in the caller's thread, blocking the loop)."""

    async def enqueue(
        self,
        task: Task | str,
        payload: Any = None,
        *,
        conn: object = None,
        on_conflict: str = "return",
        **options: Any,
    ) -> TaskInfo:
        """See `InlineProducer.enqueue`."""
        infos = await self.enqueue_many([as_task(task, payload, options)], on_conflict=on_conflict)
        return infos[0]

    async def enqueue_many(
        self, tasks: Iterable[Task], *, conn: object = None, on_conflict: str = "return"
    ) -> list[TaskInfo]:
        """See `InlineProducer.enqueue_many`."""
        tasks = list(tasks)
        self._check(tasks)
        return [await self._run(task, on_conflict) for task in tasks]

    async def _run(self, task: Task, on_conflict: str) -> TaskInfo:
        info, fresh = self._claim(task, on_conflict)
        if not fresh:
            return info
        try:
            result = await self._chain(task.type)(self._context(info))
        except Exception as exc:
            return self._finish(info, None, exc)
        return self._finish(info, result, None)

    async def close(self) -> None:
        """Nothing to close; here to match `AsyncProducer`."""

    async def __aenter__(self) -> AsyncInlineProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
