"""The connection pools pgtasq owns when the caller gives a DSN instead of a connection.

Pool connections are in autocommit: each pgtasq operation is one statement (or runs in an
explicit transaction), so no BEGIN/COMMIT round trips are spent on the hot path.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from pgtasq._database import Backoff
from pgtasq._driver_errors import translate, unavailable
from pgtasq._dsn import normalize
from pgtasq.errors import ConfigurationError, DatabaseMisconfigured

POOL_MIN_SIZE_DEFAULT = 1
POOL_MAX_SIZE_DEFAULT = 10
POOL_OPEN_TIMEOUT_DEFAULT = 10.0  # seconds the first use waits for a first connection
PROBE_BACKOFF_CAP = 1.0  # the longest pause between two connection attempts while opening


def connection_kwargs(*, prepare: bool) -> dict[str, Any]:
    """The keyword arguments of pgtasq's pooled connections. ``prepare=False``: never use
    server-side prepared statements (psycopg prepares a statement run 5 times on one
    connection), for PgBouncer before 1.21, or later without ``max_prepared_statements``."""
    if not isinstance(prepare, bool):
        raise ConfigurationError(f"prepare must be True or False, got {prepare!r}")
    return {"autocommit": True} if prepare else {"autocommit": True, "prepare_threshold": None}


def check_connect_timeout(value: object) -> float:
    """``connect_timeout`` as seconds, or a ConfigurationError (before any connection)."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0 < value < float("inf")
    ):
        raise ConfigurationError(f"connect_timeout must be a number of seconds > 0, got {value!r}")
    return float(value)


def _refused(exc: psycopg.Error) -> DatabaseMisconfigured | None:
    """A connection error no retry can fix (the schema plays no part before a statement)."""
    found = translate(exc, connecting=True)
    return found if isinstance(found, DatabaseMisconfigured) else None


def _attempt_timeout(left: float) -> int:
    # libpq's connect_timeout is whole seconds, and treats 1 as 2.
    return max(2, math.ceil(left))


def _wait_for_server(dsn: str, timeout: float) -> None:
    """Connect (and disconnect) until the server accepts us, for up to ``timeout`` seconds.

    What no retry can fix (a wrong password, an unknown database) raises
    `DatabaseMisconfigured` at the first attempt, instead of after ``timeout`` seconds of
    psycopg_pool's retries; a server that stays away raises `DatabaseUnavailable`.
    """
    deadline = time.monotonic() + timeout
    backoff = Backoff(cap=PROBE_BACKOFF_CAP)
    while True:
        try:
            left = deadline - time.monotonic()
            psycopg.connect(dsn, connect_timeout=_attempt_timeout(left)).close()
            return
        except psycopg.Error as exc:
            fatal = _refused(exc)
            if fatal is not None:
                raise fatal from None  # psycopg's text may quote the DSN
            delay = backoff.next()
            if time.monotonic() + delay >= deadline:
                raise unavailable(exc) from exc
            time.sleep(delay)


async def _async_wait_for_server(dsn: str, timeout: float) -> None:
    """`_wait_for_server` for asyncio."""
    deadline = time.monotonic() + timeout
    backoff = Backoff(cap=PROBE_BACKOFF_CAP)
    while True:
        try:
            left = deadline - time.monotonic()
            conn = await psycopg.AsyncConnection.connect(
                dsn, connect_timeout=_attempt_timeout(left)
            )
            await conn.close()
            return
        except psycopg.Error as exc:
            fatal = _refused(exc)
            if fatal is not None:
                raise fatal from None
            delay = backoff.next()
            if time.monotonic() + delay >= deadline:
                raise unavailable(exc) from exc
            await asyncio.sleep(delay)


class LazyPool:
    """A psycopg ``ConnectionPool`` opened on first use, so constructing is free and safe.

    Opening first connects once by itself (`_wait_for_server`), retrying for up to
    ``open_timeout`` seconds, then raises `DatabaseUnavailable`; an error no retry can fix
    raises `DatabaseMisconfigured` at once. A pool that failed to open is closed and the
    next use opens a new one (a closed psycopg pool cannot be opened again).
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        name: str,
        open_timeout: float = POOL_OPEN_TIMEOUT_DEFAULT,
        prepare: bool = True,
    ) -> None:
        self.dsn = normalize(dsn)
        self._kwargs = connection_kwargs(prepare=prepare)
        self._open_timeout = check_connect_timeout(open_timeout)
        self._min_size = min_size
        self._max_size = max_size
        self._name = name
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = None

    def get(self) -> ConnectionPool[Any]:
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    started = time.monotonic()
                    _wait_for_server(self.dsn, self._open_timeout)
                    left = self._open_timeout - (time.monotonic() - started)
                    pool = ConnectionPool(
                        self.dsn,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        open=False,
                        name=self._name,
                        kwargs=self._kwargs,
                    )
                    try:
                        pool.open(wait=True, timeout=max(left, 1.0))
                    except PoolTimeout as exc:
                        pool.close()
                        raise unavailable(exc, self.dsn) from exc
                    self._pool = pool
        return pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                pool.close()


class AsyncLazyPool:
    """An ``AsyncConnectionPool`` opened on first use (it cannot be opened in ``__init__``);
    like `LazyPool`, opening waits up to ``open_timeout`` seconds."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        name: str,
        open_timeout: float = POOL_OPEN_TIMEOUT_DEFAULT,
        prepare: bool = True,
    ) -> None:
        self.dsn = normalize(dsn)
        self._kwargs = connection_kwargs(prepare=prepare)
        self._open_timeout = check_connect_timeout(open_timeout)
        self._min_size = min_size
        self._max_size = max_size
        self._name = name
        self._lock: asyncio.Lock | None = None
        self._pool: AsyncConnectionPool[Any] | None = None

    async def get(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._pool is None:
                    started = time.monotonic()
                    await _async_wait_for_server(self.dsn, self._open_timeout)
                    left = self._open_timeout - (time.monotonic() - started)
                    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                        self.dsn,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        open=False,
                        name=self._name,
                        kwargs=self._kwargs,
                    )
                    try:
                        await pool.open(wait=True, timeout=max(left, 1.0))
                    except PoolTimeout as exc:
                        await pool.close()
                        raise unavailable(exc, self.dsn) from exc
                    self._pool = pool
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
