"""`AsyncLazyPool` is written by hand in ``_pool_async.py``; `LazyPool`, in ``_pool_sync.py``,
is generated from it by ``python tools/gen_sync.py`` (tests/unit/test_sync_generated.py fails
while it is not current).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pgtasq._database import Backoff
from pgtasq._dsn import normalize
from pgtasq._pool import (
    POOL_OPEN_TIMEOUT_DEFAULT,
    PROBE_BACKOFF_CAP,
    _attempt_timeout,
    _refused,
    _unavailable,
    check_connect_timeout,
    connection_kwargs,
)


async def _async_wait_for_server(dsn: str, timeout: float) -> None:
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
            conn = await psycopg.AsyncConnection.connect(
                dsn, connect_timeout=_attempt_timeout(left)
            )
            await conn.close()
            return
        except psycopg.Error as exc:
            fatal = _refused(exc)
            if fatal is not None:
                raise fatal from None  # psycopg's text may quote the DSN
            delay = backoff.next()
            if time.monotonic() + delay >= deadline:
                raise _unavailable(dsn, exc) from exc
            await asyncio.sleep(delay)


class AsyncLazyPool:
    """A psycopg pool opened on first use, so constructing is free and safe.

    Opening first connects once by itself (`_async_wait_for_server`), retrying for up to
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
        self._lock = asyncio.Lock()
        self._pool: AsyncConnectionPool[Any] | None = None

    async def get(self) -> AsyncConnectionPool[Any]:
        """The open pool; the first call (or the first after `close`) opens it."""
        pool = self._pool
        if pool is None:
            async with self._lock:
                pool = self._pool
                if pool is None:
                    started = time.monotonic()
                    await _async_wait_for_server(self.dsn, self._open_timeout)
                    left = self._open_timeout - (time.monotonic() - started)
                    pool = AsyncConnectionPool(
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
                        raise _unavailable(self.dsn, exc) from exc
                    self._pool = pool
        return pool

    async def close(self) -> None:
        """Close the pool, if open; the next `get` opens a new one."""
        async with self._lock:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                await pool.close()
