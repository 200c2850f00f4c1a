"""The worker's listener: LISTEN on a dedicated connection, wake the claim loop on a commit.

Not a round-based service like those of `pgtasq._services`: it follows a stream (the
connection's notifications) and has nothing to do in rounds. What it decides without I/O,
whether a notification concerns this worker, is the plain function `relevant`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import psycopg

from pgtasq._database import RETRYABLE, Backoff, LogOnce, short_error

if TYPE_CHECKING:
    from pgtasq import _sql

log = logging.getLogger("pgtasq.consumer")

CHECK_EVERY_MIN = 5.0  # seconds without a notification before `SELECT 1` checks the connection
RECONNECT_BACKOFF_CAP = 10.0


def relevant(payload: str, queues: Collection[str]) -> bool:
    """Whether a notification's payload (a JSON list of queue names, or ``"*"``) names one
    of ``queues``. Anything else wakes the worker too, and nothing raises (anyone may NOTIFY
    the channel): better a claim for nothing than a task left waiting for the next poll."""
    try:
        names = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON; nested too deep for the parser
        return True
    if not isinstance(names, list):
        return True
    return any(not isinstance(name, str) or name in queues for name in names)


class Listener:
    """``LISTEN`` on a connection of its own, reconnecting with backoff while the database
    is away; ``on_connected()`` after each (re)connection, since notifications may have been
    missed, and ``on_notified()`` for each notification about one of ``queues``.

    After ``max(poll_interval, 5 s)`` without a notification it sends ``SELECT 1``, so a
    dead connection is found and replaced. A payload the connection cannot decode (anyone
    may NOTIFY; on a ``SQL_ASCII`` database any bytes) wakes the worker like any other and
    is logged once.
    """

    def __init__(
        self,
        *,
        dsn: str,
        stmts: _sql.Statements,
        queues: Collection[str],
        poll_interval: float,
        on_connected: Callable[[], None],
        on_notified: Callable[[], None],
    ) -> None:
        self.dsn = dsn
        self.stmts = stmts
        self.queues = frozenset(queues)
        self.check_every = max(poll_interval, CHECK_EVERY_MIN)
        self._on_connected = on_connected
        self._on_notified = on_notified
        self._log_once = LogOnce(log)

    async def run(self) -> None:
        backoff = Backoff(cap=RECONNECT_BACKOFF_CAP)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                async with conn:
                    await conn.execute(self.stmts.listen.text)
                    backoff.reset()
                    self._on_connected()
                    while True:
                        try:
                            async for note in conn.notifies(timeout=self.check_every):
                                if relevant(note.payload, self.queues):
                                    self._on_notified()
                        except UnicodeDecodeError as exc:
                            self._log_once(
                                "decode",
                                logging.WARNING,
                                "listener: a notification could not be decoded (%s); "
                                "woken anyway (logged once)",
                                short_error(exc),
                            )
                            self._on_notified()
                            continue
                        await conn.execute("SELECT 1")  # is the connection still alive?
            except RETRYABLE as exc:
                delay = backoff.next()
                log.warning(
                    "listener lost (%s); polling until it reconnects in %.1f s",
                    short_error(exc),
                    delay,
                )
                await asyncio.sleep(delay)
