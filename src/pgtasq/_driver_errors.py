"""The one place psycopg's errors become pgtasq's: `translate`.

What the driver raises maps to the `pgtasq.errors` tree:

========================================================  ==========================================
psycopg raises                                            pgtasq raises
========================================================  ==========================================
UndefinedTable, UndefinedObject, InvalidSchemaName        DatabaseMisconfigured("not_migrated")
InsufficientPrivilege (42501)                             DatabaseMisconfigured("permission")
ReadOnlySqlTransaction (25006)                            DatabaseMisconfigured("read_only")
OperationalError without SQLSTATE, login refused          DatabaseMisconfigured("authentication",
(FATAL: password authentication failed, no pg_hba.conf    "database" or "permission")
entry, role or database does not exist, no password)
ProgrammingError without SQLSTATE while connecting        DatabaseMisconfigured("dsn")
OperationalError, InterfaceError, PoolTimeout             DatabaseUnavailable
UniqueViolation on tasks_unique_key_key (a Client retry)  UniqueKeyHeld
anything else (a bug, or the caller's own statement)      None: the caller re-raises it unchanged
========================================================  ==========================================

Every message has one shape, ``<what is wrong>: <what to do>``. What is wrong is what the
server said when that is clear enough (``password authentication failed for user "app"``),
otherwise pgtasq's sentence with the server's first line in parentheses (``schema "jobs" is
not migrated (relation "jobs.tasks" does not exist)``). No message holds a password: the
server's words pass through `pgtasq._dsn.redact`, and when connecting fails on the DSN itself
(whose text psycopg may quote) the message does not repeat it. Callers raise the result
``from`` the original, or ``from None`` where the original may quote the DSN.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import PoolTimeout

from pgtasq._dsn import redact
from pgtasq.errors import DatabaseMisconfigured, DatabaseUnavailable, PgtasqError, UniqueKeyHeld
from pgtasq.tables import SCHEMA_DEFAULT

# The unique keys' index (migration pgtasq_0005), and how the server names the key it refused.
UNIQUE_INDEX = "tasks_unique_key_key"
_UNIQUE_KEY_DETAIL = re.compile(r"Key \(unique_key\)=\((.*)\) already exists\.\Z", re.DOTALL)

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

UNAVAILABLE_FIX = "check that the server is running and that the DSN's host and port name it"


def said(exc: BaseException) -> str:
    """The first line of what the driver said, with any password blanked (the class name
    when it said nothing)."""
    text = str(exc).strip().splitlines()
    return redact(text[0]) if text else type(exc).__name__


def translate(
    exc: BaseException, schema: str = SCHEMA_DEFAULT, *, connecting: bool = False
) -> PgtasqError | None:
    """The pgtasq error that ``exc`` (raised by psycopg or psycopg_pool) means, or None when
    it is not one of ours to translate (see the module docstring's table).

    ``schema`` names the schema a fix should migrate or grant; ``connecting``: ``exc`` was
    raised by a connection attempt, where a ProgrammingError means the DSN cannot be parsed.
    A pgtasq error is returned as it is.
    """
    if isinstance(exc, PgtasqError):
        return exc
    if isinstance(exc, pg_errors.UniqueViolation) and exc.diag.constraint_name == UNIQUE_INDEX:
        # Only a Client retry can get here: every enqueue arbitrates unique keys (ON CONFLICT).
        key = _UNIQUE_KEY_DETAIL.match(exc.diag.message_detail or "")
        return UniqueKeyHeld(key.group(1) if key else None)
    found = misconfigured(exc, schema, connecting=connecting)
    if found is not None:
        return found
    if isinstance(exc, RETRYABLE):
        return unavailable(exc)
    return None


def call_error(exc: BaseException, schema: str, *, own: bool) -> PgtasqError | None:
    """What a Client or Producer call raises for ``exc``, met while it ran its statements
    (None: re-raise ``exc`` unchanged). ``own``: on pgtasq's own pool, where a lost server is
    `DatabaseUnavailable`; on the caller's connection (``conn=``) that stays the driver's
    error, which the caller's own code around its transaction expects. A schema that is not
    migrated, or not granted, or a read-only server is pgtasq's to say on either."""
    if not isinstance(exc, (psycopg.Error, PoolTimeout)):
        return None
    if not own and isinstance(exc, RETRYABLE) and not isinstance(exc, _NOT_MIGRATED):
        return misconfigured(exc, schema) if exc.sqlstate is not None else None
    return translate(exc, schema)


def unavailable(exc: BaseException, dsn: str | None = None) -> DatabaseUnavailable:
    """`DatabaseUnavailable` for a server that could not be reached (or went away). ``dsn``,
    without its password, says where, for errors that do not (a pool's timeout)."""
    where = f"{_without_password(dsn)}: " if dsn is not None else ""
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL ({where}{said(exc)}): {UNAVAILABLE_FIX}"
    )


def _without_password(dsn: str) -> str:
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid DSN>"
    info.pop("password", None)
    return redact(make_conninfo("", **info))


def misconfigured(
    exc: BaseException, schema: str, *, connecting: bool = False
) -> DatabaseMisconfigured | None:
    """The `DatabaseMisconfigured` that ``exc`` means, or None when it is not one of the
    errors no retry can fix."""
    if isinstance(exc, DatabaseMisconfigured):
        return exc
    if not isinstance(exc, psycopg.Error):
        return None
    if connecting and (dsn := connect_misconfigured(exc)) is not None:
        return dsn  # psycopg's text may quote the DSN, password included: not repeated
    if isinstance(exc, _NOT_MIGRATED):
        flag = "" if schema == SCHEMA_DEFAULT else f" --schema {schema}"
        return DatabaseMisconfigured(
            "not_migrated",
            f'schema "{schema}" is not migrated ({said(exc)}): run pgtasq{flag} migrate',
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return DatabaseMisconfigured(
            "permission",
            f'{said(exc)}: grant the role USAGE on schema "{schema}" and SELECT, INSERT, '
            "UPDATE, DELETE on its tables (or run as the role that ran pgtasq migrate)",
        )
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return DatabaseMisconfigured(
            "read_only",
            f"the server is read-only ({said(exc)}): point the DSN at the primary "
            "(with several hosts, add target_session_attrs=read-write)",
        )
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return _refusal(exc)
    return None


def connect_misconfigured(exc: BaseException) -> DatabaseMisconfigured | None:
    """The DSN cannot be parsed: the one error of a connection attempt that
    ``misconfigured(exc, schema, connecting=True)`` adds to what `misconfigured` finds."""
    if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None:
        return DatabaseMisconfigured("dsn", "the DSN cannot be parsed: check its syntax")
    return None


def _refusal(exc: psycopg.OperationalError) -> DatabaseMisconfigured | None:
    text = str(exc)
    if "no password supplied" in text:
        return DatabaseMisconfigured(
            "authentication",
            "the server asks for a password and none was given: add it to the DSN "
            "(or use PGPASSWORD or a .pgpass file)",
        )
    for line in reversed(_FATAL_LINE.findall(text)):
        for pattern, reason, fix in _REFUSED:
            if re.search(pattern, line.strip()):
                return DatabaseMisconfigured(reason, f"{redact(line.strip())}: {fix}")
    return None
