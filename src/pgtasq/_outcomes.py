"""Outcomes of finished handlers, queued in memory and written in batches.

One statement records many outcomes (`task_finish_many`; `task_release_many` for tasks
handed back). Each carries the ownership fence, so an outcome of a task this worker lost
changes nothing and is counted as ``lost``. On a database error the outcomes stay queued
and are written once it is back.

Also here: `error_entry`, what a failed attempt adds to the row's ``errors``, and `Counts`,
the tally of outcomes (and claims and rescues) a consumer returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasq._database import RETRYABLE, Backoff, fetch, short_error

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from pgtasq import _sql
    from pgtasq.models import TaskInfo

log = logging.getLogger("pgtasq.consumer")

FLUSH_MAX_ROWS = 5000
DELAY_MAX = 10 * 365 * 86400.0  # ten years: a larger (or infinite) delay would not be stored
TRACEBACK_MAX_CHARS = 2000
MESSAGE_MAX_CHARS = 2000


@dataclasses.dataclass
class Counts:
    """What a consumer did; `Consumer.run(burst=True)` returns it."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lost: int = 0
    rescued: int = 0


def error_entry(info: TaskInfo, exc: BaseException) -> dict[str, Any]:
    """One entry of the task's ``errors`` list (the database adds ``at``)."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    tb = "".join(lines)
    return {  # jsonb cannot hold NUL: keep a visible stand-in
        "attempt": info.attempts,
        "error": type(exc).__qualname__,
        "message": str(exc)[:MESSAGE_MAX_CHARS].replace("\x00", "\\x00"),
        "traceback": tb[-TRACEBACK_MAX_CHARS:].replace("\x00", "\\x00"),
    }


@dataclasses.dataclass
class Outcome:
    """What became of one claimed task. ``delay`` is capped at `DELAY_MAX` seconds."""

    id: int
    claimed_at: datetime
    status: str  # completed | failed | pending | release
    delay: float = 0.0
    refund: int = 0
    error: str | None = None
    result: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.delay <= DELAY_MAX:  # also catches NaN
            self.delay = DELAY_MAX if self.delay > 0 else 0.0


class OutcomeWriter:
    """The queue of outcomes and the loop that writes them."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        stmts: _sql.Statements,
        worker_id: str,
        counts: Counts,
        flush_interval: float,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        self.stmts = stmts
        self.worker_id = worker_id
        self.counts = counts
        self.flush_interval = flush_interval
        self._on_written = on_written  # called after each batch leaves `unflushed`
        self.queued: list[Outcome] = []
        self.recorded = 0  # outcomes recorded so far (burst mode watches it)
        # Tasks whose outcome is not written yet: still ours, so the heartbeat keeps them.
        self.unflushed: dict[int, datetime] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # the loop and shutdown must not write one batch twice

    def record(self, outcome: Outcome) -> None:
        self.unflushed[outcome.id] = outcome.claimed_at
        self.queued.append(outcome)
        self._wake.set()
        self.recorded += 1

    async def run(self) -> None:
        """Write what is queued, a few milliseconds after it arrives; forever."""
        backoff = Backoff()
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush_interval)  # let a few more arrive
            self._wake.clear()
            try:
                await self.flush()
                backoff.reset()
            except (*RETRYABLE, psycopg.Error) as exc:
                if not isinstance(exc, RETRYABLE):
                    log.exception("recording outcomes failed; retrying")
                delay = backoff.next()
                log.warning(
                    "recording outcomes failed (%s); retrying in %.1f s", short_error(exc), delay
                )
                await asyncio.sleep(delay)
                self._wake.set()

    async def flush(self) -> None:
        """Write the queued outcomes; on a database error they stay queued."""
        async with self._lock:  # the flush loop and shutdown must not write one batch twice
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        while self.queued:
            batch = self.queued[:FLUSH_MAX_ROWS]
            finish = [o for o in batch if o.status != "release"]
            release = [o for o in batch if o.status == "release"]
            async with self.pool.connection() as conn:
                written = 0
                if finish:
                    rows = await fetch(
                        conn, self.stmts.task_finish_many, self._finish_params(finish)
                    )
                    written += len(rows)
                    for row in rows:
                        status = row["status"]
                        if status == "completed":
                            self.counts.completed += 1
                        elif status == "failed":
                            self.counts.failed += 1
                        else:
                            self.counts.retried += 1
                if release:
                    params = {
                        "worker": self.worker_id,
                        "id": [o.id for o in release],
                        "claimed_at": [o.claimed_at for o in release],
                    }
                    rows = await fetch(conn, self.stmts.task_release_many, params)
                    written += len(rows)
                    self.counts.released += len(rows)
            self.counts.lost += len(batch) - written
            del self.queued[: len(batch)]
            for o in batch:
                self.unflushed.pop(o.id, None)
            if self._on_written is not None:
                self._on_written()

    def _finish_params(self, batch: list[Outcome]) -> dict[str, Any]:
        # Array parameters as PostgreSQL array literals: on our own psycopg connections this
        # is several times cheaper than dumping lists element by element, and the statement's
        # CASTs read them the same way.
        stamps: dict[datetime, str] = {}
        return {
            "worker": self.worker_id,
            "id": "{" + ",".join([str(o.id) for o in batch]) + "}",
            "claimed_at": _array([stamps.get(o.claimed_at) or _stamp(stamps, o) for o in batch]),
            "status": "{" + ",".join([o.status for o in batch]) + "}",
            "delay": "{" + ",".join([repr(o.delay) for o in batch]) + "}",
            "refund": "{" + ",".join(["1" if o.refund else "0" for o in batch]) + "}",
            "error": _array([o.error for o in batch]),
            "result": _array([o.result for o in batch]),
        }

    async def flush_all(self, patience: float = 30.0) -> None:
        """Flush until nothing is queued, retrying database errors for up to ``patience``."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + patience
        backoff = Backoff()
        while self.queued:
            try:
                await self.flush()
            except RETRYABLE as exc:
                if loop.time() > give_up:
                    log.error(
                        "could not record %d outcomes (%s); their leases will expire and "
                        "the tasks will run again",
                        len(self.queued),
                        short_error(exc),
                    )
                    return
                await asyncio.sleep(backoff.next())


def _stamp(stamps: dict[datetime, str], outcome: Outcome) -> str:
    # A claim's rows share one attempted_at: format it once per flush.
    return stamps.setdefault(outcome.claimed_at, outcome.claimed_at.isoformat())


def _array(values: list[str | None]) -> str:
    """A text[] literal: every element quoted and escaped, None as NULL."""
    return (
        "{"
        + ",".join(
            [
                "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                for v in values
            ]
        )
        + "}"
    )


def log_failed_attempt(info: TaskInfo, exc: BaseException) -> None:
    """One WARNING line per failed attempt; its traceback too when DEBUG is on."""
    message = (str(exc).strip().splitlines() or [""])[0]
    log.warning(
        "task %s (%s) attempt %d/%d failed: %s%s",
        info.id,
        info.type,
        info.attempts,
        info.max_attempts,
        type(exc).__name__,
        f": {message}" if message else "",
        exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
        extra={
            "task_id": info.id,
            "task_type": info.type,
            "queue": info.queue,
            "attempt": info.attempts,
            "max_attempts": info.max_attempts,
            "error": type(exc).__name__,
        },
    )
