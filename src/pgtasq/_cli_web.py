"""``pgtasq web``: serve the dashboard (`pgtasq.web`) with uvicorn until SIGINT/SIGTERM.

It binds 127.0.0.1 unless told otherwise. Basic auth comes from ``--basic-auth`` or from
``PGTASQ_WEB_USER`` and ``PGTASQ_WEB_PASSWORD``; the password is never printed.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator
from typing import Any

import click

from pgtasq._cli_boundary import CommandSettings, fail, failures

WEB_HOST_DEFAULT = "127.0.0.1"
WEB_PORT_DEFAULT = 8008
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    except OSError as exc:
        sock.close()
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")
    return sock


@click.command("web")
@click.option(
    "--host",
    default=WEB_HOST_DEFAULT,
    envvar="PGTASQ_WEB_HOST",
    show_envvar=True,
    help="Address to listen on (0.0.0.0: every interface; then set --basic-auth).",
)
@click.option(
    "--port",
    default=WEB_PORT_DEFAULT,
    type=click.IntRange(0, 65535),
    envvar="PGTASQ_WEB_PORT",
    show_envvar=True,
    help="Port to serve on (0: any free port).",
)
@click.option(
    "--read-only",
    is_flag=True,
    envvar="PGTASQ_WEB_READ_ONLY",
    show_envvar=True,
    help="Show everything, change nothing: no action is offered or accepted.",
)
@click.option(
    "--hide-payloads",
    is_flag=True,
    envvar="PGTASQ_WEB_HIDE_PAYLOADS",
    show_envvar=True,
    help="Never show task payloads and results.",
)
@click.option(
    "--basic-auth",
    metavar="USER:PASSWORD",
    envvar="PGTASQ_WEB_BASIC_AUTH",
    show_envvar=True,
    help="Require HTTP Basic auth (or set PGTASQ_WEB_USER and PGTASQ_WEB_PASSWORD).",
)
@click.pass_obj
def web(
    settings: CommandSettings,
    host: str,
    port: int,
    read_only: bool,
    hide_payloads: bool,
    basic_auth: str | None,
) -> None:
    """Serve the dashboard: queues, tasks, workers and schedules in a browser."""
    settings.setup_logging()
    try:
        import uvicorn

        from pgtasq import web as web_module
        from pgtasq.web import _security
    except ImportError as exc:
        fail(f'pgtasq web needs the web extra ({exc.name} is missing): pip install "pgtasq[web]"')
    auth = None
    if basic_auth is not None:
        try:
            auth = _security.parse_basic_auth(basic_auth)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--basic-auth'") from None
    with failures(settings.schema), settings.database(quiet=True) as dsn:
        _check_schema(dsn, settings.schema)
        app = web_module.create_app(
            dsn,
            schema=settings.schema,
            read_only=read_only,
            hide_payloads=hide_payloads,
            basic_auth=auth,
        )
        sock = _bind(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"serving the pgtasq dashboard on http://{shown}:{bound}/", err=True)
        guarded = auth is not None or app.user_middleware
        if host not in _LOOPBACK and not guarded:
            click.echo(
                "warning: listening beyond this machine without --basic-auth: anyone who can "
                "reach it can see and change tasks",
                err=True,
            )
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        _quiet_server(uvicorn.Server)(config).run(sockets=[sock])


def _quiet_server(base: type[Any]) -> type[Any]:
    """uvicorn's server, stopping gracefully on SIGINT/SIGTERM and then exiting 0 like
    ``pgtasq metrics`` (uvicorn itself raises the signal again once stopped)."""

    class Server(base):  # type: ignore[misc]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            stops = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def _check_schema(dsn: str, schema: str) -> None:
    """Fail now, with the usual one line, if the database cannot be read (not migrated,
    wrong password…), rather than on the first page."""
    import psycopg

    from pgtasq._driver_errors import translate
    from pgtasq.client import Client

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            Client(schema=schema).list_workers(conn=conn)
    except psycopg.Error as exc:
        error = translate(exc, schema, connecting=True)
        if error is None:
            raise
        raise error from None
