"""Enqueue tasks: `Producer` and `AsyncProducer`.

With ``conn=`` the producer runs on the caller's connection and never commits: the task
exists if and only if the caller's transaction commits. Without it, the producer takes a
connection from its own pool and the statement commits on its own.

The logic is written once, without I/O: `_enqueue_steps` is a generator that yields the
statements to run and receives their rows. The sync and async classes only drive it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable, Sequence
from datetime import timedelta
from typing import Any, Literal

from pgtasq import _sql
from pgtasq._connections import AsyncRunner, Row, SyncRunner, async_runner, sync_runner
from pgtasq._pool import POOL_MAX_SIZE_DEFAULT, POOL_MIN_SIZE_DEFAULT, AsyncLazyPool, LazyPool
from pgtasq.errors import ConfigurationError, DuplicateTask, PgtasqError
from pgtasq.models import (
    PAYLOAD_MAX_BYTES_DEFAULT,
    Task,
    TaskInfo,
    TaskStatus,
    _seconds,
    dump_payload,
)
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name

BATCH_SIZE_DEFAULT = 5000
OnConflict = Literal["return", "raise"]
_STALE_KEY_RETRIES = 3

# One step of the enqueue protocol: a statement and its parameters; the rows come back.
_Step = tuple[_sql.Statement, dict[str, Any]]
_Flow = Generator[_Step, Sequence[Row], list[TaskInfo]]


def _as_task(task: Task | str, payload: Any, options: dict[str, Any]) -> Task:
    if isinstance(task, Task):
        if payload is not None:
            raise TypeError("give the payload inside the Task, or pass a task type string")
        return task.with_options(**options) if options else task
    if isinstance(task, str):
        return Task(task, payload, **options)
    raise TypeError(f"expected a Task or a task type string, got {type(task).__name__}")


def _columns(tasks: Sequence[Task], max_payload_bytes: int) -> dict[str, list[Any]]:
    """The parameters of `task_insert` for a batch: one array per column."""
    cols: dict[str, list[Any]] = {name: [] for name, _ in _sql.INSERT_ARRAYS}
    for task in tasks:
        if not isinstance(task, Task):
            raise TypeError(f"enqueue_many takes Task objects, got {type(task).__name__}")
        cols["queue"].append(task.queue)
        cols["type"].append(task.type)
        cols["payload"].append(dump_payload(task.payload, max_payload_bytes))
        cols["priority"].append(task.priority)
        cols["run_at"].append(task.run_at)
        cols["delay"].append(_seconds("delay", task.delay))
        cols["max_attempts"].append(task.max_attempts)
        cols["timeout"].append(_seconds("timeout", task.timeout))
        cols["deadline"].append(task.deadline)
        cols["idempotency_key"].append(task.idempotency_key)
        cols["retention"].append(_seconds("retention", task.retention))
    return cols


def _plan(
    tasks: Sequence[Task], max_payload_bytes: int, batch_size: int
) -> list[tuple[list[Task], dict[str, list[Any]]]]:
    """Validate everything, then cut into batches. Raises before any SQL is sent."""
    batches = []
    for start in range(0, len(tasks), batch_size):
        chunk = list(tasks[start : start + batch_size])
        batches.append((chunk, _columns(chunk, max_payload_bytes)))
    return batches


def _new_info(task: Task, row: Row) -> TaskInfo:
    """The TaskInfo of a row this statement inserted: the task's fields plus the row's."""
    timeout = _seconds("timeout", task.timeout)
    retention = _seconds("retention", task.retention)
    return TaskInfo(
        id=row["id"],
        queue=task.queue,
        type=task.type,
        payload=task.payload,
        priority=task.priority,
        status=TaskStatus.PENDING,
        run_at=row["run_at"],
        attempts=0,
        max_attempts=task.max_attempts,
        timeout=None if timeout is None else timedelta(seconds=timeout),
        deadline=task.deadline,
        idempotency_key=task.idempotency_key,
        errors=[],
        result=None,
        locked_by=None,
        locked_until=None,
        created_at=row["created_at"],
        updated_at=row["created_at"],
        attempted_at=None,
        finalized_at=None,
        retention=None if retention is None else timedelta(seconds=retention),
        created=True,
    )


def _match(tasks: Sequence[Task], rows: Sequence[Row]) -> tuple[list[TaskInfo | None], list[str]]:
    """Pair the inserted rows with their tasks; list the keys that were already taken.

    Rows with a key are matched by key. Keyless rows come back in id order, which is the
    order the statement inserted them in (``ORDER BY ord``), so they match keyless tasks in turn.
    """
    by_key = {r["idempotency_key"]: r for r in rows if r["idempotency_key"] is not None}
    keyless = iter(sorted((r for r in rows if r["idempotency_key"] is None), key=lambda r: r["id"]))
    claimed: set[str] = set()
    infos: list[TaskInfo | None] = []
    taken: list[str] = []
    for task in tasks:
        key = task.idempotency_key
        if key is None:
            infos.append(_new_info(task, next(keyless)))
        elif key in by_key and key not in claimed:
            claimed.add(key)
            infos.append(_new_info(task, by_key[key]))
        else:
            infos.append(None)
            taken.append(key)
    return infos, taken


def _enqueue_steps(
    stmts: _sql.Statements,
    batches: list[tuple[list[Task], dict[str, list[Any]]]],
    on_conflict: OnConflict,
) -> _Flow:
    """Enqueue the batches; yields (statement, params), receives rows, returns TaskInfos."""
    results: list[TaskInfo] = []
    for tasks, params in batches:
        final: list[TaskInfo | None] = [None] * len(tasks)
        todo = list(range(len(tasks)))
        sub_tasks, sub_params = tasks, params
        for _ in range(_STALE_KEY_RETRIES):
            rows = yield stmts.task_insert, sub_params
            infos, taken = _match(sub_tasks, rows)
            existing: dict[str, TaskInfo] = {}
            if taken:
                found = yield stmts.task_select_by_keys, {"keys": sorted(set(taken))}
                existing = {
                    r["idempotency_key"]: TaskInfo.from_row(r, created=False) for r in found
                }
                if on_conflict == "raise":
                    first = next((existing[k] for k in taken if k in existing), None)
                    if first is not None:
                        raise DuplicateTask(first)
            retry = []
            for j, info in enumerate(infos):
                if info is None:
                    info = existing.get(sub_tasks[j].idempotency_key or "")
                if info is None:
                    retry.append(todo[j])  # the holder of the key was deleted meanwhile
                else:
                    final[todo[j]] = info
            if not retry:
                break
            todo = retry
            sub_tasks = [tasks[i] for i in todo]
            sub_params = {name: [column[i] for i in todo] for name, column in params.items()}
        else:
            raise PgtasqError("idempotency keys kept changing hands while enqueueing; try again")
        results.extend(info for info in final if info is not None)
    return results


def _drive(flow: _Flow, runner: SyncRunner) -> list[TaskInfo]:
    try:
        step = next(flow)
        while True:
            step = flow.send(runner.fetch(*step))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _adrive(flow: _Flow, runner: AsyncRunner) -> list[TaskInfo]:
    try:
        step = next(flow)
        while True:
            step = flow.send(await runner.fetch(*step))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class _ProducerBase:
    def __init__(
        self,
        *,
        schema: str,
        max_payload_bytes: int,
        batch_size: int,
    ) -> None:
        check_schema_name(schema)
        if max_payload_bytes < 1:
            raise ConfigurationError(f"max_payload_bytes must be >= 1, got {max_payload_bytes}")
        if not 1 <= batch_size <= 100_000:
            raise ConfigurationError(f"batch_size must be from 1 to 100000, got {batch_size}")
        self.schema = schema
        self.max_payload_bytes = max_payload_bytes
        self.batch_size = batch_size
        self._stmts = _sql.statements(schema)

    def _flow(self, tasks: Sequence[Task], on_conflict: OnConflict) -> tuple[_Flow, bool]:
        """The flow for these tasks, and whether it needs a transaction of its own."""
        if on_conflict not in ("return", "raise"):
            raise ValueError(f"on_conflict must be 'return' or 'raise', got {on_conflict!r}")
        batches = _plan(tasks, self.max_payload_bytes, self.batch_size)
        atomic = (
            on_conflict == "raise"
            or len(batches) > 1
            or any(t.idempotency_key is not None for t in tasks)
        )
        return _enqueue_steps(self._stmts, batches, on_conflict), atomic


class Producer(_ProducerBase):
    """Enqueues tasks, on the caller's connection or on its own pool.

    ``Producer(dsn)`` owns a small pool, opened on first use; close it with ``close()`` or a
    ``with`` block. ``Producer()`` without a DSN works only with ``conn=`` on every call.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = SCHEMA_DEFAULT,
        max_payload_bytes: int = PAYLOAD_MAX_BYTES_DEFAULT,
        batch_size: int = BATCH_SIZE_DEFAULT,
        pool_min_size: int = POOL_MIN_SIZE_DEFAULT,
        pool_max_size: int = POOL_MAX_SIZE_DEFAULT,
    ) -> None:
        super().__init__(schema=schema, max_payload_bytes=max_payload_bytes, batch_size=batch_size)
        self._pool = (
            LazyPool(dsn, min_size=pool_min_size, max_size=pool_max_size, name="pgtasq-producer")
            if dsn is not None
            else None
        )

    def enqueue(
        self,
        task: Task | str,
        payload: Any = None,
        *,
        conn: object = None,
        on_conflict: OnConflict = "return",
        **options: Any,
    ) -> TaskInfo:
        """Enqueue one task: ``enqueue(Task(...))`` or ``enqueue("type", payload, queue=...)``.

        A taken idempotency key returns the existing task (``created`` False), unchanged;
        with ``on_conflict="raise"`` it raises `DuplicateTask` instead.
        """
        return self.enqueue_many(
            [_as_task(task, payload, options)], conn=conn, on_conflict=on_conflict
        )[0]

    def enqueue_many(
        self, tasks: Iterable[Task], *, conn: object = None, on_conflict: OnConflict = "return"
    ) -> list[TaskInfo]:
        """Enqueue many tasks, one statement per batch; all or none of them."""
        tasks = list(tasks)
        if not tasks:
            return []
        flow, atomic = self._flow(tasks, on_conflict)
        if conn is not None:
            runner = sync_runner(conn)
            # A savepoint keeps the caller's transaction usable when we raise DuplicateTask.
            guard = runner.savepoint() if on_conflict == "raise" else contextlib.nullcontext()
            with guard:
                return _drive(flow, runner)
        if self._pool is None:
            raise ConfigurationError(
                "this Producer has no DSN: pass conn=, or create it with Producer(dsn)"
            )
        with self._pool.get().connection() as own:
            runner = sync_runner(own)
            if atomic:
                with own.transaction():
                    return _drive(flow, runner)
            return _drive(flow, runner)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncProducer(_ProducerBase):
    """`Producer` for asyncio: the same options, ``await`` on every call."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = SCHEMA_DEFAULT,
        max_payload_bytes: int = PAYLOAD_MAX_BYTES_DEFAULT,
        batch_size: int = BATCH_SIZE_DEFAULT,
        pool_min_size: int = POOL_MIN_SIZE_DEFAULT,
        pool_max_size: int = POOL_MAX_SIZE_DEFAULT,
    ) -> None:
        super().__init__(schema=schema, max_payload_bytes=max_payload_bytes, batch_size=batch_size)
        self._pool = (
            AsyncLazyPool(
                dsn, min_size=pool_min_size, max_size=pool_max_size, name="pgtasq-producer"
            )
            if dsn is not None
            else None
        )

    async def enqueue(
        self,
        task: Task | str,
        payload: Any = None,
        *,
        conn: object = None,
        on_conflict: OnConflict = "return",
        **options: Any,
    ) -> TaskInfo:
        """See `Producer.enqueue`."""
        infos = await self.enqueue_many(
            [_as_task(task, payload, options)], conn=conn, on_conflict=on_conflict
        )
        return infos[0]

    async def enqueue_many(
        self, tasks: Iterable[Task], *, conn: object = None, on_conflict: OnConflict = "return"
    ) -> list[TaskInfo]:
        """See `Producer.enqueue_many`."""
        tasks = list(tasks)
        if not tasks:
            return []
        flow, atomic = self._flow(tasks, on_conflict)
        if conn is not None:
            runner = async_runner(conn)
            if on_conflict == "raise":
                async with runner.savepoint():
                    return await _adrive(flow, runner)
            return await _adrive(flow, runner)
        if self._pool is None:
            raise ConfigurationError(
                "this AsyncProducer has no DSN: pass conn=, or create it with AsyncProducer(dsn)"
            )
        pool = await self._pool.get()
        async with pool.connection() as own:
            runner = async_runner(own)
            if atomic:
                async with own.transaction():
                    return await _adrive(flow, runner)
            return await _adrive(flow, runner)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
