"""``pgtasq dev``: the project's embedded PostgreSQL (see `pgtasq._embedded`).

``dsn`` starts it when needed, leaves it running and prints its DSN (so that
``export PGTASQ_DSN=$(pgtasq dev dsn)`` works); ``status`` says whether it runs and where,
without starting it; ``stop`` stops it, also when a command killed with ``kill -9`` left it
running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import click

from pgtasq import _embedded
from pgtasq._cli_boundary import failures, json_option
from pgtasq._cli_output import print_json


class DevSettings(Protocol):
    """What the ``cli`` group hands these commands (`pgtasq.cli._Settings`)."""

    def home(self) -> Path: ...


@click.group()
def dev() -> None:
    """The embedded PostgreSQL of this project (data in .pgtasq/, see --data-dir)."""


@dev.command("dsn")
@click.pass_obj
def dev_dsn(settings: DevSettings) -> None:
    """Start the embedded server if needed, leave it running, print its DSN."""
    with failures():
        click.echo(_embedded.dev_dsn(settings.home()))


@dev.command("status")
@json_option
@click.pass_obj
def dev_status(settings: DevSettings, as_json: bool) -> None:
    """Whether the embedded server runs: data directory, pid, socket, DSN."""
    found = _embedded.status(settings.home())
    if as_json:
        print_json(
            {
                "home": str(found.home),
                "initialized": found.initialized,
                "running": found.running,
                "pid": found.pid,
                "port": found.port,
                "socket_dir": None if found.socket_dir is None else str(found.socket_dir),
                "dsn": found.dsn,
                "keep_running": found.keep_running,
            }
        )
        return
    state = "running" if found.running else "stopped"
    if not found.initialized:
        state += " (no data yet: any command without a DSN, or `pgtasq dev dsn`, creates it)"
    click.echo(f"embedded PostgreSQL: {state}")
    click.echo(f"  data:   {found.home / 'pgdata'}")
    if found.running:
        click.echo(f"  pid:    {found.pid}")
        click.echo(f"  socket: {found.socket_dir} (port {found.port})")
        click.echo(f"  dsn:    {found.dsn}")
        until = "`pgtasq dev stop`" if found.keep_running else "the last command using it ends"
        click.echo(f"  runs until {until}")


@dev.command("stop")
@click.pass_obj
def dev_stop(settings: DevSettings) -> None:
    """Stop the embedded server (fast shutdown: committed data is kept)."""
    with failures():
        home = settings.home()
        if _embedded.stop(home):
            click.echo(f"stopped the embedded PostgreSQL in {home}")
        else:
            click.echo(f"the embedded PostgreSQL in {home} is not running")
