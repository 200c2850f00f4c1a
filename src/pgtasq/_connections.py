"""Run a `Statement` on whatever connection the caller hands us, without committing.

Accepted: psycopg ``Connection`` / ``AsyncConnection``; SQLAlchemy ``Connection`` /
``Session`` and ``AsyncConnection`` / ``AsyncSession`` (any PostgreSQL driver SQLAlchemy
supports: psycopg, psycopg2, asyncpg). SQLAlchemy connections run the statement through
SQLAlchemy itself, so it joins the session's transaction exactly as the user's own queries do.
Django's connection (``django.db.connection``, ``connections[alias]``) on psycopg 3: see
`pgtasq._django_connections`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, Union

import psycopg
from psycopg.rows import dict_row

from pgtasq._django_connections import DjangoRunner, is_django_connection
from pgtasq._sql import Statement

if TYPE_CHECKING:  # SQLAlchemy loads only when the caller hands us one of its connections
    import sqlalchemy
    import sqlalchemy.ext.asyncio
    import sqlalchemy.orm

Row = Mapping[str, Any]
Params = Mapping[str, Any]

# What ``conn=`` accepts: a connection of the caller's whose transaction we join.
# Django's connection is accepted too (`pgtasq._django_connections`): Django has no types of
# its own, so it needs no place here.
SyncConn: TypeAlias = Union[
    "psycopg.Connection[Any]",
    "sqlalchemy.Connection",
    "sqlalchemy.orm.Session",
    "sqlalchemy.orm.scoped_session[Any]",
]
AsyncConn: TypeAlias = Union[
    "psycopg.AsyncConnection[Any]",
    "sqlalchemy.ext.asyncio.AsyncConnection",
    "sqlalchemy.ext.asyncio.AsyncSession",
]


class SyncRunner(Protocol):
    def fetch(self, stmt: Statement, params: Params) -> Sequence[Row]: ...

    def savepoint(self) -> contextlib.AbstractContextManager[Any]: ...


class AsyncRunner(Protocol):
    async def fetch(self, stmt: Statement, params: Params) -> Sequence[Row]: ...

    def savepoint(self) -> contextlib.AbstractAsyncContextManager[Any]: ...


class _PsycopgRunner:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def fetch(self, stmt: Statement, params: Params) -> Sequence[Row]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(stmt.text, params)
            return cur.fetchall() if cur.description is not None else []

    def savepoint(self) -> contextlib.AbstractContextManager[Any]:
        return self.conn.transaction()


class _AsyncPsycopgRunner:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def fetch(self, stmt: Statement, params: Params) -> Sequence[Row]:
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(stmt.text, params)
            return await cur.fetchall() if cur.description is not None else []

    def savepoint(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.conn.transaction()


class _SQLAlchemyRunner:
    """A SQLAlchemy ``Connection`` or ORM ``Session``: both have execute() and begin_nested()."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def fetch(self, stmt: Statement, params: Params) -> Sequence[Row]:
        result = self.conn.execute(stmt.sqlalchemy, dict(params))
        return result.mappings().all() if result.returns_rows else []

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.conn.begin_nested():
            yield


class _AsyncSQLAlchemyRunner:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def fetch(self, stmt: Statement, params: Params) -> Sequence[Row]:
        result = await self.conn.execute(stmt.sqlalchemy, dict(params))
        return result.mappings().all() if result.returns_rows else []

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        async with self.conn.begin_nested():
            yield


_ACCEPTED = (
    "a psycopg Connection or AsyncConnection, a SQLAlchemy Connection, Session, "
    "AsyncConnection or AsyncSession, or Django's connection"
)


def _is_async_sqlalchemy(conn: object) -> bool:
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return False
    return isinstance(conn, (AsyncConnection, AsyncSession))


def _is_sync_sqlalchemy(conn: object) -> bool:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    return isinstance(conn, (Connection, Session))


def _scoped_session(conn: object) -> object:
    """The current Session of a SQLAlchemy ``scoped_session`` (Flask-SQLAlchemy's
    ``db.session``); anything else as it is."""
    orm = sys.modules.get("sqlalchemy.orm")  # not loaded: conn cannot be one
    if orm is not None and isinstance(conn, orm.scoped_session):
        return conn()
    return conn


def sync_runner(conn: object) -> SyncRunner:
    """The runner for a caller's synchronous connection, or a clear TypeError."""
    if isinstance(conn, psycopg.Connection):
        return _PsycopgRunner(conn)
    conn = _scoped_session(conn)
    if _is_sync_sqlalchemy(conn):
        return _SQLAlchemyRunner(conn)
    if is_django_connection(conn):
        return DjangoRunner(conn)
    if isinstance(conn, psycopg.AsyncConnection) or _is_async_sqlalchemy(conn):
        raise TypeError(
            f"{type(conn).__name__} is asynchronous: use AsyncProducer (or AsyncClient) with it"
        )
    raise TypeError(f"conn must be {_ACCEPTED}; got {type(conn).__module__}.{type(conn).__name__}")


def async_runner(conn: object) -> AsyncRunner:
    """The runner for a caller's asynchronous connection, or a clear TypeError."""
    if isinstance(conn, psycopg.AsyncConnection):
        return _AsyncPsycopgRunner(conn)
    if _is_async_sqlalchemy(conn):
        return _AsyncSQLAlchemyRunner(conn)
    if is_django_connection(conn):
        raise TypeError(
            "Django's connection is synchronous: use Producer (or Client) with it, "
            "from async code through asgiref's sync_to_async"
        )
    if isinstance(conn, psycopg.Connection) or _is_sync_sqlalchemy(conn):
        raise TypeError(f"{type(conn).__name__} is synchronous: use Producer (or Client) with it")
    raise TypeError(f"conn must be {_ACCEPTED}; got {type(conn).__module__}.{type(conn).__name__}")
