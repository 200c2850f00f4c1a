"""The database boundary of the long-running parts (worker, scheduler, event watcher):
which errors mean "try again", which mean "this row's data", and which no retry can fix
(`misconfigured`), how long to wait before trying (`Backoff`), the log lines of an outage
(`Outage`), running one statement on an async connection, and logging a recurring problem
once."""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from pgtasq import _sql
from pgtasq.errors import DatabaseMisconfigured
from pgtasq.tables import SCHEMA_DEFAULT

# The database is away (restart, failover, network, terminated backend): log, wait, retry.
# `misconfigured` is asked first: a wrong password is an OperationalError too.
RETRYABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)

_NOT_MIGRATED = (pg_errors.UndefinedTable, pg_errors.UndefinedObject, pg_errors.InvalidSchemaName)

# What the server says when it refuses a connection for good (libpq gives no SQLSTATE for
# these: the text is all there is), with the fix. Anything else is retried.
_REFUSED = (
    (r"authentication failed", "authentication", "check the user and password in the DSN"),
    (
        r"no pg_hba\.conf entry|pg_hba\.conf rejects",
        "authentication",
        "allow this client in the server's pg_hba.conf",
    ),
    (r"is not permitted to log in", "authentication", "use a role that may log in"),
    (r'^role ".*" does not exist', "authentication", "check the user in the DSN"),
    (r'^database ".*" does not exist', "database", "create it, or fix its name in the DSN"),
    (r"^permission denied for database", "permission", "grant the role CONNECT on it"),
)
_FATAL_LINE = re.compile(r"FATAL:\s+(.*)")


def _refusal(exc: psycopg.OperationalError) -> DatabaseMisconfigured | None:
    text = str(exc)
    if "no password supplied" in text:
        return DatabaseMisconfigured(
            "authentication",
            "the server asks for a password and none was given: add it to the DSN "
            "(or use PGPASSWORD or a .pgpass file)",
        )
    for said in reversed(_FATAL_LINE.findall(text)):
        for pattern, reason, fix in _REFUSED:
            if re.search(pattern, said.strip()):
                return DatabaseMisconfigured(reason, f"{said.strip()}: {fix}")
    return None


def misconfigured(exc: BaseException, schema: str) -> DatabaseMisconfigured | None:
    """The `DatabaseMisconfigured` that ``exc`` (raised by psycopg) means, or None when it is
    not one of the errors no retry can fix."""
    if isinstance(exc, DatabaseMisconfigured):
        return exc
    if not isinstance(exc, psycopg.Error):
        return None
    said = short_text(exc)
    if isinstance(exc, _NOT_MIGRATED):
        flag = "" if schema == SCHEMA_DEFAULT else f" --schema {schema}"
        return DatabaseMisconfigured(
            "not_migrated",
            f'schema "{schema}" is not migrated ({said}): run pgtasq{flag} migrate',
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return DatabaseMisconfigured(
            "permission",
            f'{said}: grant the role USAGE on schema "{schema}" and SELECT, INSERT, UPDATE, '
            "DELETE on its tables (or run as the role that ran pgtasq migrate)",
        )
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return DatabaseMisconfigured(
            "read_only",
            f"the server is read-only ({said}): point the DSN at the primary "
            "(with several hosts, add target_session_attrs=read-write)",
        )
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return _refusal(exc)
    return None


def connect_misconfigured(exc: BaseException) -> DatabaseMisconfigured | None:
    """A connection attempt that failed before reaching a server because of the DSN itself:
    psycopg raises ProgrammingError. Its text may quote the DSN, password included, so the
    message does not repeat it."""
    if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None:
        return DatabaseMisconfigured("dsn", "the DSN cannot be parsed: check its syntax")
    return None


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

    The statement and `_sql.worker_settings_local` go in one pipeline with one Sync: one
    round trip, one implicit transaction, so the setting applies to this statement's commit
    and ends with it. No session state is left behind (PgBouncer in transaction mode)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        async with conn.pipeline():
            await conn.execute(_sql.worker_settings_local.text)
            await cur.execute(stmt.text, params)
        return await cur.fetchall() if cur.description is not None else []


def short_text(exc: BaseException) -> str:
    """The first line of an error's message."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
