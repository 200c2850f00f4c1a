"""What `Client` and `AsyncClient` share besides `pgtasq._client_ops`: their defaults and
the decisions `events` takes between its I/O (`EventWatch`)."""

from __future__ import annotations

import logging
import time

import psycopg

from pgtasq._database import RETRYABLE, Backoff, Outage
from pgtasq._driver_errors import misconfigured

RETENTION_DEFAULT = 86400.0  # finished tasks without a retention of their own: one day
EVENTS_CHECK_EVERY = 5.0  # seconds without a notification before the connection is checked
EVENTS_BACKOFF_CAP = 5.0  # the longest wait between two attempts to reconnect

NO_DSN = "this {name} has no DSN: pass conn=, or create it with {name}(dsn)"

log = logging.getLogger("pgtasq.client")


class EventWatch:
    """What `Client.events` decides between its I/O: when to stop (``timeout`` seconds
    without an event), how long to wait for notifications before checking the connection,
    and, when it fails, whether to retry (and after how long) or to raise."""

    def __init__(self, timeout: float | None, schema: str) -> None:
        self._timeout = timeout
        self._schema = schema
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._backoff = Backoff(cap=EVENTS_BACKOFF_CAP)
        self._outage = Outage(log, "events")

    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def wait(self) -> float:
        if self._deadline is None:
            return EVENTS_CHECK_EVERY
        return max(0.0, min(EVENTS_CHECK_EVERY, self._deadline - time.monotonic()))

    def seen(self) -> None:
        if self._timeout is not None:
            self._deadline = time.monotonic() + self._timeout

    def connected(self) -> None:
        self._backoff.reset()
        self._outage.back()

    def lost(self, exc: psycopg.Error) -> float:
        """Seconds to wait before reconnecting; raises what no retry can fix."""
        fatal = misconfigured(exc, self._schema, connecting=True)
        if fatal is not None:
            raise fatal from None  # psycopg's text may quote the DSN
        if not isinstance(exc, RETRYABLE):
            raise exc
        self._outage.lost(exc)
        return min(self._backoff.next(), self.wait())
