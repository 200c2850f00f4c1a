# Generated from src/pgtasq/_events_async.py by `python tools/gen_sync.py`: do not edit.
"""What the clients' ``events()`` return: `AsyncEventStream` and `EventStream`.

`AsyncEventStream` is written by hand in ``_events_async.py``; ``_events_sync.py`` is made
from it by ``tools/gen_sync.py`` (unasync: ``async`` and ``await`` dropped, names replaced),
so edit the first and regenerate the second. Docstrings are copied unchanged.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from typing import Any

import psycopg

from pgtasq import _client_ops as ops
from pgtasq import _sql
from pgtasq._client_base import EventWatch
from pgtasq._client_ops import TaskEvent


class EventStream:
    """Task events as they happen, from LISTEN on a connection of its own.

    Entered as a context manager (``with``, or ``async with`` for the asyncio client), it is
    listening when the block starts: an event committed after that is seen, so the block
    can enqueue, then wait for the event. Iterated directly, it connects when the first
    event is asked for. It ends after ``timeout`` seconds without an event (see the
    client's ``events``); closing it, or leaving the block, closes its connection.
    """

    def __init__(self, dsn: str, stmts: _sql.Statements, timeout: float | None) -> None:
        self._dsn = dsn
        self._stmts = stmts
        self._watch = EventWatch(timeout, stmts.schema)
        self._conn: psycopg.Connection[Any] | None = None
        self._release: weakref.finalize[Any, Any] | None = None
        self._events: deque[TaskEvent] = deque()
        self._closed = False

    @property
    def listening(self) -> bool:
        """Whether its LISTEN is in place now (False before it connects, while the database
        is away, and once it has ended)."""
        return self._conn is not None

    def __enter__(self) -> EventStream:
        self._listen()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> TaskEvent:
        while not self._events:
            if self._closed or self._watch.expired():
                self.close()
                raise StopIteration
            self._receive()
        self._watch.seen()
        return self._events.popleft()

    def close(self) -> None:
        """Stop: close the connection; the iteration ends. Calling it again does nothing."""
        self._closed = True
        self._events.clear()
        self._disconnect()

    def _listen(self) -> None:
        """Connect and LISTEN, unless connected. While the database is away, retry with
        backoff until the timeout runs out; raise what no retry can fix."""
        while self._conn is None and not self._closed and not self._watch.expired():
            try:
                self._connect()
            except psycopg.Error as exc:
                time.sleep(self._watch.lost(exc))
            else:
                self._watch.connected()

    def _connect(self) -> None:
        conn = psycopg.Connection.connect(self._dsn, autocommit=True)
        try:
            conn.execute(self._stmts.listen.text)
            conn.execute(self._stmts.listen_events.text)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        # Dropped without being closed (a loop left with break), the stream still closes its
        # connection when it is collected.
        self._release = weakref.finalize(self, conn.pgconn.finish)

    def _receive(self) -> None:
        """Wait for notifications, up to the watch's interval, keeping the events among
        them; after an interval without any, check that the connection is alive. When the
        connection fails: close it and wait before the next call reconnects."""
        self._listen()
        if self._conn is None:
            return  # closed, or the timeout ran out while the database was away
        try:
            quiet = True
            # Read to the end (stop_after ends it after the first packet with one), so no
            # notification is left inside an abandoned generator.
            for note in self._conn.notifies(timeout=self._watch.wait(), stop_after=1):
                quiet = False
                event = ops.parse_event(self._stmts, note.channel, note.payload)
                if event is not None:
                    self._events.append(event)
            if quiet:
                self._conn.execute("SELECT 1")  # is the connection still alive?
        except psycopg.Error as exc:
            self._disconnect()
            time.sleep(self._watch.lost(exc))

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if self._release is not None:
            self._release.detach()
            self._release = None
        if conn is not None:
            conn.close()
