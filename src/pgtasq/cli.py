"""The ``pgtasq`` command: a thin shell over the library, with no logic of its own.

Every option is also an environment variable (shown in ``--help``). Without a DSN the
commands start an embedded PostgreSQL with its data in ``./.pgtasq/``.

Exit codes: 0 success, 1 operation failed (the message says why), 2 bad usage.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click
import psycopg

from pgtasq import _embedded, _migrate, _sql
from pgtasq._connections import sync_runner
from pgtasq.errors import PgtasqError
from pgtasq.models import Task, TaskInfo
from pgtasq.producer import Producer
from pgtasq.tables import SCHEMA_DEFAULT


@dataclass
class _Settings:
    dsn: str | None
    schema: str
    data_dir: str

    @contextlib.contextmanager
    def database(self, *, quiet: bool = False) -> Iterator[str]:
        """The DSN to use: the given one, or the embedded server's (started for this command)."""
        if self.dsn:
            yield self.dsn
            return
        if not quiet:
            click.echo(f"No DSN given: using the embedded PostgreSQL in {self.data_dir}/", err=True)
        server = _embedded.start(self.data_dir)
        with server:
            yield str(server.get_uri())


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """One line on stderr and exit 1 for the errors a user can act on."""
    try:
        yield
    except (PgtasqError, psycopg.OperationalError) as exc:
        _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--dsn",
    envvar="PGTASQ_DSN",
    show_envvar=True,
    help="PostgreSQL URL or libpq string; none: embedded server.",
)
@click.option(
    "--schema",
    envvar="PGTASQ_SCHEMA",
    show_envvar=True,
    default=SCHEMA_DEFAULT,
    help="Schema holding pgtasq's tables.",
)
@click.option(
    "--data-dir",
    envvar="PGTASQ_DATA_DIR",
    show_envvar=True,
    default=str(_embedded.DATA_DIR_DEFAULT),
    help="Where the embedded server keeps its data.",
)
@click.version_option(package_name="pgtasq")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, schema: str, data_dir: str) -> None:
    """pgtasq: a PostgreSQL task queue."""
    ctx.obj = _Settings(dsn=dsn, schema=schema, data_dir=data_dir)


@cli.command()
@click.option(
    "--sql",
    "as_sql",
    is_flag=True,
    envvar="PGTASQ_MIGRATE_SQL",
    show_envvar=True,
    help="Print the SQL instead of running it.",
)
@click.option(
    "--revision",
    default="head",
    envvar="PGTASQ_MIGRATE_REVISION",
    show_envvar=True,
    help="Target revision for upgrade.",
)
@click.option(
    "--downgrade",
    "downgrade_to",
    default=None,
    envvar="PGTASQ_MIGRATE_DOWNGRADE",
    show_envvar=True,
    help="Downgrade to this revision instead ('base' removes pgtasq).",
)
@click.pass_obj
def migrate(settings: _Settings, as_sql: bool, revision: str, downgrade_to: str | None) -> None:
    """Create or upgrade pgtasq's tables (Alembic migrations)."""
    with _errors():
        if as_sql:
            if downgrade_to:
                raise click.UsageError("--sql prints the upgrade only")
            click.echo(_migrate.migration_sql(schema=settings.schema, revision=revision), nl=False)
            return
        with settings.database() as dsn:
            if downgrade_to:
                _migrate.downgrade(dsn, schema=settings.schema, revision=downgrade_to)
            else:
                _migrate.migrate(dsn, schema=settings.schema, revision=revision)
            current = _migrate.current_revision(dsn, schema=settings.schema)
        click.echo(f"schema {settings.schema}: at revision {current or 'base (no pgtasq tables)'}")


def _show(infos: list[TaskInfo]) -> None:
    for info in infos:
        click.echo(
            f"  #{info.id:<6} {info.type:<14} {info.status.value:<10} {json.dumps(info.payload)}"
        )


@cli.command()
@click.option(
    "--tasks",
    "count",
    default=5,
    type=click.IntRange(1, 10_000),
    envvar="PGTASQ_DEMO_TASKS",
    show_envvar=True,
    help="How many tasks to enqueue.",
)
@click.pass_obj
def demo(settings: _Settings, count: int) -> None:
    """Show the main job end to end: migrate, enqueue in a transaction, roll one back."""
    with _errors(), settings.database() as dsn:
        click.echo("1. Migrating …")
        _migrate.migrate(dsn, schema=settings.schema)
        click.echo(
            f"   schema {settings.schema} at revision "
            f"{_migrate.current_revision(dsn, schema=settings.schema)}"
        )
        stmts = _sql.statements(settings.schema)
        producer = Producer(schema=settings.schema)
        with psycopg.connect(dsn) as conn:
            click.echo(f"2. Enqueueing {count} tasks inside one transaction, then COMMIT …")
            with conn.transaction():
                infos = producer.enqueue_many(
                    [Task("demo.greet", {"n": i, "name": f"user{i}"}) for i in range(count)],
                    conn=conn,
                )
            ids = [info.id for info in infos]
            click.echo(f"   committed: {len(ids)} tasks exist now")

            click.echo("3. Enqueueing one task, then ROLLBACK …")
            rolled: Any = None
            with contextlib.suppress(_Rollback), conn.transaction():
                rolled = producer.enqueue("demo.never", {"why": "rolled back"}, conn=conn)
                raise _Rollback
            click.echo(f"   task #{rolled.id} was rolled back with its transaction")

            runner = sync_runner(conn)
            rows = runner.fetch(stmts.task_select_many, {"ids": [*ids, rolled.id]})
            found = [TaskInfo.from_row(r) for r in rows]
            click.echo("4. What the table holds for those ids:")
            _show(found)
            gone = rolled.id not in {i.id for i in found}
            click.echo(f"   rolled-back task #{rolled.id} present: {'no' if gone else 'YES (bug)'}")
            counts = {r["status"]: r["count"] for r in runner.fetch(stmts.task_count_by_status, {})}
        click.echo(
            "Summary: "
            + ", ".join(f"{status} {n}" for status, n in counts.items())
            + f" (all tasks in schema {settings.schema})"
        )
        click.echo("Workers that run these tasks arrive with the consumer (see docs/).")
        if not gone or len(found) != count:
            _fail("the demo did not see what it expected")


class _Rollback(Exception):
    """Raised inside a transaction block to roll it back."""


def main() -> None:
    cli(prog_name="pgtasq")


if __name__ == "__main__":
    main()
