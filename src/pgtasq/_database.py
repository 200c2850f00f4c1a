"""The database boundary of the long-running parts (worker, scheduler, event watcher):
which errors mean "try again" (`RETRYABLE`), which mean "this row's data", and which no retry
can fix (`misconfigured`, from `pgtasq._driver_errors`, the one place psycopg's errors become
pgtasq's), how long to wait before trying (`Backoff`), the log lines of an outage
(`Outage`), running one statement on an async connection, and logging a recurring problem
once."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgtasq import _sql

# Re-exported: the loops import them from here with the rest of the boundary.
from pgtasq._driver_errors import RETRYABLE as RETRYABLE
from pgtasq._driver_errors import connect_misconfigured as connect_misconfigured
from pgtasq._driver_errors import misconfigured as misconfigured


class Outage:
    """The log lines of a database outage, one per change of state: a WARNING when the
    database is first found unavailable, an INFO when it answers again.

    Connections that were idle in a pool while the server restarted fail at their next use,
    just after the database is back: a failure within `RECOVERY_GRACE` seconds of a recovery
    is logged at DEBUG only and leaves the state alone; if the database is really gone
    again, the next failure after the grace says so.
    """

    RECOVERY_GRACE = 5.0

    def __init__(
        self, logger: logging.Logger, who: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logger
        self._who = who
        self._clock = clock
        self._back_at = -math.inf
        self.down = False

    def lost(self, exc: BaseException) -> None:
        if self.down:
            return
        if self._clock() - self._back_at < self.RECOVERY_GRACE:
            self._log.debug("%s: failed just after a recovery: %s", self._who, short_error(exc))
            return
        self.down = True
        self._log.warning("%s: database unavailable, retrying (%s)", self._who, short_error(exc))

    def back(self) -> None:
        if self.down:
            self.down = False
            self._back_at = self._clock()
            self._log.info("%s: database available again", self._who)


# SQLSTATE classes that blame the statement's data, not the database: data exception (22:
# an untranslatable character, a value out of range), integrity constraint violation (23),
# program limit exceeded (54: nesting too deep, a value too large). Trying the same data
# again fails the same way. psycopg maps class 54 to OperationalError, so test this first.
DATA_ERROR_CLASSES = frozenset({"22", "23", "54"})


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the data of a statement cannot be stored: the server refused it
    (`DATA_ERROR_CLASSES`), or psycopg could not send it (a lone surrogate, a NUL, a number
    out of range), which raises before anything reaches the server."""
    if isinstance(exc, psycopg.Error):
        if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)):
            return True
        sqlstate = exc.sqlstate
        return sqlstate is not None and sqlstate[:2] in DATA_ERROR_CLASSES
    return isinstance(exc, (UnicodeError, OverflowError))


class LogOnce:
    """Logs a recurring problem once: the first time for each key at ``level``, then at
    DEBUG. A background loop that meets the same bad row every round says so once."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._seen: set[str] = set()

    def __call__(self, key: str, level: int, msg: str, *args: Any) -> None:
        first = key not in self._seen
        if first:
            self._seen.add(key)
            if len(self._seen) > 10_000:  # bounded: a stream of new keys cannot grow it
                self._seen.clear()
        self._log.log(level if first else logging.DEBUG, msg, *args)


class Backoff:
    """Exponential backoff with jitter, from ``first`` up to ``cap`` seconds."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        delay = self.current
        self.current = min(self.cap, self.current * 2)
        return delay * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.current = self.first


async def fetch(
    conn: psycopg.AsyncConnection[Any], stmt: _sql.Statement, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run one of the worker's statements on an autocommit connection of its pool.

    The hot statements carry their own transaction-local `synchronous_commit = off`
    (`_sql.ASYNC_COMMIT`): no session state is left behind (PgBouncer in transaction mode)
    and no extra message is sent."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(stmt.text, params)
        return await cur.fetchall() if cur.description is not None else []


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
