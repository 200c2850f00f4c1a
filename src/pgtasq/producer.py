"""Enqueue tasks: `Producer` and `AsyncProducer`.

With ``conn=`` the producer runs on the caller's connection and never commits: the task
exists if and only if the caller's transaction commits. Without it, the producer takes a
connection from its own pool and commits.

What to send is decided in `pgtasq._enqueue`, without I/O (one task: one INSERT; many
keyless tasks on psycopg: COPY; otherwise arrays and unnest). The classes here only run its
steps: on a psycopg cursor (the caller's connection, or a reusable cursor per connection of
our pool) or through the SQLAlchemy runner of `pgtasq._connections`.
"""

from __future__ import annotations

import contextlib
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row

from pgtasq import _enqueue, _sql
from pgtasq._connections import Row, async_runner, sync_runner
from pgtasq._enqueue import Batch, Copy, Done, Flow, OnConflict
from pgtasq._limits import PAYLOAD_MAX_BYTES_CEILING
from pgtasq._pool import (
    POOL_MAX_SIZE_DEFAULT,
    POOL_MIN_SIZE_DEFAULT,
    POOL_OPEN_TIMEOUT_DEFAULT,
    AsyncLazyPool,
    LazyPool,
    check_connect_timeout,
)
from pgtasq.errors import ConfigurationError, TaskValidationError
from pgtasq.models import PAYLOAD_MAX_BYTES_DEFAULT, Task, TaskInfo
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name

BATCH_SIZE_DEFAULT = 5000

_Fetch = Callable[[_sql.Statement, Mapping[str, Any]], Sequence[Row]]
_AFetch = Callable[[_sql.Statement, Mapping[str, Any]], Awaitable[Sequence[Row]]]


def _can_copy(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """COPY needs the connection out of pipeline mode, and we send UTF-8 text."""
    return conn.info.encoding == "utf-8" and conn.pgconn.pipeline_status == 0


def _drive(flow: Flow, fetch: _Fetch, cur: psycopg.Cursor[DictRow] | None) -> list[TaskInfo]:
    step = _enqueue.resume(flow, None)
    while not isinstance(step, Done):
        if isinstance(step, Copy):
            assert cur is not None
            with cur.copy(step.stmt.text) as copy:
                for chunk in step.chunks:
                    copy.write(chunk)
                # Every row is sent; the flow builds its TaskInfos while the server is still
                # ingesting them. Leaving the block ends the COPY, or raises what the server said.
                step = _enqueue.resume(flow, None)
        else:
            step = _enqueue.resume(flow, fetch(step.stmt, step.params))
    return step.infos


async def _adrive(
    flow: Flow, fetch: _AFetch, cur: psycopg.AsyncCursor[DictRow] | None
) -> list[TaskInfo]:
    step = _enqueue.resume(flow, None)
    while not isinstance(step, Done):
        if isinstance(step, Copy):
            assert cur is not None
            async with cur.copy(step.stmt.text) as copy:
                for chunk in step.chunks:
                    await copy.write(chunk)
                step = _enqueue.resume(flow, None)
        else:
            step = _enqueue.resume(flow, await fetch(step.stmt, step.params))
    return step.infos


def _fetch(cur: psycopg.Cursor[DictRow]) -> _Fetch:
    # Every statement of the flow returns rows. (Asking cur.description first would not
    # do in pipeline mode, where it is None until the results arrive.)
    def fetch(stmt: _sql.Statement, params: Mapping[str, Any]) -> Sequence[Row]:
        return cur.execute(stmt.text, params).fetchall()

    return fetch


def _afetch(cur: psycopg.AsyncCursor[DictRow]) -> _AFetch:
    async def fetch(stmt: _sql.Statement, params: Mapping[str, Any]) -> Sequence[Row]:
        return await (await cur.execute(stmt.text, params)).fetchall()

    return fetch


@contextlib.contextmanager
def _rollback_on_error(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """The savepoint of a transaction that holds nothing but our statements: itself."""
    try:
        yield
    except BaseException:
        conn.rollback()
        raise


@contextlib.asynccontextmanager
async def _arollback_on_error(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    try:
        yield
    except BaseException:
        await conn.rollback()
        raise


def _guard(
    conn: psycopg.Connection[Any], atomic: bool, may_raise: bool
) -> contextlib.AbstractContextManager[Any]:
    """What wraps an enqueue on a psycopg connection; it never commits a caller's work.

    In autocommit mode (our pool's, or the caller's) every statement commits anyway: a call
    of several statements gets a transaction of its own, so it is all or none and a COPY
    shares its transaction with its ids and NOTIFY. Otherwise we run inside the caller's
    transaction, and raising DuplicateTask needs a savepoint to undo our rows alone. psycopg's
    transaction() on an idle connection would BEGIN and COMMIT instead; there nothing
    precedes us, so rolling the transaction back undoes our rows alone.
    """
    if conn.autocommit:
        return conn.transaction() if atomic else contextlib.nullcontext()
    if may_raise:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            return _rollback_on_error(conn)
        return conn.transaction()
    return contextlib.nullcontext()


def _aguard(
    conn: psycopg.AsyncConnection[Any], atomic: bool, may_raise: bool
) -> contextlib.AbstractAsyncContextManager[Any]:
    """`_guard` for an AsyncConnection."""
    if conn.autocommit:
        return conn.transaction() if atomic else contextlib.nullcontext()
    if may_raise:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            return _arollback_on_error(conn)
        return conn.transaction()
    return contextlib.nullcontext()


class _PoolCursors:
    """One cursor per connection of our own pool, reused across calls.

    A pooled connection serves one call at a time, so its cursor does too. A new cursor per
    call costs about 30 µs of CPU on the one-task path (psycopg's per-cursor adapter caches
    start cold). Cursors of connections the pool has closed are dropped. Serves sync and
    async connections alike (``AsyncConnection.cursor()`` is not a coroutine).
    """

    def __init__(self) -> None:
        self._by_conn: dict[Any, Any] = {}

    def clear(self) -> None:
        self._by_conn.clear()

    def get(self, conn: Any) -> Any:
        cur = self._by_conn.get(conn)
        if cur is None or cur.closed:
            for old in [c for c in list(self._by_conn) if c.closed]:
                self._by_conn.pop(old, None)
            cur = self._by_conn[conn] = conn.cursor(row_factory=dict_row)
        return cur


class _ProducerBase:
    def __init__(
        self,
        *,
        schema: str,
        max_payload_bytes: int,
        batch_size: int,
    ) -> None:
        check_schema_name(schema)
        if (
            not isinstance(max_payload_bytes, int)
            or isinstance(max_payload_bytes, bool)
            or not 1 <= max_payload_bytes <= PAYLOAD_MAX_BYTES_CEILING
        ):
            raise ConfigurationError(
                f"max_payload_bytes must be from 1 to {PAYLOAD_MAX_BYTES_CEILING} (32 MiB), "
                f"got {max_payload_bytes!r}"
            )
        if not 1 <= batch_size <= 100_000:
            raise ConfigurationError(f"batch_size must be from 1 to 100000, got {batch_size}")
        self.schema = schema
        self.max_payload_bytes = max_payload_bytes
        self.batch_size = batch_size
        self._stmts = _sql.statements(schema)
        self._cursors = _PoolCursors()

    def _batches(self, tasks: Sequence[Task], on_conflict: OnConflict) -> list[Batch]:
        """Validated batches; raises before any SQL is sent."""
        if on_conflict not in ("return", "raise"):
            raise TaskValidationError(
                "on_conflict", f"expected 'return' or 'raise', got {on_conflict!r}"
            )
        return _enqueue.plan(tasks, self.max_payload_bytes, self.batch_size)

    def _flow(self, batches: list[Batch], on_conflict: OnConflict, *, copy: bool) -> Flow:
        return _enqueue.enqueue_steps(self._stmts, batches, on_conflict, copy=copy)


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
        connect_timeout: float = POOL_OPEN_TIMEOUT_DEFAULT,
        prepare: bool = True,
    ) -> None:
        super().__init__(schema=schema, max_payload_bytes=max_payload_bytes, batch_size=batch_size)
        connect_timeout = check_connect_timeout(connect_timeout)
        self._pool = (
            LazyPool(
                dsn,
                min_size=pool_min_size,
                max_size=pool_max_size,
                name="pgtasq-producer",
                open_timeout=connect_timeout,
                prepare=prepare,
            )
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
        task = _enqueue.as_task(task, payload, options)
        return self.enqueue_many([task], conn=conn, on_conflict=on_conflict)[0]

    def enqueue_many(
        self, tasks: Iterable[Task], *, conn: object = None, on_conflict: OnConflict = "return"
    ) -> list[TaskInfo]:
        """Enqueue many tasks, one statement per batch; all or none of them."""
        tasks = list(tasks)
        if not tasks:
            return []
        batches = self._batches(tasks, on_conflict)
        if isinstance(conn, psycopg.Connection):
            with conn.cursor(row_factory=dict_row) as cur:
                return self._run(batches, on_conflict, cur)
        if conn is not None:
            runner = sync_runner(conn)
            # A savepoint keeps the caller's transaction usable when we raise DuplicateTask.
            may_raise = _enqueue.may_raise(batches, on_conflict)
            with runner.savepoint() if may_raise else contextlib.nullcontext():
                return _drive(self._flow(batches, on_conflict, copy=False), runner.fetch, None)
        if self._pool is None:
            raise ConfigurationError(
                "this Producer has no DSN: pass conn=, or create it with Producer(dsn)"
            )
        pool = self._pool.get()
        own = pool.getconn()
        try:
            return self._run(batches, on_conflict, self._cursors.get(own))
        finally:
            pool.putconn(own)

    def _run(
        self, batches: list[Batch], on_conflict: OnConflict, cur: psycopg.Cursor[DictRow]
    ) -> list[TaskInfo]:
        if one := _enqueue.single(self._stmts, batches):
            return _enqueue.single_info(batches, cur.execute(one.stmt.text, one.params).fetchone())
        copy = _can_copy(cur.connection)
        atomic = _enqueue.atomic(batches, copy=copy)
        with _guard(cur.connection, atomic, _enqueue.may_raise(batches, on_conflict)):
            return _drive(self._flow(batches, on_conflict, copy=copy), _fetch(cur), cur)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self._cursors.clear()

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
        connect_timeout: float = POOL_OPEN_TIMEOUT_DEFAULT,
        prepare: bool = True,
    ) -> None:
        super().__init__(schema=schema, max_payload_bytes=max_payload_bytes, batch_size=batch_size)
        connect_timeout = check_connect_timeout(connect_timeout)
        self._pool = (
            AsyncLazyPool(
                dsn,
                min_size=pool_min_size,
                max_size=pool_max_size,
                name="pgtasq-producer",
                open_timeout=connect_timeout,
                prepare=prepare,
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
        task = _enqueue.as_task(task, payload, options)
        infos = await self.enqueue_many([task], conn=conn, on_conflict=on_conflict)
        return infos[0]

    async def enqueue_many(
        self, tasks: Iterable[Task], *, conn: object = None, on_conflict: OnConflict = "return"
    ) -> list[TaskInfo]:
        """See `Producer.enqueue_many`."""
        tasks = list(tasks)
        if not tasks:
            return []
        batches = self._batches(tasks, on_conflict)
        if isinstance(conn, psycopg.AsyncConnection):
            async with conn.cursor(row_factory=dict_row) as cur:
                return await self._run(batches, on_conflict, cur)
        if conn is not None:
            runner = async_runner(conn)
            flow = self._flow(batches, on_conflict, copy=False)
            if _enqueue.may_raise(batches, on_conflict):
                async with runner.savepoint():
                    return await _adrive(flow, runner.fetch, None)
            return await _adrive(flow, runner.fetch, None)
        if self._pool is None:
            raise ConfigurationError(
                "this AsyncProducer has no DSN: pass conn=, or create it with AsyncProducer(dsn)"
            )
        pool = await self._pool.get()
        own = await pool.getconn()
        try:
            return await self._run(batches, on_conflict, self._cursors.get(own))
        finally:
            await pool.putconn(own)

    async def _run(
        self, batches: list[Batch], on_conflict: OnConflict, cur: psycopg.AsyncCursor[DictRow]
    ) -> list[TaskInfo]:
        if one := _enqueue.single(self._stmts, batches):
            row = await (await cur.execute(one.stmt.text, one.params)).fetchone()
            return _enqueue.single_info(batches, row)
        copy = _can_copy(cur.connection)
        atomic = _enqueue.atomic(batches, copy=copy)
        async with _aguard(cur.connection, atomic, _enqueue.may_raise(batches, on_conflict)):
            return await _adrive(self._flow(batches, on_conflict, copy=copy), _afetch(cur), cur)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self._cursors.clear()

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
