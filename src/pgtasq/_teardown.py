"""One deadline for stopping a worker, and teardown steps bounded by it.

The first stop request fixes when the graceful wait ends (``shutdown_timeout`` later) and
when stopping must be over (`TEARDOWN_MARGIN` after that: time to hand back what is still
running, write the outcomes, unregister and close). A forced stop moves both earlier: no
wait, the margin only. Later requests never move them later. Each teardown step gets what
is left (`bounded`), and is logged at DEBUG before and after, so a slow stop shows where its
time goes. Plain values and a clock reading in, seconds out: `Deadline` has no I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger("pgtasq.consumer")

TEARDOWN_MARGIN = 5.0  # seconds past shutdown_timeout to hand back, unregister and close


class Deadline:
    """When the graceful wait ends and when stopping must be over (clock readings)."""

    def __init__(self, shutdown_timeout: float, margin: float = TEARDOWN_MARGIN) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.margin = margin
        self.wait_until: float | None = None
        self.end: float | None = None

    def request(self, now: float, *, force: bool) -> None:
        """A stop request at ``now``: set the deadlines, or move them earlier."""
        wait_until = now + (0.0 if force else self.shutdown_timeout)
        if self.wait_until is None or wait_until < self.wait_until:
            self.wait_until = wait_until
            self.end = wait_until + self.margin

    def waiting_left(self, now: float) -> float:
        """Seconds of the graceful wait left (0 once over; a stop without request: 0)."""
        if self.wait_until is None:
            self.request(now, force=True)
        assert self.wait_until is not None
        return max(0.0, self.wait_until - now)

    def left(self, now: float) -> float:
        """Seconds until stopping must be over (without a request: the margin from now)."""
        if self.end is None:
            self.request(now, force=True)
        assert self.end is not None
        return max(0.0, self.end - now)


async def bounded(step: str, work: Awaitable[Any], limit: float) -> bool:
    """Await ``work`` for at most ``limit`` seconds; False (and a WARNING) if it took longer."""
    log.debug("shutdown: %s (%.1f s left)", step, limit)
    try:
        await asyncio.wait_for(work, limit)
    except asyncio.TimeoutError:
        log.warning("shutdown: %s did not finish in %.1f s; going on without it", step, limit)
        return False
    log.debug("shutdown: %s done", step)
    return True
