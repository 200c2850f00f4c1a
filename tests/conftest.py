"""Fixtures shared by every layer: a real PostgreSQL, and a fresh pgtasq schema per test.

``PGTASQ_TEST_DSN`` points the suite at a server of yours; without it one embedded
PostgreSQL is started for the whole run (its data in a temporary folder).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgtasq
from pgtasq import _embedded


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


@pytest.fixture
def fresh_schema(pg_dsn: str) -> Iterator[str]:
    """A unique schema name, not migrated, dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    _drop_schema(pg_dsn, name)


@pytest.fixture
def schema(pg_dsn: str, fresh_schema: str) -> str:
    """A unique, migrated schema: the test's own pgtasq."""
    pgtasq.migrate(pg_dsn, schema=fresh_schema)
    return fresh_schema


@pytest.fixture
def other_schema(pg_dsn: str) -> Iterator[str]:
    """A second migrated schema, for isolation tests."""
    name = "t_" + uuid.uuid4().hex[:12]
    pgtasq.migrate(pg_dsn, schema=name)
    yield name
    _drop_schema(pg_dsn, name)


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
