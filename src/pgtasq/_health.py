"""Health checks: what ``pgtasq health`` and the ``/healthz`` endpoint ask the database.

`run_checks` runs the checks in order and stops at the first failure (a later check
cannot answer when the database does not). Each failure has its own exit code, so a
script or an orchestrator can tell them apart:

==========  ====  =========================================================
check       exit  fails when
==========  ====  =========================================================
database    3     no connection, or the server does not answer
schema      4     pgtasq's tables are missing or not at the newest revision
worker      5     no worker heartbeat within the given number of seconds
queue       6     the queue's oldest ready task waited longer than allowed
==========  ====  =========================================================

`HealthCheck` is the cached form the HTTP endpoints use: the database and schema checks,
run at most once per ``cache_seconds``.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgtasq import _sql
from pgtasq._cli_boundary import first_line  # printable, and redacted where it can be
from pgtasq._cli_output import printable
from pgtasq._driver_errors import translate

EXIT_DATABASE = 3
EXIT_SCHEMA = 4
EXIT_WORKER = 5
EXIT_QUEUE = 6
CONNECT_TIMEOUT_DEFAULT = 5.0
HEALTH_CACHE_SECONDS_DEFAULT = 5.0


@dataclasses.dataclass(frozen=True)
class Check:
    """One check's verdict; ``exit_code`` is what ``pgtasq health`` exits with if it failed."""

    name: str
    ok: bool
    detail: str
    exit_code: int

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@functools.lru_cache(maxsize=1)
def head_revisions() -> frozenset[str]:
    """The newest revision(s) of pgtasq's migrations, as shipped with this version."""
    from alembic.script import ScriptDirectory

    from pgtasq._migrate import migrations_path

    return frozenset(ScriptDirectory(str(migrations_path())).get_heads())


def run_checks(
    dsn: str,
    *,
    schema: str,
    worker_alive: float | None = None,
    queue: str | None = None,
    max_pending_age: float | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_DEFAULT,
) -> list[Check]:
    """The checks asked for, in order, up to and including the first that fails."""
    stmts = _sql.observe_statements(schema)
    checks: list[Check] = []
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, round(connect_timeout)))
    except psycopg.Error as exc:
        said = first_line(translate(exc, schema, connecting=True) or exc)
        return [Check("database", False, said, EXIT_DATABASE)]
    with conn:
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return [Check("database", False, f"no answer: {first_line(exc)}", EXIT_DATABASE)]
        checks.append(Check("database", True, "answers", EXIT_DATABASE))
        try:
            row = _one(conn, stmts.schema_version, {})
            version = None if row is None else row["version_num"]
        except psycopg.errors.UndefinedTable:
            version = None
        heads = head_revisions()
        if version not in heads:
            detail = (
                f"schema {schema} is not migrated (run `pgtasq migrate`)"
                if version is None
                else f"schema {schema} is at revision {version}, not at {', '.join(sorted(heads))} "
                "(run `pgtasq migrate`)"
            )
            checks.append(Check("schema", False, detail, EXIT_SCHEMA))
            return checks
        checks.append(Check("schema", True, f"schema {schema} at revision {version}", EXIT_SCHEMA))
        if worker_alive is not None:
            row = _one(conn, stmts.worker_heartbeat_age, {})
            age = None if row is None else row["age"]
            ok = age is not None and age <= worker_alive
            detail = (
                "no worker registered"
                if age is None
                else f"freshest worker heartbeat {age:.1f} s ago (limit {worker_alive:g} s)"
            )
            checks.append(Check("worker", ok, detail, EXIT_WORKER))
            if not ok:
                return checks
        if queue is not None and max_pending_age is not None:
            row = _one(conn, stmts.queue_oldest_ready_age, {"queue": queue})
            age = 0.0 if row is None else float(row["age"])
            ok = age <= max_pending_age
            detail = printable(
                f"queue {queue}: oldest ready task waited {age:.1f} s (limit {max_pending_age:g} s)"
            )
            checks.append(Check("queue", ok, detail, EXIT_QUEUE))
    return checks


def _one(
    conn: psycopg.Connection[Any], stmt: _sql.Statement, params: dict[str, Any]
) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(stmt.text, params)
        return cur.fetchone()


class HealthCheck:
    """The database and schema checks for ``/healthz``, cached for ``cache_seconds``.

    Calling it returns ``(ok, body)``; concurrent calls share one run of the checks.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        cache_seconds: float = HEALTH_CACHE_SECONDS_DEFAULT,
        connect_timeout: float = CONNECT_TIMEOUT_DEFAULT,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.cache_seconds = cache_seconds
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._result: tuple[bool, dict[str, Any]] = (False, {})

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            if time.monotonic() - self._at >= self.cache_seconds:
                checks = run_checks(
                    self.dsn, schema=self.schema, connect_timeout=self.connect_timeout
                )
                ok = all(c.ok for c in checks)
                self._result = (ok, {"ok": ok, "checks": [c.as_dict() for c in checks]})
                self._at = time.monotonic()
            return self._result
