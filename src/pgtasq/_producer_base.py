"""What `Producer` and `AsyncProducer` share: option checks, planning, pooled cursors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgtasq import _enqueue, _sql
from pgtasq._connections import Row
from pgtasq._enqueue import Batch, Flow, OnConflict
from pgtasq._limits import PAYLOAD_MAX_BYTES_CEILING
from pgtasq._tracing import Sending, Tracing
from pgtasq.errors import ConfigurationError, TaskValidationError
from pgtasq.models import Task
from pgtasq.tables import check_schema_name

BATCH_SIZE_DEFAULT = 5000

# How a flow's statements reach the database: run one, return its rows.
SyncFetch = Callable[[_sql.Statement, Mapping[str, Any]], Sequence[Row]]
AsyncFetch = Callable[[_sql.Statement, Mapping[str, Any]], Awaitable[Sequence[Row]]]


def can_copy(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """COPY needs the connection out of pipeline mode, and we send UTF-8 text."""
    return conn.info.encoding == "utf-8" and conn.pgconn.pipeline_status == 0


class PoolCursors:
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


class ProducerBase:
    """The options both producers check at construction, and the planning of a call."""

    def __init__(
        self,
        *,
        schema: str,
        max_payload_bytes: int,
        batch_size: int,
        tracer_provider: Any = None,
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
        self._cursors = PoolCursors()
        self._tracing = Tracing(tracer_provider)

    def _traced(self, tasks: list[Task], sending: Sending) -> list[Task]:
        """The tasks with the trace context of their enqueue in their headers."""
        return [t.with_options(headers=sending.headers(t.headers)) for t in tasks]

    def _batches(self, tasks: Sequence[Task], on_conflict: OnConflict) -> list[Batch]:
        """Validated batches; raises before any SQL is sent."""
        if on_conflict not in _enqueue.ON_CONFLICT_CHOICES:
            raise TaskValidationError(
                "on_conflict", f"expected 'return', 'raise' or 'update', got {on_conflict!r}"
            )
        return _enqueue.plan(tasks, self.max_payload_bytes, self.batch_size)

    def _flow(self, batches: list[Batch], on_conflict: OnConflict, *, copy: bool) -> Flow:
        return _enqueue.enqueue_steps(self._stmts, batches, on_conflict, copy=copy)
