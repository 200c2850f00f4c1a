"""The worker's background services: the heartbeat, the rescuer and the cleaner.

Each has the shape of every pgtasq service (`Scheduler` too):

- a frozen config with named defaults (``*_DEFAULT``), checked when built;
- ``run_once()``: one round, returning what it did as counts; the tests call it directly;
- ``run()``: a thin loop around it, forever (the `Engine` cancels it): sleep, call, and on a
  lost database log and try again at the next round. A data error (the database refusing
  what a row holds or what the round sends: see `_database.is_data_error`) does not stop
  the loop either: it is logged once, and the next round runs as usual (`survive`). The
  statements are written so that no stored value can make them fail; this is the net under
  that promise. Anything else (a bug, a missing table) ends the loop, and the worker;
- an injectable clock. Every statement takes its time from the database (``now()``), so
  what the Python side reads is only how long to wait: ``sleep`` and the jitter source
  ``rand`` are parameters (``asyncio.sleep`` and ``random.random`` by default).

They run on the worker's pool (autocommit, ``synchronous_commit`` off: see
`pgtasq._runtime`). The `Engine` builds them, tells them what it holds (``held``) and
hears back from them (``on_lost``, ``on_rescued``).

`BackgroundLoops` runs their loops (and the listener's and the outcome writer's) for the
`Engine` and reports one that ends on its own: a loop is meant to run until cancelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgtasq._database import RETRYABLE, LogOnce, fetch, is_data_error, short_error
from pgtasq._limits import duration_problem
from pgtasq.errors import ConfigurationError

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from pgtasq import _sql

log = logging.getLogger("pgtasq.consumer")

LEASE_DEFAULT = 30.0
HEARTBEAT_INTERVAL_DEFAULT = 1.0
RESCUE_INTERVAL_DEFAULT = 10.0
RESCUE_BATCH_DEFAULT = 1000
STALE_WORKER_AFTER_DEFAULT = 60.0  # the engine uses max(this, 2 * lease)
CLEAN_INTERVAL_DEFAULT = 60.0
CLEAN_BATCH_DEFAULT = 1000
RETENTION_DEFAULT = 86400.0  # finished tasks without a retention of their own: one day

Sleep = Callable[[float], Awaitable[None]]
Rand = Callable[[], float]


def _check_positive(**values: float) -> None:
    """Durations in seconds, within what ``now() + value`` can hold (`pgtasq._limits`)."""
    for name, value in values.items():
        problem = duration_problem(value)  # also refuses NaN, 0, and 1e300
        if problem is not None:
            raise ConfigurationError(f"{name} {problem}")


_log_once = LogOnce(log)


def survive(loop: str, exc: Exception) -> None:
    """What a service loop does with an error from its round: log it and go on when the
    database is away or refused the data (once per kind of refusal), else raise it."""
    if is_data_error(exc):
        _log_once(
            f"{loop}:{short_error(exc)}",
            logging.ERROR,
            "%s: the database refused the data of this round (%s); carrying on "
            "(logged once per error)",
            loop,
            short_error(exc),
        )
    elif isinstance(exc, RETRYABLE):
        log.warning("%s failed: %s", loop, short_error(exc))
    else:
        raise exc


def jittered(interval: float, rand: Rand) -> float:
    """``interval`` ± 25 %, so that workers started together do not act in step."""
    return interval * (0.75 + rand() / 2)


# -- heartbeat ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeartbeatConfig:
    """``interval``: seconds between beats; ``lease``: what each extension grants."""

    interval: float = HEARTBEAT_INTERVAL_DEFAULT
    lease: float = LEASE_DEFAULT

    def __post_init__(self) -> None:
        _check_positive(interval=self.interval, lease=self.lease)
        if self.interval >= self.lease / 2:
            raise ConfigurationError(
                f"the heartbeat interval ({self.interval} s) must be under half the lease "
                f"({self.lease} s)"
            )


@dataclasses.dataclass(frozen=True)
class HeartbeatCounts:
    """What one beat did."""

    held: int = 0  # tasks asked about: running, or finished with the outcome not written
    lost: int = 0  # of those, no longer this worker's (cancelled, rescued, deleted)


class Heartbeat:
    """Once a beat, `task_heartbeat`: extend the leases that are due (a third of the lease
    used), upsert the worker's row, and report the tasks that fail the fence.

    ``held()`` returns the tasks to keep, id → claim time (the fencing token);
    ``on_lost(id, claimed_at)`` is called for each one this worker no longer owns.
    """

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        stmts: _sql.Statements,
        worker: Mapping[str, Any],
        held: Callable[[], Mapping[int, datetime]],
        on_lost: Callable[[int, datetime], None],
        config: HeartbeatConfig = HeartbeatConfig(),
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.pool = pool
        self.stmts = stmts
        self.config = config
        self._worker = dict(worker)  # worker, host, pid, queues, concurrency, metadata
        self._held = held
        self._on_lost = on_lost
        self._sleep = sleep

    async def run_once(self) -> HeartbeatCounts:
        held = dict(self._held())
        params = {
            **self._worker,
            "id": list(held),
            "claimed_at": list(held.values()),
            "lease": self.config.lease,
        }
        async with self.pool.connection() as conn:
            rows = await fetch(conn, self.stmts.task_heartbeat, params)
        for row in rows:  # only ids we sent: the statement selects from them
            self._on_lost(row["id"], held[row["id"]])
        return HeartbeatCounts(held=len(held), lost=len(rows))

    async def run(self) -> None:
        while True:
            await self._sleep(self.config.interval)
            try:
                await self.run_once()
            except Exception as exc:
                survive("heartbeat", exc)


# -- rescuer ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RescuerConfig:
    """``interval``: seconds between rounds (jittered ± 25 %, the first one at a random
    point of the first interval); ``batch``: rows per statement; ``stale_worker_after``:
    seconds without a heartbeat after which a `workers` row is deleted."""

    interval: float = RESCUE_INTERVAL_DEFAULT
    batch: int = RESCUE_BATCH_DEFAULT
    stale_worker_after: float = STALE_WORKER_AFTER_DEFAULT

    def __post_init__(self) -> None:
        _check_positive(interval=self.interval, stale_worker_after=self.stale_worker_after)
        if self.batch < 1:
            raise ConfigurationError(f"batch must be >= 1, got {self.batch}")


@dataclasses.dataclass(frozen=True)
class RescueCounts:
    """What one round of the rescuer did."""

    rescued: int = 0  # expired leases taken back: to pending, or to failed
    failed: int = 0  # of those, out of attempts: now failed
    stale_workers: int = 0  # `workers` rows deleted


class Rescuer:
    """`task_rescue_expired` until no batch is full, then `worker_delete_stale`.

    Any worker may rescue any task (``SKIP LOCKED``: rescuers never wait on each other).
    ``on_rescued(n)`` is called when a round took back ``n`` > 0 tasks.
    """

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        stmts: _sql.Statements,
        on_rescued: Callable[[int], None] | None = None,
        config: RescuerConfig = RescuerConfig(),
        sleep: Sleep = asyncio.sleep,
        rand: Rand = random.random,
    ) -> None:
        self.pool = pool
        self.stmts = stmts
        self.config = config
        self._on_rescued = on_rescued
        self._sleep = sleep
        self._rand = rand

    async def run_once(self) -> RescueCounts:
        batch = self.config.batch
        rescued = failed = 0
        async with self.pool.connection() as conn:
            while True:
                rows = await fetch(conn, self.stmts.task_rescue_expired, {"limit": batch})
                rescued += len(rows)
                failed += sum(1 for row in rows if row["status"] == "failed")
                if len(rows) < batch:
                    break
            params = {"older_than": self.config.stale_worker_after}
            stale = await fetch(conn, self.stmts.worker_delete_stale, params)
        if rescued:
            log.warning("rescued %d tasks whose lease expired", rescued)
            if self._on_rescued is not None:
                self._on_rescued(rescued)
        return RescueCounts(rescued=rescued, failed=failed, stale_workers=len(stale))

    async def try_once(self) -> RescueCounts | None:
        """`run_once`, logging a lost database or a data error instead of raising (then
        None)."""
        try:
            return await self.run_once()
        except Exception as exc:
            survive("rescue", exc)
            return None

    async def run(self) -> None:
        interval = self.config.interval
        await self._sleep(self._rand() * interval)
        while True:
            await self.try_once()
            await self._sleep(jittered(interval, self._rand))


# -- cleaner ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CleanerConfig:
    """``interval``: seconds between rounds (jittered as the rescuer's);
    ``retention_default``: seconds a finished task without a ``retention`` of its own is
    kept; ``batch``: rows per statement."""

    interval: float = CLEAN_INTERVAL_DEFAULT
    retention_default: float = RETENTION_DEFAULT
    batch: int = CLEAN_BATCH_DEFAULT

    def __post_init__(self) -> None:
        _check_positive(interval=self.interval, retention_default=self.retention_default)
        if self.batch < 1:
            raise ConfigurationError(f"batch must be >= 1, got {self.batch}")


@dataclasses.dataclass(frozen=True)
class CleanCounts:
    """What one round of the cleaner did."""

    deleted: int = 0  # finished tasks past their retention


class Cleaner:
    """`task_clean` until no batch is full: delete finished tasks past their retention.

    Every worker runs one; the statement's advisory lock (per schema, held for one batch)
    lets one at a time work, and the others find nothing to do.
    """

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        stmts: _sql.Statements,
        config: CleanerConfig = CleanerConfig(),
        sleep: Sleep = asyncio.sleep,
        rand: Rand = random.random,
    ) -> None:
        self.pool = pool
        self.stmts = stmts
        self.config = config
        self._sleep = sleep
        self._rand = rand

    async def run_once(self) -> CleanCounts:
        batch = self.config.batch
        params = {"retention": self.config.retention_default, "batch": batch}
        deleted = 0
        async with self.pool.connection() as conn:
            while True:
                rows = await fetch(conn, self.stmts.task_clean, params)
                deleted += len(rows)
                if len(rows) < batch:
                    break
        if deleted:
            log.info("cleaned %d finished tasks past their retention", deleted)
        return CleanCounts(deleted=deleted)

    async def run(self) -> None:
        interval = self.config.interval
        await self._sleep(self._rand() * interval)
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                survive("cleaning", exc)
            await self._sleep(jittered(interval, self._rand))


# -- supervision --------------------------------------------------------------------------


class BackgroundLoops:
    """The worker's background loops, as asyncio tasks that run until `close` cancels them.

    A loop that ends otherwise (it raised something its own retries do not cover, returned,
    or was cancelled by someone else) is logged at ERROR with its traceback, kept in
    ``crashed`` (the first one: its name and how it ended), and reported to
    ``on_crash(name)``, once per loop; the engine then shuts down. The engine's own claim
    loop, which is not one of these tasks, reports its errors the same way (`crash`).
    """

    def __init__(self, on_crash: Callable[[str], None]) -> None:
        self._on_crash = on_crash
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._stopped: set[str] = set()
        self.crashed: tuple[str, str, BaseException | None] | None = None

    def start(self, name: str, loop: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(loop, name=f"pgtasq-{name}")
        task.add_done_callback(functools.partial(self._ended, name))
        self._tasks.append(task)
        return task

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self._closing:
            return
        error = None if task.cancelled() else task.exception()
        if task.cancelled():
            how = "was cancelled"
        elif error is None:
            how = "returned"
        else:
            how = f"raised {short_error(error)}"
        self._report(name, how, error)

    def crash(self, name: str, error: BaseException) -> None:
        """Report the loop ``name``, run by the caller, as stopped by ``error``.

        Logged, kept and reported as a loop of ours that raised; a second report for the
        same name (two claims in flight that both failed) is dropped.
        """
        self._report(name, f"raised {short_error(error)}", error)

    def _report(self, name: str, how: str, error: BaseException | None) -> None:
        if name in self._stopped:
            return
        self._stopped.add(name)
        log.error("the %s loop stopped (%s); stopping the worker", name, how, exc_info=error)
        if self.crashed is None:
            self.crashed = (name, how, error)
        self._on_crash(name)

    async def close(self) -> None:
        """Cancel every loop and wait for them to end."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
