"""`AsyncProducer` is written by hand in ``_producer_async.py``; `Producer`, in
``_producer_sync.py``, is generated from it by ``python tools/gen_sync.py``
(tests/unit/test_sync_generated.py fails while it is not current). Docstrings are copied
unchanged, so they name no class of their own: they say "the producer".
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import PoolTimeout

from pgtasq import _enqueue
from pgtasq._connections import AsyncConn, Params, Row, async_runner
from pgtasq._driver_errors import call_error
from pgtasq._enqueue import Batch, Copy, Done, Flow, OnConflict
from pgtasq._pool import (
    POOL_MAX_SIZE_DEFAULT,
    POOL_MIN_SIZE_DEFAULT,
    POOL_OPEN_TIMEOUT_DEFAULT,
    check_connect_timeout,
)
from pgtasq._pool_async import AsyncLazyPool
from pgtasq._producer_base import BATCH_SIZE_DEFAULT, AsyncFetch, ProducerBase, can_copy
from pgtasq._sql import Statement
from pgtasq.errors import ConfigurationError
from pgtasq.models import PAYLOAD_MAX_BYTES_DEFAULT, Task, TaskInfo
from pgtasq.tables import SCHEMA_DEFAULT


class AsyncProducer(ProducerBase):
    """Enqueues tasks, on the caller's connection or on its own pool.

    With a DSN the producer owns a small pool, opened on first use; close it with
    ``close()`` or a ``with`` block. Without a DSN it works only with ``conn=`` on every
    call. ``prepare=False`` never uses server-side prepared statements (for PgBouncer
    before 1.21). ``tracer_provider``: the OpenTelemetry provider of its spans (default: the
    global one; see docs/observability.md).
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
        tracer_provider: Any = None,
    ) -> None:
        super().__init__(
            schema=schema,
            max_payload_bytes=max_payload_bytes,
            batch_size=batch_size,
            tracer_provider=tracer_provider,
        )
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
        conn: AsyncConn | None = None,
        on_conflict: OnConflict = "return",
        **options: Any,
    ) -> TaskInfo:
        """Enqueue one task: ``enqueue(Task(...))`` or ``enqueue("type", payload, queue=...)``.

        A taken idempotency key, or a unique key another task holds (docs/unique.md), returns
        the existing task (``created`` False), unchanged; with ``on_conflict="raise"`` it
        raises `DuplicateTask` instead; with ``on_conflict="update"`` a pending holder takes
        this task's priority (and its run_at or delay, if given) and is returned.
        """
        task = _enqueue.as_task(task, payload, options)
        infos = await self.enqueue_many([task], conn=conn, on_conflict=on_conflict)
        return infos[0]

    async def enqueue_many(
        self,
        tasks: Iterable[Task],
        *,
        conn: AsyncConn | None = None,
        on_conflict: OnConflict = "return",
    ) -> list[TaskInfo]:
        """Enqueue many tasks, one statement per batch; all or none of them."""
        tasks = list(tasks)
        if not tasks:
            return []
        try:
            if self._tracing.tracer() is None:
                return await self._enqueue(tasks, conn, on_conflict)
            with self._tracing.sending([t.queue for t in tasks]) as sending:
                assert sending is not None
                infos = await self._enqueue(self._traced(tasks, sending), conn, on_conflict)
                sending.sent([info.id for info in infos])
                return infos
        except (psycopg.Error, PoolTimeout) as exc:
            error = call_error(exc, self.schema, own=conn is None)
            if error is None:
                raise
            raise error from exc

    async def _enqueue(
        self, tasks: list[Task], conn: AsyncConn | None, on_conflict: OnConflict
    ) -> list[TaskInfo]:
        batches = self._batches(tasks, on_conflict)
        if isinstance(conn, psycopg.AsyncConnection):
            async with conn.cursor(row_factory=dict_row) as cur:
                return await self._run(batches, on_conflict, cur)
        if conn is not None:
            runner = async_runner(conn)
            # A savepoint keeps the caller's transaction usable when we raise DuplicateTask.
            may_raise = _enqueue.may_raise(batches, on_conflict)
            async with runner.savepoint() if may_raise else contextlib.nullcontext():
                flow = self._flow(batches, on_conflict, copy=False)
                return await _adrive(flow, runner.fetch, None)
        if self._pool is None:
            raise ConfigurationError(
                f"this {type(self).__name__} has no DSN: pass conn=, "
                f"or create it with {type(self).__name__}(dsn)"
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
            await cur.execute(one.stmt.text, one.params)
            return _enqueue.single_info(batches, await cur.fetchone())
        copy = can_copy(cur.connection)
        atomic = _enqueue.atomic(batches, copy=copy)
        async with _aguard(cur.connection, atomic, _enqueue.may_raise(batches, on_conflict)):
            return await _adrive(self._flow(batches, on_conflict, copy=copy), _afetch(cur), cur)

    async def close(self) -> None:
        """Close the producer's pool, if it has one; a later call opens a new one."""
        if self._pool is not None:
            await self._pool.close()
        self._cursors.clear()

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _adrive(
    flow: Flow, fetch: AsyncFetch, cur: psycopg.AsyncCursor[DictRow] | None
) -> list[TaskInfo]:
    """Run the flow's steps: statements through ``fetch``, COPY on ``cur``."""
    step = _enqueue.resume(flow, None)
    while not isinstance(step, Done):
        if isinstance(step, Copy):
            assert cur is not None
            async with cur.copy(step.stmt.text) as copy:
                for chunk in step.chunks:
                    await copy.write(chunk)
                # Every row is sent; the flow builds its TaskInfos while the server is still
                # ingesting them. Leaving the block ends the COPY, or raises what the server said.
                step = _enqueue.resume(flow, None)
        else:
            step = _enqueue.resume(flow, await fetch(step.stmt, step.params))
    return step.infos


def _afetch(cur: psycopg.AsyncCursor[DictRow]) -> AsyncFetch:
    # Every statement of the flow returns rows. (Asking cur.description first would not
    # do in pipeline mode, where it is None until the results arrive.)
    async def fetch(stmt: Statement, params: Params) -> Sequence[Row]:
        await cur.execute(stmt.text, params)
        return await cur.fetchall()

    return fetch


@contextlib.asynccontextmanager
async def _arollback_on_error(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """The savepoint of a transaction that holds nothing but our statements: itself."""
    try:
        yield
    except BaseException:
        await conn.rollback()
        raise


def _aguard(
    conn: psycopg.AsyncConnection[Any], atomic: bool, may_raise: bool
) -> contextlib.AbstractAsyncContextManager[Any]:
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
            return _arollback_on_error(conn)
        return conn.transaction()
    return contextlib.nullcontext()
