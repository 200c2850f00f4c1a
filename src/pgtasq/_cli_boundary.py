"""What every admin command of ``pgtasq`` shares: one connection, one line per error.

The commands (`pgtasq._cli_tasks`, `pgtasq._cli_admin`) run inside `connection`: an
autocommit connection to the given database or the embedded server's, so each statement
commits on its own, as on the Client's pool; unlike the pool, an unreachable server fails at
once instead of after retries. What they raise that a user can act on ends the command with
one ``error:`` line on stderr and exit code 1 (`failures`); what no retry can fix (a wrong
password, a schema not migrated, a missing privilege, a read-only server:
`DatabaseMisconfigured`) with exit code `EXIT_MISCONFIGURED`, the same for every command.
Every command takes ``--json`` (`json_option`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, Protocol, TypeVar

import click
import psycopg

from pgtasq import _sql
from pgtasq._cli_output import printable
from pgtasq._driver_errors import misconfigured, said, translate
from pgtasq._dsn import redact
from pgtasq.errors import DatabaseMisconfigured, PgtasqError

F = TypeVar("F", bound=Callable[..., Any])

# A fix is needed, restarting cannot help (sysexits' EX_CONFIG): `pgtasq worker --processes N`
# does not restart a child that exits with it, and systemd units can say
# RestartPreventExitStatus=78.
EXIT_MISCONFIGURED = 78


# -- the boundary: one connection, one line per error ---------------------------------------


class CommandSettings(Protocol):
    """What the ``cli`` group hands its commands (`pgtasq.cli._Settings`)."""

    schema: str

    def database(self, *, quiet: bool = False) -> contextlib.AbstractContextManager[str]: ...

    def setup_logging(self) -> None: ...


def fail(message: str) -> NoReturn:
    """End the command: one ``error:`` line on stderr (printable, no password), exit 1."""
    click.echo(f"error: {printable(redact(message))}", err=True)
    sys.exit(1)


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """The boundary of the commands that run long (worker, scheduler, migrate, demo): one
    line and exit 1 for the errors a user can act on (pgtasq's, a lost database), exit
    `EXIT_MISCONFIGURED` for those no retry can fix; anything else keeps its traceback."""
    try:
        yield
    except DatabaseMisconfigured as exc:
        click.echo(f"error: {first_line(exc)}", err=True)
        sys.exit(EXIT_MISCONFIGURED)
    except (PgtasqError, psycopg.OperationalError) as exc:
        fail(said(exc))


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, printable on a terminal (it may quote data),
    with any password blanked."""
    return printable(said(exc))


@contextlib.contextmanager
def failures(schema: str | None = None) -> Iterator[None]:
    """Exit 1 with one line on stderr for what a user can act on; `EXIT_MISCONFIGURED` for
    what no retry can fix (`DatabaseMisconfigured`, or the psycopg error that means one).

    pgtasq's own refusals of a value are PgtasqErrors (and ValueErrors); a plain ValueError
    is a value refused on the way (a date, a JSON text), reported the same way.
    """
    try:
        yield
    except (PgtasqError, ValueError, psycopg.Error) as exc:
        fatal = misconfigured(exc, schema) if schema else None
        if fatal is None and isinstance(exc, DatabaseMisconfigured):
            fatal = exc
        if fatal is not None:
            click.echo(f"error: {first_line(fatal)}", err=True)
            sys.exit(EXIT_MISCONFIGURED)
        click.echo(f"error: {first_line(exc)}", err=True)
        sys.exit(1)


@contextlib.contextmanager
def connection(settings: CommandSettings) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the given database or the embedded server's, inside
    `failures`: what the block raises ends the command with exit code 1."""
    with failures(settings.schema), settings.database() as dsn:
        try:
            conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.Error as exc:
            error = translate(exc, settings.schema, connecting=True)
            if error is None:
                raise
            raise error from None  # psycopg's text may quote the DSN
        with conn:
            yield conn


def check_database(dsn: str, schema: str) -> None:
    """Raise `DatabaseMisconfigured` if a worker could not work on this database: register a
    worker in a transaction rolled back at once. A database that is not reachable passes:
    the workers wait for it. (``--processes N`` checks once, so that N children do not each
    print the same error.)"""
    stmts = _sql.statements(schema)
    params = {
        "worker": "pgtasq-check",
        "host": "-",
        "pid": 0,
        "queues": "{}",
        "concurrency": 1,
        "metadata": "{}",
    }
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            conn.execute(stmts.worker_register.text, params)
            conn.rollback()
    except psycopg.Error as exc:
        fatal = misconfigured(exc, schema, connecting=True)
        if fatal is not None:
            raise fatal from None


def env_option(*decls: str, envvar: str, **attrs: Any) -> Callable[[F], F]:
    """A click option with its environment variable, shown in ``--help`` (every option of
    ``pgtasq`` has one)."""
    return click.option(*decls, envvar=envvar, show_envvar=True, **attrs)


def json_option(f: F) -> F:
    """``--json`` (``PGTASQ_JSON``): the command receives ``as_json``."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        envvar="PGTASQ_JSON",
        show_envvar=True,
        help="Print JSON instead of a table.",
    )(f)
