"""Fixtures shared by every layer: a real PostgreSQL, and a fresh pgtasq schema per test.

``PGTASQ_TEST_DSN`` points the suite at a server of yours; without it one embedded
PostgreSQL is started for the whole run (its data in a temporary folder).

Most tests only need a schema of their own as the migrations leave it, and running Alembic
for each costs more than the schema's DDL. So ``schema`` is a *clone*: the upgrade's SQL is
rendered once per session (Alembic's offline mode, `pgtasq.migration_sql`) and run with
each schema's name put in, several schemas per round trip and transaction (`clone_schemas`).
tests/integration/test_schema_clone.py checks that a clone's catalog equals a migrated
schema's. Tests of the migrations themselves use ``migrated_schema`` or ``fresh_schema``.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgtasq
from pgtasq import _embedded
from pgtasq.tables import check_schema_name


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    dsn = os.environ.get("PGTASQ_TEST_DSN")
    if dsn:
        yield dsn
        return
    server = _embedded.start(tmp_path_factory.mktemp("embedded-pg"))
    with server:
        yield str(server.get_uri())


def _drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _new_schema_name() -> str:
    return "t_" + uuid.uuid4().hex[:12]


@pytest.fixture
def fresh_schema(pg_dsn: str) -> Iterator[str]:
    """A unique schema name, not migrated, dropped after the test."""
    name = _new_schema_name()
    yield name
    _drop_schema(pg_dsn, name)


# The name the clone's SQL is rendered with, replaced by each clone's own. Valid as a schema
# name, and found nowhere else in the SQL (`_clone_sql` checks).
_TEMPLATE_NAME = "pgtasq_clone_template"
CLONE_BATCH = 8  # clones made together, in one transaction: one commit instead of eight


@functools.cache
def _clone_sql() -> str:
    """The SQL that upgrades an empty schema to the newest revision (Alembic's offline mode),
    for the schema named `_TEMPLATE_NAME`, without its BEGIN and COMMIT: rendered once."""
    sql = pgtasq.migration_sql(schema=_TEMPLATE_NAME)
    mentions = sql.count(_TEMPLATE_NAME)
    assert mentions == sql.count(f"{_TEMPLATE_NAME}.") + sql.count(f"{_TEMPLATE_NAME};"), (
        "the template's name is part of another identifier in the migration SQL"
    )
    lines = sql.strip().splitlines()
    assert (lines[0], lines[-1]) == ("BEGIN;", "COMMIT;"), "expected one transaction"
    return "\n".join(lines[1:-1]) + "\n"


def clone_schemas(conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
    """Create each schema of ``names`` as `pgtasq.migrate` would (tables, indexes,
    constraints, storage options, Alembic's version row), in one transaction and one round
    trip, on ``conn`` (in autocommit mode)."""
    script = "".join(_clone_sql().replace(_TEMPLATE_NAME, check_schema_name(n)) for n in names)
    # No parameters: the simple query protocol, so the whole script goes at once.
    conn.execute(f"BEGIN;\n{script}COMMIT;")


def clone_schema(dsn: str, name: str) -> None:
    """`clone_schemas` for one schema, on a connection of its own."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        clone_schemas(conn, [name])


class _Clones:
    """Schemas at the newest revision, cloned `CLONE_BATCH` at a time ahead of the tests
    that take them; the tests drop theirs, `close` drops those left."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._ready: list[str] = []

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._dsn, autocommit=True)
        return self._conn

    def take(self) -> str:
        if not self._ready:
            names = [_new_schema_name() for _ in range(CLONE_BATCH)]
            clone_schemas(self._connection(), names)
            self._ready = names
        return self._ready.pop()

    def drop(self, name: str) -> None:
        self._connection().execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")

    def close(self) -> None:
        if self._ready:
            self._connection().execute(
                "".join(f"DROP SCHEMA IF EXISTS {n} CASCADE;" for n in self._ready)
            )
            self._ready = []
        if self._conn is not None:
            self._conn.close()


@pytest.fixture(scope="session")
def _clones(pg_dsn: str) -> Iterator[_Clones]:
    clones = _Clones(pg_dsn)
    yield clones
    clones.close()


@pytest.fixture
def schema(_clones: _Clones) -> Iterator[str]:
    """A unique schema at the newest revision, the test's own pgtasq: a clone (see the
    module docstring), dropped after the test."""
    name = _clones.take()
    yield name
    _clones.drop(name)


@pytest.fixture
def migrated_schema(pg_dsn: str, fresh_schema: str) -> str:
    """Like ``schema``, made by running the migrations: for tests of the migrations."""
    pgtasq.migrate(pg_dsn, schema=fresh_schema)
    return fresh_schema


@pytest.fixture
def other_schema(_clones: _Clones) -> Iterator[str]:
    """A second schema at the newest revision (a clone), for isolation tests."""
    name = _clones.take()
    yield name
    _clones.drop(name)


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(pg_dsn) as c:
        yield c


def count_tasks(dsn: str, schema: str, **where: object) -> int:
    """Committed tasks in schema, seen from a new connection, optionally filtered by columns."""
    clause = " AND ".join(f"{column} = %s" for column in where) or "true"
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            f"SELECT count(*) FROM {schema}.tasks WHERE {clause}", list(where.values())
        ).fetchone()
    assert row is not None
    return int(row[0])


REPO = Path(__file__).resolve().parent.parent
