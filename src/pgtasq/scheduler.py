"""Periodic tasks from cron expressions: `Scheduler`, exactly once per tick.

Each entry (`Schedule`) is a cron expression, a time zone and a `Task`. Every tick of every
entry is enqueued with the idempotency key
``pgtasq:schedule:{length of the entry id}:{entry id}:{tick in UTC, ISO}``, so any number of
schedulers, on any number of hosts, may run the same entries: the unique index on the key
lets one task per tick through, and the others get the existing task back (counted as
``existing``). Keys starting with ``pgtasq:`` are reserved (`models.RESERVED_KEY_PREFIX`):
no producer can take a tick's key. The length prefix keeps entry ``rep``'s keys from
starting like those of ``rep:eu``. In the same transaction the entry is upserted into
``<schema>.schedules`` (cron, time zone, task type, payload, options, ``last_run_at``,
``next_run_at``); racing schedulers queue on that row, so they never deadlock.

Cron expressions (parsed by croniter):

- 5 fields: ``minute hour day-of-month month day-of-week``;
- 6 fields: a *seconds* field first: ``second minute hour day-of-month month day-of-week``;
- aliases: ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (``@midnight``), ``@hourly``;
- croniter's ``R`` (random) field is refused (`InvalidSchedule`): every scheduler process
  would draw its own value, so schedulers would disagree on the ticks and a tick would no
  longer be enqueued exactly once. ``H`` (hashed) is refused too (it needs a hash id, which
  pgtasq does not pass). Write the value out instead (``17 * * * *``).

Ticks are computed in the entry's time zone (an IANA name, via zoneinfo; ``UTC`` by default).
An invalid expression or zone raises `InvalidSchedule` at `Scheduler.register` (or when a
`Schedule` is built), before any SQL. Daylight saving time, as croniter computes it
(Europe/Berlin, checked by the tests):

- a wall-clock time that does not exist (spring forward) is *not* skipped: the tick moves to
  the first instant after the gap. ``30 2 * * *`` fires at 03:00 CEST on 2026-03-29;
  ``*/30 * * * *`` fires 01:30 CET, then 03:00 CEST (02:00 and 02:30 do not exist);
- a wall-clock time that occurs twice (fall back) fires *twice*, once per offset:
  ``30 2 * * *`` fires at 02:30 CEST and again at 02:30 CET on 2026-10-25, one hour
  apart. The two ticks are distinct instants, so they have distinct keys and both run.

Missed ticks. A scheduler takes an entry up (at its first `run_once`, at `register`, when
the provider adds or changes it) with no memory of its own. Ticks that fell due before then,
while no scheduler ran, follow ``missed``:

- ``"skip"`` (default): no catch-up; the first tick is the next one after now;
- ``"once"``: if the most recent tick at or before now is later than the entry's
  ``last_run_at`` in the schedules table, one task is enqueued for that tick (never more
  than one, however many were missed); an entry that never ran has nothing to catch up.

Once an entry is taken up, every tick from then on is enqueued, even if `run_once` is
called late (a slow loop, a suspended host): a late call enqueues each tick it passed, up to
``max_ticks_per_run`` per entry; beyond that the rest are dropped and logged.

`run_once` is the whole service; `run`, `arun` and `start` only call it and sleep until the
next due tick or the next provider refresh, whichever comes first. The clock is injectable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from pgtasq import _sql
from pgtasq._cron import (
    MAX_TICKS_PER_RUN_DEFAULT,
    MISSED_DEFAULT,
    TIMEZONE_DEFAULT,
    Due,
    Missed,
    due,
    upsert_params,
)
from pgtasq._cron import Schedule as Schedule  # public here, where it always was
from pgtasq._database import RETRYABLE, Backoff, Outage, misconfigured
from pgtasq._pool_sync import LazyPool
from pgtasq.errors import (
    ConfigurationError,
    DatabaseMisconfigured,
    DatabaseUnavailable,
    InvalidSchedule,
)
from pgtasq.models import (
    PAYLOAD_MAX_BYTES_DEFAULT,
    Task,
    _with_reserved_key,
    dump_payload,
)
from pgtasq.producer import Producer
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name

log = logging.getLogger("pgtasq.scheduler")

Clock = Callable[[], datetime]
Provider = Callable[[], Iterable["Schedule"]]

PROVIDER_INTERVAL_DEFAULT = 60.0
SLEEP_MAX_DEFAULT = 60.0
CONNECT_TIMEOUT = 2.0  # seconds one pass waits for the database before backing off


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclasses.dataclass(frozen=True)
class SchedulerCounts:
    """What one `Scheduler.run_once` did."""

    ticks: int = 0  # ticks handled
    enqueued: int = 0  # tasks this scheduler created
    existing: int = 0  # ticks another scheduler had enqueued already
    removed: int = 0  # entries deleted from the schedules table


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """The settings of a `Scheduler`, with their defaults."""

    schema: str = SCHEMA_DEFAULT
    missed: Missed = MISSED_DEFAULT
    provider_interval: float = PROVIDER_INTERVAL_DEFAULT
    sleep_max: float = SLEEP_MAX_DEFAULT
    max_ticks_per_run: int = MAX_TICKS_PER_RUN_DEFAULT
    max_payload_bytes: int = PAYLOAD_MAX_BYTES_DEFAULT

    def __post_init__(self) -> None:
        check_schema_name(self.schema)
        if self.missed not in ("skip", "once"):
            raise ConfigurationError(f"missed must be 'skip' or 'once', got {self.missed!r}")
        if not self.provider_interval > 0:
            raise ConfigurationError(f"provider_interval must be > 0, got {self.provider_interval}")
        if not self.sleep_max > 0:
            raise ConfigurationError(f"sleep_max must be > 0, got {self.sleep_max}")
        if self.max_ticks_per_run < 1:
            raise ConfigurationError(
                f"max_ticks_per_run must be >= 1, got {self.max_ticks_per_run}"
            )


def _entry_transaction(conn: psycopg.Connection[Any]) -> contextlib.AbstractContextManager[Any]:
    """One entry's upsert and enqueues, all or none, never committing a caller's work.

    Autocommit (our pool's connections): a transaction of its own. Inside the caller's
    transaction: a savepoint. On an idle connection that is not in autocommit: nothing; the
    first statement opens the caller's transaction, which the caller commits or rolls back.
    """
    if conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        return conn.transaction()
    return contextlib.nullcontext()


# -- the service ---------------------------------------------------------------------------


@dataclasses.dataclass
class _State:
    entry: Schedule
    payload: str
    next_due: datetime | None = None  # None: to be taken up at the next run_once


class Scheduler:
    """Enqueues the tasks of cron entries; run any number of them, each tick runs once.

    ``Scheduler(dsn)`` owns a small pool; ``Scheduler()`` needs ``conn=`` on `run_once`.
    ``provider``: a callable returning the entries (`Schedule`), read again every
    ``provider_interval`` seconds: entries it adds, changes or drops follow without restart.
    Entries given to `register` are kept besides those of the provider.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = SCHEMA_DEFAULT,
        clock: Clock | None = None,
        missed: Missed = MISSED_DEFAULT,
        provider: Provider | None = None,
        provider_interval: float = PROVIDER_INTERVAL_DEFAULT,
        sleep_max: float = SLEEP_MAX_DEFAULT,
        max_ticks_per_run: int = MAX_TICKS_PER_RUN_DEFAULT,
        max_payload_bytes: int = PAYLOAD_MAX_BYTES_DEFAULT,
        prepare: bool = True,
    ) -> None:
        self.config = SchedulerConfig(
            schema=schema,
            missed=missed,
            provider_interval=provider_interval,
            sleep_max=sleep_max,
            max_ticks_per_run=max_ticks_per_run,
            max_payload_bytes=max_payload_bytes,
        )
        self._clock: Clock = clock or _utc_now
        self._provider = provider
        self._stmts = _sql.statements(schema)
        self._producer = Producer(schema=schema, max_payload_bytes=max_payload_bytes)
        self._prepare = prepare
        self._pool = self._new_pool(dsn) if dsn else None
        self._lock = threading.RLock()
        self._registered: dict[str, _State] = {}
        self._provided: dict[str, _State] = {}
        self._to_delete: set[str] = set()
        self._refreshed_at: datetime | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def bind(self, dsn: str, *, schema: str | None = None, prepare: bool | None = None) -> None:
        """Give a scheduler built without a DSN one, and optionally another schema (the CLI's
        --dsn and --schema) or ``prepare`` setting (--no-prepare). Call it before running."""
        if prepare is not None:
            self._prepare = prepare
        if schema is not None and schema != self.config.schema:
            self.config = dataclasses.replace(self.config, schema=schema)
            self._stmts = _sql.statements(schema)
            limit = self.config.max_payload_bytes
            self._producer = Producer(schema=schema, max_payload_bytes=limit)
        if self._pool is None:
            self._pool = self._new_pool(dsn)

    def _new_pool(self, dsn: str) -> LazyPool:
        # A short open timeout: the loop retries anyway, and stays responsive to `stop`.
        return LazyPool(
            dsn,
            min_size=1,
            max_size=2,
            name="pgtasq-scheduler",
            open_timeout=CONNECT_TIMEOUT,
            prepare=self._prepare,
        )

    # -- entries

    def _state(self, entry: Schedule) -> _State:
        return _State(entry, dump_payload(entry.task.payload, self.config.max_payload_bytes))

    def register(
        self, cron: str, task: Task, *, name: str | None = None, timezone: str | None = None
    ) -> str:
        """Add an entry (or replace the one of the same id); returns its id.

        Raises InvalidSchedule (a bad expression or zone) or TaskValidationError (payload)
        before any SQL.
        """
        entry = Schedule(cron, task, id=name or "", timezone=timezone or TIMEZONE_DEFAULT)
        state = self._state(entry)
        with self._lock:
            old = self._registered.get(entry.id)
            if old is None or old.entry != entry:
                self._registered[entry.id] = state
                self._to_delete.discard(entry.id)
        self._wake.set()
        return entry.id

    def unregister(self, entry_id: str) -> bool:
        """Remove an entry; its row leaves the schedules table at the next `run_once`."""
        with self._lock:
            found = self._registered.pop(entry_id, None) is not None
            if found and entry_id not in self._provided:
                self._to_delete.add(entry_id)
        return found

    def entries(self) -> list[Schedule]:
        """The entries in force (registered and provided), by id."""
        with self._lock:
            merged = {**self._provided, **self._registered}
        return [merged[k].entry for k in sorted(merged)]

    def _refresh(self, now: datetime) -> None:
        """Read the provider again if it is time; keep the old entries if it fails."""
        if self._provider is None:
            return
        interval = timedelta(seconds=self.config.provider_interval)
        if self._refreshed_at is not None and now < self._refreshed_at + interval:
            return
        self._refreshed_at = now
        try:
            fresh = {e.id: e for e in self._provider()}
            states = {i: self._state(e) for i, e in fresh.items()}
        except Exception as exc:
            log.error("schedule provider failed, keeping its previous entries: %s", exc)
            return
        for entry_id in self._provided.keys() - fresh.keys():
            if entry_id not in self._registered:
                self._to_delete.add(entry_id)
        for entry_id, state in states.items():
            old = self._provided.get(entry_id)
            if old is not None and old.entry == state.entry:
                states[entry_id] = old  # unchanged: keep its place in time
            self._to_delete.discard(entry_id)
        self._provided = states

    # -- one pass

    def run_once(
        self, now: datetime | None = None, *, conn: psycopg.Connection[Any] | None = None
    ) -> SchedulerCounts:
        """Enqueue every due tick of every entry; returns what was done.

        ``conn``: a psycopg Connection to run on; in autocommit mode each entry commits on its
        own, otherwise the caller commits (each entry in a savepoint). This scheduler counts
        the ticks as done either way: if the caller rolls back, they are not enqueued again.
        Without ``conn``: the scheduler's own pool, each entry in its own transaction.
        """
        now = self._clock() if now is None else now
        if now.tzinfo is None or now.utcoffset() is None:
            raise InvalidSchedule("now", str(now), "must be timezone-aware")
        if conn is not None:
            if not isinstance(conn, psycopg.Connection):
                raise TypeError("conn must be a psycopg Connection")
            return self._run_once(now, conn)
        if self._pool is None:
            raise ConfigurationError("this Scheduler has no DSN: pass conn= to run_once")
        with self._pool.get().connection() as own:
            return self._run_once(now, own)

    def _run_once(self, now: datetime, conn: psycopg.Connection[Any]) -> SchedulerCounts:
        with self._lock:
            self._refresh(now)
            states = {**self._provided, **self._registered}
            removed = 0
            for entry_id in sorted(self._to_delete):
                removed += len(self._fetch(conn, self._stmts.schedule_delete, {"id": entry_id}))
            self._to_delete.clear()
            last_runs: dict[str, datetime | None] = {}
            new = sorted(i for i, s in states.items() if s.next_due is None)
            if new and self.config.missed == "once":
                rows = self._fetch(conn, self._stmts.schedule_list, {"ids": new})
                last_runs = {r["id"]: r["last_run_at"] for r in rows}
            ticks = enqueued = existing = 0
            for entry_id in sorted(states):
                state = states[entry_id]
                todo = due(
                    state.entry,
                    state.next_due,
                    last_runs.get(entry_id),
                    now,
                    self.config.missed,
                    self.config.max_ticks_per_run,
                )
                if todo.dropped:
                    log.warning("schedule %s: too many ticks due, skipped to now", entry_id)
                if todo.ticks or state.next_due is None:
                    created = self._write(conn, state, todo)
                    ticks += len(todo.ticks)
                    enqueued += created
                    existing += len(todo.ticks) - created
                state.next_due = todo.next_due
        return SchedulerCounts(ticks, enqueued, existing, removed)

    def _write(self, conn: psycopg.Connection[Any], state: _State, todo: Due) -> int:
        """Upsert the entry and enqueue its ticks, in one transaction; returns tasks created."""
        entry = state.entry
        last = todo.ticks[-1] if todo.ticks else None
        params = upsert_params(entry, state.payload, last, todo.next_due)
        created = 0
        with _entry_transaction(conn):
            self._fetch(conn, self._stmts.schedule_upsert, params)
            for tick in todo.ticks:
                task = _with_reserved_key(entry.task, entry.key(tick))
                created += self._producer.enqueue(task, conn=conn).created
        return created

    @staticmethod
    def _fetch(
        conn: psycopg.Connection[Any], stmt: _sql.Statement, params: Mapping[str, Any]
    ) -> Sequence[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(stmt.text, params)
            return cur.fetchall()

    # -- the loop

    def seconds_to_next(self, now: datetime | None = None) -> float:
        """How long the loop may sleep: until the next tick or provider refresh, capped."""
        now = self._clock() if now is None else now
        with self._lock:
            states = [*self._provided.values(), *self._registered.values()]
            if any(s.next_due is None for s in states):
                return 0.0
            wake = [s.next_due for s in states if s.next_due is not None]
            if self._provider is not None and self._refreshed_at is not None:
                wake.append(self._refreshed_at + timedelta(seconds=self.config.provider_interval))
        if not wake:
            return self.config.sleep_max
        return max(0.0, min(self.config.sleep_max, (min(wake) - now).total_seconds()))

    def _step(self, backoff: Backoff, outage: Outage) -> float:
        """One pass of the loop; returns how long to sleep.

        A lost database (or one not up yet) is logged once and retried with backoff; what
        no retry can fix raises `DatabaseMisconfigured`.
        """
        try:
            counts = self.run_once()
        except (*RETRYABLE, DatabaseUnavailable, psycopg.Error) as exc:
            fatal = misconfigured(exc, self.config.schema)
            if fatal is not None:
                raise fatal from exc
            if not isinstance(exc, (*RETRYABLE, DatabaseUnavailable)):
                raise
            outage.lost(exc)
            return backoff.next()
        outage.back()
        backoff.reset()
        if counts.ticks:
            log.info(
                "scheduler: %d tick(s) due: %d task(s) enqueued, %d enqueued by another scheduler",
                counts.ticks,
                counts.enqueued,
                counts.existing,
                extra={"ticks": counts.ticks, "enqueued": counts.enqueued},
            )
        return self.seconds_to_next()

    def run(self) -> None:
        """Run until `stop`."""
        self._stop.clear()
        backoff, outage = Backoff(), Outage(log, "scheduler")
        log.info("scheduler started: %d entries", len(self._registered) + len(self._provided))
        while not self._stop.is_set():
            delay = self._step(backoff, outage)
            self._wake.wait(delay)
            self._wake.clear()
        log.info("scheduler stopped")

    async def arun(self) -> None:
        """`run` for asyncio: each pass runs in a thread; cancel the task or call `stop`."""
        self._stop.clear()
        backoff, outage = Backoff(), Outage(log, "scheduler")
        while not self._stop.is_set():
            delay = await asyncio.to_thread(self._step, backoff, outage)
            deadline = asyncio.get_running_loop().time() + delay
            while not self._stop.is_set() and not self._wake.is_set():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                await asyncio.sleep(min(left, 0.05))
            self._wake.clear()

    def start(self) -> None:
        """Run in a daemon thread. If the database cannot be used as configured
        (`DatabaseMisconfigured`), the thread logs why at ERROR and ends."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run_in_thread, name="pgtasq-scheduler", daemon=True
        )
        self._thread.start()

    def _run_in_thread(self) -> None:
        try:
            self.run()
        except DatabaseMisconfigured as exc:
            log.error("scheduler stopped: %s", exc)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop (after its current pass) and wait for the thread of `start`."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        """Stop the loop if it runs (`stop`) and close the scheduler's pool."""
        self.stop()
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
