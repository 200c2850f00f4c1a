"""What every admin command of ``pgtasq`` shares: one connection, one line per error.

The commands (`pgtasq._cli_tasks`, `pgtasq._cli_admin`) run inside `connection`: an
autocommit connection to the given database or the embedded server's, so each statement
commits on its own, as on the Client's pool; unlike the pool, an unreachable server fails at
once instead of after retries. What they raise that a user can act on ends the command with
one ``error:`` line on stderr and exit code 1 (`failures`). Every command takes ``--json``
(`json_option`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import click
import psycopg
from psycopg import errors as pg_errors

from pgtasq._cli_output import printable
from pgtasq._dsn import redact
from pgtasq.errors import DatabaseUnavailable, PgtasqError

F = TypeVar("F", bound=Callable[..., Any])


# -- the boundary: one connection, one line per error ---------------------------------------


class CommandSettings(Protocol):
    """What the ``cli`` group hands its commands (`pgtasq.cli._Settings`)."""

    schema: str

    def database(self, *, quiet: bool = False) -> contextlib.AbstractContextManager[str]: ...


_NOT_MIGRATED = (pg_errors.UndefinedTable, pg_errors.UndefinedObject, pg_errors.InvalidSchemaName)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, printable on a terminal (it may quote data),
    with any password blanked."""
    text = str(exc).strip()
    return printable(redact(text.splitlines()[0])) if text else type(exc).__name__


def _message(exc: BaseException, schema: str | None) -> str:
    if isinstance(exc, _NOT_MIGRATED) and schema:
        return f"{first_line(exc)} (has `pgtasq migrate` run for schema {schema}?)"
    return first_line(exc)


@contextlib.contextmanager
def failures(schema: str | None = None) -> Iterator[None]:
    """Exit 1 with one line on stderr for what a user can act on.

    ValueError too: the Client raises it for out-of-range ``days`` and ``batch_size``.
    """
    try:
        yield
    except (PgtasqError, ValueError, psycopg.Error) as exc:
        click.echo(f"error: {_message(exc, schema)}", err=True)
        sys.exit(1)


@contextlib.contextmanager
def connection(settings: CommandSettings) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the given database or the embedded server's, inside
    `failures`: what the block raises ends the command with exit code 1."""
    with failures(settings.schema), settings.database() as dsn:
        try:
            conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {first_line(exc)}") from exc
        with conn:
            yield conn


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
