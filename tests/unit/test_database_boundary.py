"""The long-running parts' database boundary without a database: which errors no retry can
fix (`misconfigured`), and the log lines of an outage (`Outage`)."""

from __future__ import annotations

import logging

import psycopg
import pytest
from psycopg import errors as pg_errors

from pgtasq._database import Outage, connect_misconfigured, misconfigured

REFUSED = 'connection failed: connection to server on socket "/tmp/.s.PGSQL.5432" failed: '


@pytest.mark.parametrize(
    ("said", "reason", "fix"),
    [
        ('password authentication failed for user "app"', "authentication", "password in the DSN"),
        ('role "nobody" does not exist', "authentication", "check the user in the DSN"),
        ('no pg_hba.conf entry for host "10.0.0.1", user "app"', "authentication", "pg_hba.conf"),
        ('role "app" is not permitted to log in', "authentication", "a role that may log in"),
        ('database "nodb" does not exist', "database", "create it, or fix its name"),
        ('permission denied for database "db"', "permission", "grant the role CONNECT"),
    ],
)
def test_a_refused_login_is_misconfigured(said: str, reason: str, fix: str) -> None:
    exc = psycopg.OperationalError(REFUSED + f"FATAL:  {said}")
    found = misconfigured(exc, "pgtasq")
    assert found is not None and found.reason == reason
    assert str(found).startswith(said + ": ") and fix in str(found)


def test_no_password_given_is_misconfigured() -> None:
    found = misconfigured(psycopg.OperationalError("fe_sendauth: no password supplied"), "s")
    assert found is not None and found.reason == "authentication"


@pytest.mark.parametrize(
    "text",
    [
        REFUSED + "No such file or directory\n\tIs the server running locally?",
        REFUSED + "Connection refused",
        REFUSED + "FATAL:  the database system is starting up",
        REFUSED + "FATAL:  sorry, too many clients already",
        REFUSED + "FATAL:  terminating connection due to administrator command",
        "server closed the connection unexpectedly",
    ],
)
def test_an_outage_is_not_misconfigured(text: str) -> None:
    assert misconfigured(psycopg.OperationalError(text), "pgtasq") is None


def test_statement_errors_name_the_fix() -> None:
    table = pg_errors.UndefinedTable('relation "jobs.tasks" does not exist')
    found = misconfigured(table, "jobs")
    assert found is not None and found.reason == "not_migrated"
    assert str(found) == (
        'schema "jobs" is not migrated (relation "jobs.tasks" does not exist): '
        "run pgtasq --schema jobs migrate"
    )
    found = misconfigured(pg_errors.InvalidSchemaName('schema "pgtasq" does not exist'), "pgtasq")
    assert found is not None and str(found).endswith(": run pgtasq migrate")
    privilege = pg_errors.InsufficientPrivilege("permission denied for table tasks")
    denied = misconfigured(privilege, "q")
    assert denied is not None and denied.reason == "permission" and 'schema "q"' in str(denied)
    read_only = misconfigured(
        pg_errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"), "q"
    )
    assert read_only is not None and read_only.reason == "read_only" and "primary" in str(read_only)
    assert misconfigured(pg_errors.SyntaxError("syntax error"), "q") is None  # a bug: not ours
    assert misconfigured(ValueError("x"), "q") is None


def test_an_unparsable_dsn_is_misconfigured_without_repeating_it() -> None:
    exc = psycopg.ProgrammingError('invalid percent-encoded token: "s3c%zzret"')
    found = connect_misconfigured(exc)
    assert found is not None and found.reason == "dsn" and "s3c" not in str(found)
    assert connect_misconfigured(psycopg.OperationalError("refused")) is None


def test_an_outage_is_two_lines_whatever_fails_meanwhile(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outage = Outage(logging.getLogger("test.outage"), "worker", clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, "test.outage")
    outage.back()  # up from the start: nothing to say
    for _ in range(5):
        outage.lost(psycopg.OperationalError("connection refused"))
    outage.back()
    outage.back()
    now[0] += 1
    outage.lost(psycopg.OperationalError("stale connection"))  # just after: DEBUG only
    assert not outage.down
    now[0] += Outage.RECOVERY_GRACE
    outage.lost(psycopg.OperationalError("gone again"))
    outage.back()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    unavailable = "worker: database unavailable, retrying (OperationalError: {})"
    assert lines == [
        ("WARNING", unavailable.format("connection refused")),
        ("INFO", "worker: database available again"),
        ("DEBUG", "worker: failed just after a recovery: OperationalError: stale connection"),
        ("WARNING", unavailable.format("gone again")),
        ("INFO", "worker: database available again"),
    ]
