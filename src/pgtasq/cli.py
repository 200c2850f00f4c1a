"""The ``pgtasq`` command: a thin shell over the library, with no logic of its own.

Every option is also an environment variable (shown in ``--help``). Without a DSN the
commands start an embedded PostgreSQL with its data in the project's ``.pgtasq/`` (see
`pgtasq._embedded.find_home`); ``pgtasq dev`` shows and stops it.

Exit codes: 0 success, 1 operation failed (the message says why), 2 bad usage, 78 a
configuration error no retry can fix (a wrong password, a schema not migrated, a missing
privilege, a read-only server; `pgtasq worker --processes N` does not restart into it).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pgtasq import (
    _cli_admin,
    _cli_dev,
    _cli_observe,
    _cli_run,
    _cli_web,
    _dsn,
    _embedded,
    _logs,
    _migrate,
)
from pgtasq import demo as _demo
from pgtasq._cli_boundary import F, command_errors, fail
from pgtasq._cli_output import printable
from pgtasq._dsn import redact
from pgtasq.errors import ConfigurationError
from pgtasq.models import TaskInfo
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name


@dataclass
class _Settings:
    dsn: str | None
    schema: str
    data_dir: str | None
    schema_given: bool = False
    log_level: str = _logs.LOG_LEVEL_DEFAULT
    log_format: str = _logs.LOG_FORMAT_DEFAULT

    def setup_logging(self) -> None:
        _logs.setup(self.log_level, self.log_format)

    def home(self) -> Path:
        """Where the embedded server keeps its data: --data-dir, else the project's."""
        return _embedded.find_home() if self.data_dir is None else Path(self.data_dir).resolve()

    @contextlib.contextmanager
    def database(self, *, quiet: bool = False) -> Iterator[str]:
        """The DSN to use: the given one, or the embedded server's (started for this command)."""
        if self.dsn:
            yield self.dsn
            return
        home = self.home()
        if not quiet:
            click.echo(f"No DSN given: using the embedded PostgreSQL in {home}/", err=True)
        server = _embedded.start(home)
        with server:
            yield str(server.get_uri())


# -- the global options: before the command or after it ------------------------------------
#
# `--dsn`, `--schema`, `--data-dir`, `--log-level` and `--log-format` are options of the
# ``cli`` group (with their environment variables), and are also added to every command
# and subcommand (`_add_global_options`), so ``pgtasq migrate --dsn URL`` works as well as
# ``pgtasq --dsn URL migrate``. Given after the command, a value overrides the one before.


def _checked_dsn(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return _dsn.normalize(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


_GLOBAL_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--dsn", {"help": "PostgreSQL URL or libpq string; none: embedded server."}),
    ("--schema", {"default": SCHEMA_DEFAULT, "help": "Schema holding pgtasq's tables."}),
    (
        "--data-dir",
        {
            "envvar": ["PGTASQ_HOME", "PGTASQ_DATA_DIR"],
            "default": None,
            "help": "Where the embedded server keeps its data [default: the nearest .pgtasq/ "
            "folder here or above, else .pgtasq/ at the project root (pyproject.toml, .git), "
            "else here].",
        },
    ),
    (
        "--log-level",
        {
            "default": _logs.LOG_LEVEL_DEFAULT,
            "type": click.Choice(_logs.LOG_LEVELS, case_sensitive=False),
            "help": "Log this level and above (worker, scheduler).",
        },
    ),
    (
        "--log-format",
        {
            "default": _logs.LOG_FORMAT_DEFAULT,
            "type": click.Choice(_logs.LOG_FORMATS, case_sensitive=False),
            "help": "Log lines as text, or as one JSON object per line.",
        },
    ),
)


def _envvar(flag: str) -> str:
    return "PGTASQ_" + flag.lstrip("-").replace("-", "_").upper()


def _group_options(f: F) -> F:
    for flag, spec in reversed(_GLOBAL_OPTIONS):
        f = click.option(flag, **{"envvar": _envvar(flag), "show_envvar": True, **spec})(f)
    return f


def _override(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given after the command: it overrides the group's value."""
    if value is None or param.name is None:
        return
    settings = ctx.find_object(_Settings)
    if settings is None:  # pragma: no cover - every command runs under the cli group
        return
    if param.name == "dsn":
        value = _checked_dsn(value)
    elif param.name == "schema":
        try:
            check_schema_name(value)
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc)) from None
        settings.schema_given = True
    elif param.name in ("log_level", "log_format"):
        value = value.upper() if param.name == "log_level" else value.lower()
    setattr(settings, param.name, value)


def _add_global_options(group: click.Group) -> None:
    """Add the global options to every command under ``group``, recursively."""
    for command in group.commands.values():
        taken = {opt for param in command.params for opt in param.opts}
        for flag, spec in _GLOBAL_OPTIONS:
            if flag in taken:
                continue
            command.params.append(
                click.Option(
                    [flag],
                    type=spec.get("type"),
                    help=spec["help"] + " (Also before the command.)",
                    expose_value=False,
                    callback=_override,
                    is_eager=True,  # set before the other options' callbacks read them
                )
            )
        if isinstance(command, click.Group):
            _add_global_options(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@_group_options
@click.version_option(package_name="pgtasq")
@click.pass_context
def cli(
    ctx: click.Context,
    dsn: str | None,
    schema: str,
    data_dir: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """pgtasq: a PostgreSQL task queue.

    The options above are also accepted after the command (pgtasq migrate --dsn URL).
    Shell completion: eval "$(_PGTASQ_COMPLETE=bash_source pgtasq)" (zsh_source, fish_source).
    """
    given = ctx.get_parameter_source("schema") != click.core.ParameterSource.DEFAULT
    with command_errors():
        check_schema_name(schema)  # every command's: one error line, before anything runs
    ctx.obj = _Settings(
        dsn=_checked_dsn(dsn),
        schema=schema,
        data_dir=data_dir,
        schema_given=given,
        log_level=log_level.upper(),
        log_format=log_format.lower(),
    )


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
    help="Downgrade to this revision instead ('base' drops pgtasq's tables; the schema stays).",
)
@click.pass_obj
def migrate(settings: _Settings, as_sql: bool, revision: str, downgrade_to: str | None) -> None:
    """Create or upgrade pgtasq's tables (Alembic migrations)."""
    with command_errors(), _alembiccommand_errors():
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


@contextlib.contextmanager
def _alembiccommand_errors() -> Iterator[None]:
    """Alembic's own errors (an unknown revision, …) as one line, exit 1."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        fail(str(exc))


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
    """Show the main job end to end: migrate, enqueue in a transaction, roll one back,
    run a worker, print what happened."""
    with command_errors(), settings.database() as dsn:
        if not _demo.run(dsn, settings.schema, count, click.echo):
            fail("the demo did not see what it expected")


for _command in (*_cli_run.COMMANDS, *_cli_admin.COMMANDS, *_cli_observe.COMMANDS):
    cli.add_command(_command)
cli.add_command(_cli_dev.dev)
cli.add_command(_cli_web.web)


_add_global_options(cli)


def main() -> None:
    """The ``pgtasq`` command: click's errors as one ``error:`` line (exit 2), Ctrl-C
    before a command handles it as a quiet exit 130."""
    try:
        code = cli.main(prog_name="pgtasq", standalone_mode=False)
    except click.UsageError as exc:
        where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        click.echo(f"error: {printable(redact(exc.format_message()))}{where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {printable(redact(exc.format_message()))}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
