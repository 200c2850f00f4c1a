"""Outcomes of finished handlers, queued in memory and written in batches.

One statement records many outcomes (`task_finish_many`; `task_release_many` for tasks
handed back). Each carries the ownership fence, so an outcome of a task this worker lost
changes nothing and is counted as ``lost``. On a lost database the outcomes stay queued and
are written once it is back.

An outcome the database refuses (a data error: see `_database.is_data_error`) does not hold
back the others: the batch is split in halves until the refused outcome is alone, that task
is failed with an entry saying why (``OutcomeRejected``), and every other outcome is written.

Also here: `Counts`, the tally of outcomes (and claims and rescues) a consumer returns, and
`clamp_delay`, which keeps a retry delay within what the row can hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasq._database import RETRYABLE, Backoff, LogOnce, fetch, is_data_error, short_error
from pgtasq._observe import Recorder
from pgtasq._records import error_text

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from pgtasq import _sql

log = logging.getLogger("pgtasq.consumer")

FLUSH_MAX_ROWS = 5000
DELAY_MAX = 10 * 365 * 86400.0  # ten years: a retry later than that is a mistake


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


def clamp_delay(delay: float, warn: Callable[[str], None] | None = None) -> float:
    """``delay`` within 0..`DELAY_MAX` seconds: NaN and negative become 0, larger (or
    infinite) `DELAY_MAX`. ``warn(message)`` is told when the value was changed."""
    if 0.0 <= delay <= DELAY_MAX:
        return delay
    clamped = DELAY_MAX if delay > DELAY_MAX else 0.0
    if warn is not None:
        what = "not a number" if math.isnan(delay) else f"{delay!r} s"
        warn(f"a retry delay of {what} is outside 0..{DELAY_MAX:.0f} s; using {clamped:.0f} s")
    return clamped


class OutcomeRejected(Exception):
    """The error an ``errors`` entry names when the database refused a task's outcome."""


@dataclasses.dataclass(slots=True)
class Outcome:
    """What became of one claimed task. ``delay`` is capped at `DELAY_MAX` seconds;
    ``attempt`` is the attempt it ends (for the entry written if the outcome is refused)."""

    id: int
    claimed_at: datetime
    status: str  # completed | failed | pending | release
    delay: float = 0.0
    refund: int = 0
    error: str | None = None
    result: str | None = None
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.delay <= DELAY_MAX:  # (NaN too) inline: one Outcome per task
            self.delay = clamp_delay(self.delay)


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
        metrics: Recorder | None = None,
        on_record: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.pool = pool
        self.stmts = stmts
        self.worker_id = worker_id
        self.counts = counts
        self.flush_interval = flush_interval
        self._on_written = on_written  # called after each batch leaves `unflushed`
        self._metrics = metrics or Recorder()
        # Called with each outcome as it is queued (metrics; tracing sets it when it starts).
        self.on_record = on_record
        self.queued: list[Outcome] = []
        self.recorded = 0  # outcomes recorded so far (burst mode watches it)
        # Tasks whose outcome is not written yet: still ours, so the heartbeat keeps them.
        self.unflushed: dict[int, datetime] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # the loop and shutdown must not write one batch twice
        self._log_once = LogOnce(log)

    def record(self, outcome: Outcome) -> None:
        if self.on_record is not None:
            self.on_record(outcome)
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
                self._metrics.database_error("flush")
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
            began = time.perf_counter()
            finish = [o for o in batch if o.status != "release"]
            release = [o for o in batch if o.status == "release"]
            async with self.pool.connection() as conn:
                written = 0
                if finish:
                    rows = await self._write(
                        conn, self.stmts.task_finish_many, self._finish_params, finish
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
                    rows = await self._write(
                        conn, self.stmts.task_release_many, self._release_params, release
                    )
                    written += len(rows)
                    self.counts.released += len(rows)
            self.counts.lost += len(batch) - written
            self._metrics.flushed(time.perf_counter() - began, len(batch))
            del self.queued[: len(batch)]
            for o in batch:
                self.unflushed.pop(o.id, None)
            if self._on_written is not None:
                self._on_written()

    async def _write(
        self,
        conn: psycopg.AsyncConnection[Any],
        stmt: _sql.Statement,
        params: Callable[[list[Outcome]], dict[str, Any]],
        batch: list[Outcome],
    ) -> list[dict[str, Any]]:
        """``stmt`` for ``batch``; on a data error, each half on its own, down to the one
        outcome the database refuses (`_reject`)."""
        try:
            return await fetch(conn, stmt, params(batch))
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(batch) == 1:
                return await self._reject(conn, batch[0], exc)
            half = len(batch) // 2
            first = await self._write(conn, stmt, params, batch[:half])
            return first + await self._write(conn, stmt, params, batch[half:])

    async def _reject(
        self, conn: psycopg.AsyncConnection[Any], outcome: Outcome, exc: BaseException
    ) -> list[dict[str, Any]]:
        """Fail the task whose outcome the database refused, with an entry saying why (a
        refused release is given up: its lease runs out and the rescuer takes it back)."""
        if outcome.status == "release":
            self._log_once(
                f"reject:{outcome.id}",
                logging.ERROR,
                "task %s: PostgreSQL refused to hand it back (%s); its lease will expire and "
                "the rescuer will take it back",
                outcome.id,
                short_error(exc),
            )
            return []
        why = f"PostgreSQL refused this {outcome.status} outcome: {short_error(exc)}"
        record = error_text(outcome.attempt, OutcomeRejected(why))
        failed = Outcome(outcome.id, outcome.claimed_at, "failed", error=record)
        try:
            rows = await fetch(conn, self.stmts.task_finish_many, self._finish_params([failed]))
        except Exception as again:
            if not is_data_error(again):
                raise
            self._log_once(
                f"reject:{outcome.id}",
                logging.ERROR,
                "task %s: PostgreSQL refused its outcome (%s) and its failure too (%s); "
                "its lease will expire and the rescuer will take it back",
                outcome.id,
                short_error(exc),
                short_error(again),
            )
            return []
        log.error(
            "task %s: PostgreSQL refused its outcome (%s); recorded it as failed",
            outcome.id,
            short_error(exc),
        )
        return rows

    def _release_params(self, batch: list[Outcome]) -> dict[str, Any]:
        return {
            "worker": self.worker_id,
            "id": [o.id for o in batch],
            "claimed_at": [o.claimed_at for o in batch],
        }

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
