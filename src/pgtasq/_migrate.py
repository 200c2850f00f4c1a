"""Run pgtasq's Alembic migrations from Python: `migrate`, `downgrade`, `migration_sql`.

The migration scripts ship inside the wheel (``pgtasq/migrations``); in a source checkout
they are the top-level ``migrations/`` folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import psycopg

from pgtasq._driver_errors import translate
from pgtasq.errors import ConfigurationError
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name

if TYPE_CHECKING:
    # SQLAlchemy and Alembic are imported when a migration runs, not with pgtasq: workers
    # and producers never need them.
    import sqlalchemy as sa

SCHEMA_ATTRIBUTE = "pgtasq_schema"
# Alembic's `context` is one global per process: two migrations in threads would share it.
_ALEMBIC_LOCK = threading.RLock()
MIGRATE_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('pgtasq.migrate.' || :schema))"

Migratable = Union[str, "sa.Engine", "sa.Connection", psycopg.Connection[Any]]


def migrations_path() -> Path:
    """The folder holding ``env.py`` and ``versions/``: in the package, or in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError(f"pgtasq's migration scripts are missing (looked beside {here})")


def migration_schema() -> str:
    """The schema the running migration works on (see ``migrations/env.py``)."""
    from alembic import context

    config = context.config
    x_args = context.get_x_argument(as_dictionary=True)
    schema = (
        config.attributes.get(SCHEMA_ATTRIBUTE)
        or x_args.get("pgtasq_schema")
        or x_args.get("schema")
        or os.environ.get("PGTASQ_SCHEMA")
        or SCHEMA_DEFAULT
    )
    return check_schema_name(schema)


def _config(schema: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    cfg.attributes[SCHEMA_ATTRIBUTE] = check_schema_name(schema)
    return cfg


def sqlalchemy_url(dsn: str) -> str:
    """A libpq URL as SQLAlchemy wants it, with the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    raise ConfigurationError("expected a postgresql:// URL")


@contextlib.contextmanager
def _connection(target: Migratable) -> Iterator[sa.Connection]:
    """A SQLAlchemy connection on target; committed at the end unless the caller owns it."""
    import sqlalchemy as sa
    from sqlalchemy.pool import StaticPool

    if isinstance(target, sa.Connection):
        yield target
        return
    if isinstance(target, sa.Engine):
        with target.begin() as conn:
            yield conn
        return
    if isinstance(target, psycopg.Connection):
        # Borrow the caller's psycopg connection; never close it. SQLAlchemy's first
        # connect rolls back, and in autocommit every DDL would commit on its own: so the
        # connection must be idle, and runs the migration in one transaction of its own.
        borrowed = target
        if borrowed.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise ConfigurationError(
                "migrate() needs an idle psycopg connection: commit or roll back first"
            )
        autocommit = borrowed.autocommit
        borrowed.autocommit = False
        engine = sa.create_engine(
            "postgresql+psycopg://",
            creator=lambda: borrowed,
            poolclass=StaticPool,
            pool_reset_on_return=None,
        )
        try:
            with engine.connect() as conn:
                yield conn
                conn.commit()
        finally:
            if borrowed.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                borrowed.rollback()
            borrowed.autocommit = autocommit
        return
    if isinstance(target, str):
        dsn = target
        if "://" in dsn:
            engine = sa.create_engine(sqlalchemy_url(dsn), poolclass=sa.pool.NullPool)
        else:  # key=value libpq string
            engine = sa.create_engine(
                "postgresql+psycopg://",
                creator=lambda: psycopg.connect(dsn),
                poolclass=sa.pool.NullPool,
            )
        try:
            try:
                conn = engine.connect()
            except sa.exc.DBAPIError as exc:
                error = None if exc.orig is None else translate(exc.orig, connecting=True)
                if error is None:
                    raise
                raise error from None  # the driver's text may quote the DSN
            with conn, conn.begin():
                yield conn
        finally:
            engine.dispose()
        return
    raise TypeError(
        "migrate() takes a DSN string, a SQLAlchemy Engine or Connection, or a psycopg "
        f"Connection; got {type(target).__name__}"
    )


def migrate(target: Migratable, *, schema: str = SCHEMA_DEFAULT, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` (default: the newest). Safe to run concurrently."""
    from alembic import command

    cfg = _config(schema)
    with _ALEMBIC_LOCK, _connection(target) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(target: Migratable, *, schema: str = SCHEMA_DEFAULT, revision: str = "base") -> None:
    """Downgrade the schema to ``revision`` (default ``base``: drop every pgtasq table)."""
    from alembic import command

    cfg = _config(schema)
    with _ALEMBIC_LOCK, _connection(target) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def migration_sql(*, schema: str = SCHEMA_DEFAULT, revision: str = "head") -> str:
    """The SQL an upgrade from nothing to ``revision`` runs, for a DBA to review and apply."""
    from alembic import command

    cfg = _config(schema)
    buffer = io.StringIO()
    cfg.output_buffer = buffer
    with _ALEMBIC_LOCK:
        command.upgrade(cfg, revision, sql=True)
    return buffer.getvalue()


def current_revision(target: Migratable, *, schema: str = SCHEMA_DEFAULT) -> str | None:
    """The revision the schema is at, or None when pgtasq was never migrated there."""
    from alembic.runtime.migration import MigrationContext

    from pgtasq.tables import ALEMBIC_VERSION_TABLE

    with _connection(target) as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "version_table": ALEMBIC_VERSION_TABLE,
                "version_table_schema": check_schema_name(schema),
            },
        )
        return ctx.get_current_revision()
