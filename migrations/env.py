"""Alembic environment for pgtasq.

Run through `pgtasq migrate` / `pgtasq.migrate()`, or with the ``alembic`` command:
``alembic -c alembic.ini -x dsn=postgresql://… -x schema=NAME upgrade head`` (an ini
whose ``script_location`` is this folder). The schema name comes from (first found):
the Config attribute
``pgtasq_schema``, ``-x pgtasq_schema=…`` (or ``-x schema=…``), the ``PGTASQ_SCHEMA``
variable, then ``pgtasq``.
Alembic's version table lives inside that schema, so every schema migrates on its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from pgtasq import tables
from pgtasq._migrate import MIGRATE_LOCK_SQL, migration_schema, sqlalchemy_url

config = context.config
schema = migration_schema()
target_metadata = tables.metadata(schema)


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # Autogenerate compares our schema only.
    if type_ == "schema":
        return name == schema
    return True


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=tables.ALEMBIC_VERSION_TABLE,
        version_table_schema=schema,
        include_schemas=True,
        include_name=_include_name,
        **kwargs,  # type: ignore[arg-type]
    )


def run_offline() -> None:
    _configure(url="postgresql://", literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        # The plain `alembic` command: the URL comes from -x dsn=… or sqlalchemy.url.
        url = context.get_x_argument(as_dictionary=True).get("dsn") or config.get_main_option(
            "sqlalchemy.url"
        )
        if not url:
            raise SystemExit("no database: pass -x dsn=postgresql://… or set sqlalchemy.url")
        engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
        with engine.connect() as conn:
            _run_online(conn)
            conn.commit()
        engine.dispose()
    else:
        _run_online(connection)


def _run_online(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        # One migrator per schema at a time: workers starting together wait here.
        connection.execute(text(MIGRATE_LOCK_SQL), {"schema": schema})
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
