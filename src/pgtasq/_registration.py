"""The worker's row in the workers table: what it says, registering it (waiting while the
database is unreachable) and removing it at the end. Used by `pgtasq._runtime.Engine`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasq import _sql
from pgtasq._database import (
    RETRYABLE,
    Backoff,
    Outage,
    connect_misconfigured,
    fetch,
    misconfigured,
    short_error,
)

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from pgtasq._settings import Settings

log = logging.getLogger("pgtasq.consumer")

CONNECT_TIMEOUT = 10.0  # seconds one connection attempt may take before it counts as failed
OPEN_BACKOFF_CAP = 5.0  # the longest wait between two attempts to reach the database


def new_worker_id() -> str:
    """``host:pid:random``, unique to one run of one consumer."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def worker_row(worker_id: str, settings: Settings, types: Sequence[str]) -> dict[str, Any]:
    """The parameters of `worker_register` (and of the heartbeat, which re-registers)."""
    return {
        "worker": worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": json.dumps(dict(settings.queues)),
        "concurrency": settings.concurrency,
        "metadata": json.dumps({"strict": settings.strict, "types": list(types)}),
    }


async def register(
    *,
    dsn: str,
    stmts: _sql.Statements,
    row: dict[str, Any],
    outage: Outage,
    stopping: Callable[[], bool],
    pause: Callable[[float], Awaitable[None]],
) -> bool:
    """Register the worker on a connection of its own, waiting (``pause(seconds)``) while
    the database is unreachable: False when ``stopping()`` came first. What no retry can fix
    (authentication, a schema not migrated, a permission, a read-only server) raises
    `DatabaseMisconfigured`."""
    backoff = Backoff(cap=OPEN_BACKOFF_CAP)
    while not stopping():
        try:
            conn = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(dsn, autocommit=True), CONNECT_TIMEOUT
            )
        except (psycopg.Error, asyncio.TimeoutError) as exc:
            fatal = connect_misconfigured(exc) or misconfigured(exc, stmts.schema)
            if fatal is not None:
                raise fatal from None  # psycopg's text may quote the DSN
            outage.lost(exc)
            await pause(backoff.next())
            continue
        try:
            async with conn:
                await fetch(conn, stmts.worker_register, row)
        except psycopg.Error as exc:
            fatal = misconfigured(exc, stmts.schema)
            if fatal is not None:
                raise fatal from exc
            if not isinstance(exc, RETRYABLE):
                raise
            outage.lost(exc)
            await pause(backoff.next())
            continue
        outage.back()
        return True
    return False


async def unregister(
    pool: AsyncConnectionPool[Any], stmts: _sql.Statements, worker_id: str, left: float
) -> None:
    """Remove the worker's row within ``left`` seconds; a failure is logged, not raised
    (the rescuer of another worker removes a stale row)."""
    try:
        async with pool.connection(timeout=max(0.1, left)) as conn, conn.transaction():
            timeout = {"milliseconds": str(max(100, int(left * 1000)))}
            await fetch(conn, _sql.setting_statement_timeout_local, timeout)
            await fetch(conn, stmts.worker_unregister, {"worker": worker_id})
    except (*RETRYABLE, psycopg.Error) as exc:
        log.warning("could not remove worker %s: %s", worker_id, short_error(exc))
