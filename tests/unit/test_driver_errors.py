"""The one translation of psycopg's errors into pgtasq's (`pgtasq._driver_errors`), as a
table: the driver's exception (class or SQLSTATE) -> the pgtasq error and its message."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from pgtasq import DatabaseMisconfigured, DatabaseUnavailable, PgtasqError
from pgtasq._driver_errors import UNAVAILABLE_FIX, said, translate, unavailable

FAILED = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: '


def by_sqlstate(sqlstate: str, text: str) -> psycopg.Error:
    """The exception psycopg raises for a server error with this SQLSTATE."""
    return pg_errors.lookup(sqlstate)(text)


TABLE: list[tuple[BaseException, type[PgtasqError] | None, str | None, str | None]] = [
    # (what psycopg raised, the pgtasq error, its reason, its whole message)
    (
        by_sqlstate("42P01", 'relation "jobs.tasks" does not exist'),
        DatabaseMisconfigured,
        "not_migrated",
        'schema "jobs" is not migrated (relation "jobs.tasks" does not exist): '
        "run pgtasq --schema jobs migrate",
    ),
    (
        by_sqlstate("3F000", 'schema "jobs" does not exist'),
        DatabaseMisconfigured,
        "not_migrated",
        'schema "jobs" is not migrated (schema "jobs" does not exist): '
        "run pgtasq --schema jobs migrate",
    ),
    (
        by_sqlstate("42704", 'type "jobs.task_status" does not exist'),
        DatabaseMisconfigured,
        "not_migrated",
        'schema "jobs" is not migrated (type "jobs.task_status" does not exist): '
        "run pgtasq --schema jobs migrate",
    ),
    (
        by_sqlstate("42501", "permission denied for table tasks"),
        DatabaseMisconfigured,
        "permission",
        'permission denied for table tasks: grant the role USAGE on schema "jobs" and SELECT, '
        "INSERT, UPDATE, DELETE on its tables (or run as the role that ran pgtasq migrate)",
    ),
    (
        by_sqlstate("25006", "cannot execute INSERT in a read-only transaction"),
        DatabaseMisconfigured,
        "read_only",
        "the server is read-only (cannot execute INSERT in a read-only transaction): point the "
        "DSN at the primary (with several hosts, add target_session_attrs=read-write)",
    ),
    (
        psycopg.OperationalError(FAILED + 'FATAL:  password authentication failed for user "a"'),
        DatabaseMisconfigured,
        "authentication",
        'password authentication failed for user "a": check the user and password in the DSN',
    ),
    (
        psycopg.OperationalError(FAILED + 'FATAL:  database "nodb" does not exist'),
        DatabaseMisconfigured,
        "database",
        'database "nodb" does not exist: create it, or fix its name in the DSN',
    ),
    (
        psycopg.OperationalError("fe_sendauth: no password supplied"),
        DatabaseMisconfigured,
        "authentication",
        "the server asks for a password and none was given: add it to the DSN "
        "(or use PGPASSWORD or a .pgpass file)",
    ),
    (
        psycopg.OperationalError(FAILED + "Connection refused\n\tIs the server running?"),
        DatabaseUnavailable,
        None,
        f"cannot connect to PostgreSQL ({FAILED}Connection refused): {UNAVAILABLE_FIX}",
    ),
    (
        psycopg.OperationalError(FAILED + "FATAL:  the database system is starting up"),
        DatabaseUnavailable,
        None,
        f"cannot connect to PostgreSQL ({FAILED}FATAL:  the database system is starting up): "
        f"{UNAVAILABLE_FIX}",
    ),
    (
        by_sqlstate("57P01", "terminating connection due to administrator command"),
        DatabaseUnavailable,
        None,
        "cannot connect to PostgreSQL (terminating connection due to administrator command): "
        f"{UNAVAILABLE_FIX}",
    ),
    (
        psycopg.InterfaceError("the connection is closed"),
        DatabaseUnavailable,
        None,
        f"cannot connect to PostgreSQL (the connection is closed): {UNAVAILABLE_FIX}",
    ),
    (
        PoolTimeout("couldn't get a connection after 30.00 sec"),
        DatabaseUnavailable,
        None,
        "cannot connect to PostgreSQL (couldn't get a connection after 30.00 sec): "
        f"{UNAVAILABLE_FIX}",
    ),
    # Not ours to translate: a bug in a statement, or the data of the caller's own statement.
    (by_sqlstate("42601", "syntax error at or near"), None, None, None),
    (by_sqlstate("23505", "duplicate key value violates unique constraint"), None, None, None),
    (by_sqlstate("22P02", "invalid input syntax for type bigint"), None, None, None),
    (by_sqlstate("25P02", "current transaction is aborted"), None, None, None),
    (psycopg.ProgrammingError("the query has 1 placeholder but 2 parameters"), None, None, None),
    (ValueError("not psycopg's"), None, None, None),
]


@pytest.mark.parametrize(("raised", "expected", "reason", "message"), TABLE)
def test_translate(
    raised: BaseException,
    expected: type[PgtasqError] | None,
    reason: str | None,
    message: str | None,
) -> None:
    found = translate(raised, "jobs")
    if expected is None:
        assert found is None
        return
    assert type(found) is expected
    assert str(found) == message
    if reason is not None:
        assert isinstance(found, DatabaseMisconfigured) and found.reason == reason


def test_the_default_schema_needs_no_flag() -> None:
    found = translate(by_sqlstate("42P01", 'relation "pgtasq.tasks" does not exist'))
    assert isinstance(found, DatabaseMisconfigured) and str(found).endswith(": run pgtasq migrate")


def test_a_dsn_that_cannot_be_parsed_is_misconfigured_only_while_connecting() -> None:
    exc = psycopg.ProgrammingError('missing "=" after "s3cret" in connection info string')
    found = translate(exc, connecting=True)
    assert isinstance(found, DatabaseMisconfigured) and found.reason == "dsn"
    assert str(found) == "the DSN cannot be parsed: check its syntax"
    assert translate(exc) is None  # running a statement: a bug of ours, left as it is


def test_a_pgtasq_error_passes_through() -> None:
    error = DatabaseUnavailable("x")
    assert translate(error) is error


@pytest.mark.parametrize(
    "text",
    [
        "connection to server failed: postgresql://app:s3cr3t-pw@db/app refused",
        "invalid connection option: password=s3cr3t-pw host=db",
    ],
)
def test_no_message_holds_a_password(text: str) -> None:
    for exc in (psycopg.OperationalError(text), PoolTimeout(text)):
        found = translate(exc)
        assert found is not None and "s3cr3t-pw" not in str(found)
        assert "s3cr3t-pw" not in said(exc)
    where = unavailable(PoolTimeout("timed out"), "postgresql://app:s3cr3t-pw@db:5433/app")
    assert "s3cr3t-pw" not in str(where) and "db" in str(where) and "5433" in str(where)
    refused = psycopg.OperationalError(
        FAILED + 'FATAL:  password authentication failed for user "s3cr3t-pw"'
    )
    from pgtasq._dsn import remember_secret

    remember_secret("s3cr3t-pw")
    assert "s3cr3t-pw" not in str(translate(refused))
