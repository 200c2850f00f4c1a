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
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import psycopg

from pgtasq import (
    _cli_admin,
    _cli_boundary,
    _cli_dev,
    _cli_observe,
    _cli_web,
    _dsn,
    _embedded,
    _logs,
    _migrate,
    _supervisor,
)
from pgtasq import demo as _demo
from pgtasq._cli_boundary import EXIT_MISCONFIGURED, F, first_line
from pgtasq._cli_output import printable
from pgtasq._dsn import redact
from pgtasq._teardown import TEARDOWN_MARGIN
from pgtasq.consumer import Consumer
from pgtasq.errors import ConfigurationError, DatabaseMisconfigured, PgtasqError
from pgtasq.models import TaskInfo
from pgtasq.scheduler import Scheduler
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


def _fail(message: str) -> None:
    click.echo(f"error: {printable(redact(message))}", err=True)
    sys.exit(1)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """One line on stderr and exit 1 for the errors a user can act on; exit 78
    (`EXIT_MISCONFIGURED`) for those no retry can fix."""
    try:
        yield
    except DatabaseMisconfigured as exc:
        click.echo(f"error: {printable(redact(str(exc)))}", err=True)
        sys.exit(EXIT_MISCONFIGURED)
    except (PgtasqError, psycopg.OperationalError) as exc:
        _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


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
    with _errors():
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
    with _errors(), _alembic_errors():
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
def _alembic_errors() -> Iterator[None]:
    """Alembic's own errors (an unknown revision, …) as one line, exit 1."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        _fail(str(exc))


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
    with _errors(), settings.database() as dsn:
        if not _demo.run(dsn, settings.schema, count, click.echo):
            _fail("the demo did not see what it expected")


def _load_consumer(path: str) -> Consumer:
    """``module:attribute`` -> the Consumer it names (the current folder is importable)."""
    consumer = _load(path)
    if not isinstance(consumer, Consumer):
        raise click.BadParameter(f"{path} is not a pgtasq Consumer (got {type(consumer).__name__})")
    return consumer


def _load_scheduler(path: str) -> Scheduler:
    scheduler = _load(path)
    if not isinstance(scheduler, Scheduler):
        raise click.BadParameter(
            f"{path} is not a pgtasq Scheduler (got {type(scheduler).__name__})"
        )
    return scheduler


def _load(path: str) -> object:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise click.BadParameter("expected module:attribute, e.g. myapp.tasks:consumer")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    except PgtasqError:
        raise  # an invalid cron, queue, setting…: one line (`_errors`)
    except Exception as exc:
        logging.getLogger("pgtasq.cli").debug("importing %s failed", module_name, exc_info=True)
        raise click.ClickException(
            f"importing {module_name!r} raised {type(exc).__name__}: {first_line(exc)} "
            "(--log-level DEBUG shows the traceback)"
        ) from exc
    return getattr(module, attr, None)


_prepare_option = click.option(
    "--prepare/--no-prepare",
    default=True,
    envvar="PGTASQ_PREPARE",
    show_envvar=True,
    help="Server-side prepared statements; --no-prepare for PgBouncer before 1.21 "
    "(or without max_prepared_statements).",
)


@cli.command()
@click.argument("app", envvar="PGTASQ_SCHEDULER_APP")
@_prepare_option
@click.pass_obj
def scheduler(settings: _Settings, app: str, prepare: bool) -> None:
    """Run the cron entries of APP (module:scheduler) until SIGINT/SIGTERM.

    Run as many as you like: each tick of each entry is enqueued once.
    """
    settings.setup_logging()
    with _errors():
        sched = _load_scheduler(app)
    with _errors(), settings.database(quiet=True) as dsn:
        sched.bind(dsn, schema=settings.schema if settings.schema_given else None, prepare=prepare)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: sched.stop(timeout=0))
        sched.run()
        sched.close()


@cli.command()
@click.argument("app", envvar="PGTASQ_APP")
@click.option(
    "--processes",
    default=1,
    type=click.IntRange(1, 256),
    envvar="PGTASQ_PROCESSES",
    show_envvar=True,
    help="Worker processes (a dead one is restarted).",
)
@click.option(
    "--concurrency",
    type=int,
    envvar="PGTASQ_CONCURRENCY",
    show_envvar=True,
    help="Tasks run at once per process, 1 to 10000 [default: the consumer's].",
)
@click.option(
    "--batch-size",
    type=int,
    envvar="PGTASQ_BATCH_SIZE",
    show_envvar=True,
    help="Most tasks claimed by one statement, 1 to 10000 [default: the consumer's].",
)
@click.option(
    "--queues",
    envvar="PGTASQ_QUEUES",
    show_envvar=True,
    help="Queues and weights, e.g. critical=6,default=3,low=1 [default: the consumer's].",
)
@click.option(
    "--strict/--weighted",
    default=None,
    envvar="PGTASQ_STRICT",
    show_envvar=True,
    help="Strict priority between queues instead of weighted.",
)
@click.option(
    "--lease",
    type=float,
    envvar="PGTASQ_LEASE",
    show_envvar=True,
    help="Seconds a dead worker's tasks wait before they run elsewhere, >= 1 "
    "[default: the consumer's].",
)
@click.option(
    "--heartbeat-interval",
    type=float,
    envvar="PGTASQ_HEARTBEAT_INTERVAL",
    show_envvar=True,
    help="Seconds between heartbeats, under half the lease [default: the consumer's, "
    "else lease / 6, at most 1].",
)
@click.option(
    "--rescue-interval",
    type=float,
    envvar="PGTASQ_RESCUE_INTERVAL",
    show_envvar=True,
    help="Seconds between rescues of expired leases [default: the consumer's, "
    "else lease / 4, at most 1].",
)
@click.option(
    "--shutdown-timeout",
    type=float,
    envvar="PGTASQ_SHUTDOWN_TIMEOUT",
    show_envvar=True,
    help="Seconds running tasks get to finish after a signal, >= 0 [default: the consumer's].",
)
@click.option(
    "--burst",
    is_flag=True,
    envvar="PGTASQ_BURST",
    show_envvar=True,
    help="Run the ready tasks, then exit.",
)
@click.option(
    "--scheduler",
    "scheduler_app",
    envvar="PGTASQ_SCHEDULER_APP",
    show_envvar=True,
    help="Also run this module:scheduler's cron entries in the worker process.",
)
@click.option(
    "--listen-dsn",
    envvar="PGTASQ_LISTEN_DSN",
    show_envvar=True,
    help="A direct connection (not through PgBouncer) for LISTEN [default: --dsn; through a "
    "transaction-mode PgBouncer the worker then polls].",
)
@_prepare_option
@_cli_observe.metrics_port_options
@click.option("--metrics-child", is_flag=True, hidden=True)  # a child of --processes N
@click.pass_obj
def worker(
    settings: _Settings,
    app: str,
    processes: int,
    concurrency: int | None,
    batch_size: int | None,
    queues: str | None,
    strict: bool | None,
    lease: float | None,
    heartbeat_interval: float | None,
    rescue_interval: float | None,
    shutdown_timeout: float | None,
    burst: bool,
    scheduler_app: str | None,
    listen_dsn: str | None,
    prepare: bool,
    metrics_port: int | None,
    metrics_host: str,
    metrics_child: bool,
) -> None:
    """Run the handlers of APP (module:consumer) until SIGINT/SIGTERM.

    The first signal stops claiming and waits for running tasks (then hands the rest
    back); a second one stops at once. Exit code 0 after a clean stop; 1 when a background
    loop of the worker (heartbeat, flush, …) stopped on an error and the worker with it; 2
    for an invalid option; 78 when the database cannot be used as configured (a wrong
    password, a schema not migrated, a missing privilege, a read-only server), which no
    restart fixes. A database that is down is waited for.
    """
    settings.setup_logging()
    _supervisor.while_starting()
    with _errors():
        consumer = _load_consumer(app)
    options = {
        "concurrency": concurrency,
        "batch_size": batch_size,
        "queues": queues,
        "strict": strict,
        "lease": lease,
        "heartbeat_interval": heartbeat_interval,
        "rescue_interval": rescue_interval,
        "shutdown_timeout": shutdown_timeout,
    }
    try:
        consumer.configure(**options, listen_dsn=listen_dsn, prepare=None if prepare else False)
    except ConfigurationError as exc:
        click.echo(f"error: {first_line(exc)}", err=True)
        sys.exit(2)
    with _errors():
        with settings.database(quiet=True) as dsn:
            if processes > 1:
                schema = settings.schema if settings.schema_given else consumer.schema
                _cli_boundary.check_database(dsn, schema)
                child = [sys.executable, "-m", "pgtasq.cli", "worker", app, "--processes", "1"]
                for name, value in options.items():
                    if name != "strict" and value is not None:
                        child += ["--" + name.replace("_", "-"), str(value)]
                if scheduler_app is not None:
                    child += ["--scheduler", scheduler_app]
                if strict is not None:
                    child.append("--strict" if strict else "--weighted")
                if not prepare:
                    child.append("--no-prepare")
                child += ["--log-level", settings.log_level, "--log-format", settings.log_format]
                child += ["--burst"] if burst else []
                child += ["--metrics-child"] if metrics_port is not None else []
                env = {**os.environ, "PGTASQ_DSN": dsn}
                if listen_dsn:  # in the environment, not on command lines others can read
                    env["PGTASQ_LISTEN_DSN"] = listen_dsn
                if settings.schema_given:
                    env["PGTASQ_SCHEMA"] = settings.schema
                with _cli_observe.supervisor_metrics(
                    dsn=dsn, schema=settings.schema, host=metrics_host, port=metrics_port, env=env
                ) as on_exit:
                    code = _supervisor.supervise(
                        child,
                        processes,
                        env,
                        burst=burst,
                        on_exit=on_exit,
                        shutdown_timeout=consumer.settings.shutdown_timeout,
                    )
                sys.exit(code)
            if settings.schema_given:
                consumer.schema = settings.schema
            sched = _load_scheduler(scheduler_app) if scheduler_app else None
            if sched is not None:
                # Checked first, so that what no retry fixes is one line, not a thread's too.
                _cli_boundary.check_database(dsn, consumer.schema)
                sched.bind(dsn, schema=consumer.schema, prepare=prepare)
                sched.start()
            try:
                with _cli_observe.worker_metrics(
                    consumer,
                    dsn=dsn,
                    schema=consumer.schema,
                    host=metrics_host,
                    port=metrics_port,
                    child=metrics_child,
                ):
                    counts = consumer.run(dsn, burst=burst)
            finally:
                if sched is not None:
                    # Bounded like the worker's own teardown: a pass stuck on the database
                    # must not keep the process alive (its thread is a daemon).
                    sched.stop(timeout=TEARDOWN_MARGIN)
                    sched.close()
        if burst:
            click.echo(json.dumps(dataclasses.asdict(counts)))


for _command in (*_cli_admin.COMMANDS, *_cli_observe.COMMANDS):  # tasks, queues, …, health
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
