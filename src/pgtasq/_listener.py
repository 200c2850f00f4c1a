"""The worker's listener: LISTEN on a dedicated connection, wake the claim loop on a commit.

Not a round-based service like those of `pgtasq._services`: it follows a stream (the
connection's notifications) and has nothing to do in rounds. What it decides without I/O,
whether a notification concerns this worker, is the plain function `relevant`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Collection
from typing import Any

import psycopg

from pgtasq import _sql
from pgtasq._database import RETRYABLE, Backoff, LogOnce, short_error

log = logging.getLogger("pgtasq.consumer")

CHECK_EVERY_MIN = 5.0  # seconds without a notification before `SELECT 1` checks the connection
RECONNECT_BACKOFF_CAP = 10.0
PROBE_TIMEOUT = 3.0  # seconds for the listener's own NOTIFY to come back
PROBE_ATTEMPTS = 3  # probes sent when undecodable notifications got in the way
PROBE_KEY = "pgtasq_probe"


def relevant(payload: str, queues: Collection[str]) -> bool:
    """Whether a notification's payload names one of ``queues``: a JSON object whose
    ``queues`` is a list of queue names or ``"*"`` (see `_sql_common.wake`), or a bare list of
    names. Anything else wakes the worker too, and nothing raises
    (anyone may NOTIFY the channel): better a claim for nothing than a task left waiting
    for the next poll."""
    try:
        names = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON; nested too deep for the parser
        return True
    if isinstance(names, dict):
        if PROBE_KEY in names:  # another worker checking its LISTEN
            return False
        names = names.get("queues")
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

    On its first connection it checks that LISTEN works there: a NOTIFY sent from another
    connection must come back within `PROBE_TIMEOUT`. Through PgBouncer in transaction mode
    it does not (the LISTEN stays on a server connection other clients then use); the
    listener then logs that once, closes its connection and leaves the worker to polling.
    ``on_checked()`` is called once that check is over, either way (the worker is ready).
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
        on_checked: Callable[[], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.stmts = stmts
        self.queues = frozenset(queues)
        self.poll_interval = poll_interval
        self.check_every = max(poll_interval, CHECK_EVERY_MIN)
        self._on_connected = on_connected
        self._on_notified = on_notified
        self._on_checked = on_checked
        self._log_once = LogOnce(log)

    async def run(self) -> None:
        backoff = Backoff(cap=RECONNECT_BACKOFF_CAP)
        probed = False
        lost = False  # logged once per outage
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                async with conn:
                    await conn.execute(self.stmts.listen.text)
                    backoff.reset()
                    if lost:
                        log.info("listener reconnected")
                        lost = False
                    self._on_connected()
                    if not probed:
                        works = await self._probe(conn)
                        if self._on_checked is not None:
                            self._on_checked()
                        if not works:
                            break
                        probed = True
                    while True:
                        try:
                            async for note in conn.notifies(timeout=self.check_every):
                                if relevant(note.payload, self.queues):
                                    self._on_notified()
                        except UnicodeDecodeError as exc:
                            self._undecodable(exc)
                            continue
                        await conn.execute("SELECT 1")  # is the connection still alive?
            except RETRYABLE as exc:
                delay = backoff.next()
                # Once per outage at WARNING; each further attempt at DEBUG.
                log.log(
                    logging.DEBUG if lost else logging.WARNING,
                    "listener lost (%s); polling until it reconnects in %.1f s",
                    short_error(exc),
                    delay,
                )
                lost = True
                await asyncio.sleep(delay)
        log.warning(
            "LISTEN gets no notifications on this connection (PgBouncer in transaction mode?): "
            "polling every %.1f s instead; give the worker a direct listen_dsn (--listen-dsn) "
            "to wake up at once",
            self.poll_interval,
        )
        await asyncio.get_running_loop().create_future()  # polling only, until cancelled

    async def _probe(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Whether a NOTIFY sent from another connection reaches ``conn``'s LISTEN.

        A notification that cannot be decoded makes psycopg drop the others that came with
        it, the probe's own perhaps: then the probe is sent again (a few times at most).
        """
        for _ in range(PROBE_ATTEMPTS):
            payload = json.dumps({PROBE_KEY: uuid.uuid4().hex})
            params = {"channel": self.stmts.channel, "payload": payload}
            async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as other:
                await other.execute(_sql.listen_probe.text, params)
            try:
                async for note in conn.notifies(timeout=PROBE_TIMEOUT):
                    if note.payload == payload:
                        return True
                    if relevant(note.payload, self.queues):
                        self._on_notified()
                return False
            except UnicodeDecodeError as exc:
                self._undecodable(exc)
        return False

    def _undecodable(self, exc: UnicodeDecodeError) -> None:
        """A notification whose payload cannot be decoded: a wake-up like any other."""
        self._log_once(
            "decode",
            logging.WARNING,
            "listener: a notification could not be decoded (%s); woken anyway (logged once)",
            short_error(exc),
        )
        self._on_notified()
