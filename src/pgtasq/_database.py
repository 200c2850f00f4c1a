"""The worker's side of the database boundary: which errors mean "try again" and which
mean "this row's data", how long to wait before trying, running one statement on an async
connection, and logging a recurring problem once."""

from __future__ import annotations

import logging
import random
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from pgtasq import _sql

# The database is away (restart, failover, network, terminated backend): log, wait, retry.
RETRYABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)

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

    The statement and `_sql.worker_settings_local` go in one pipeline with one Sync: one
    round trip, one implicit transaction, so the setting applies to this statement's commit
    and ends with it. No session state is left behind (PgBouncer in transaction mode)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        async with conn.pipeline():
            await conn.execute(_sql.worker_settings_local.text)
            await cur.execute(stmt.text, params)
        return await cur.fetchall() if cur.description is not None else []


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
