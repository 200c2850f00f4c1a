"""The connection pools pgtasq owns when the caller gives a DSN instead of a connection.

Pool connections are in autocommit: each pgtasq operation is one statement (or runs in an
explicit transaction), so no BEGIN/COMMIT round trips are spent on the hot path.
`AsyncLazyPool` is written once (``_pool_async.py``); `LazyPool` is generated from it
(``_pool_sync.py``, by ``python tools/gen_sync.py``). What they share is here.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg

from pgtasq._driver_errors import misconfigured, unavailable
from pgtasq.errors import ConfigurationError, DatabaseMisconfigured, DatabaseUnavailable

POOL_MIN_SIZE_DEFAULT = 1
POOL_MAX_SIZE_DEFAULT = 10
POOL_OPEN_TIMEOUT_DEFAULT = 10.0  # seconds the first use waits for a first connection
PROBE_BACKOFF_CAP = 1.0  # the longest pause between two connection attempts while opening


def connection_kwargs(*, prepare: bool) -> dict[str, Any]:
    """The keyword arguments of pgtasq's pooled connections. ``prepare=False``: never use
    server-side prepared statements (psycopg prepares a statement run 5 times on one
    connection), for PgBouncer before 1.21, or later without ``max_prepared_statements``."""
    if not isinstance(prepare, bool):
        raise ConfigurationError(f"prepare must be True or False, got {prepare!r}")
    return {"autocommit": True} if prepare else {"autocommit": True, "prepare_threshold": None}


def check_connect_timeout(value: object) -> float:
    """``connect_timeout`` as seconds, or a ConfigurationError (before any connection)."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0 < value < float("inf")
    ):
        raise ConfigurationError(f"connect_timeout must be a number of seconds > 0, got {value!r}")
    return float(value)


def _unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    """The server at ``dsn`` (named without its password) stayed away (`_driver_errors`)."""
    return unavailable(exc, dsn)


def _refused(exc: psycopg.Error) -> DatabaseMisconfigured | None:
    """A connection error no retry can fix (the schema plays no part before a statement)."""
    return misconfigured(exc, "", connecting=True)


def _attempt_timeout(left: float) -> int:
    # libpq's connect_timeout is whole seconds, and treats 1 as 2.
    return max(2, math.ceil(left))
