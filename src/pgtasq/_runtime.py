"""The worker engine behind `Consumer`: claim, run, heartbeat, record, rescue.

One asyncio loop per process runs seven concurrent parts:

- the claim loop: while there is free capacity, claim ready rows (one statement per queue,
  queues in weighted or strict order) and start a handler for each;
- the listener: LISTEN on a dedicated connection, waking the claim loop within
  milliseconds of a commit; polling covers lost notifications and PgBouncer;
- the heartbeat: once a tick, one statement extends the leases that are due and returns
  the tasks this worker no longer owns, whose handlers are then cancelled;
- the flusher: outcomes are queued in memory and written in one statement per flush;
- the progress writer: what handlers report (`ctx.set_progress`), throttled and batched;
- the rescuer: leases that expired go back to pending (or to failed);
- the cleaner: finished tasks past their retention are deleted.

The heartbeat, the rescuer and the cleaner are services of their own (`pgtasq._services`),
the listener is `pgtasq._listener.Listener` and the flusher `pgtasq._outcomes.OutcomeWriter`;
the engine builds them, runs their loops and answers their callbacks. Handlers are called
through the chains of `pgtasq._executor`. The decisions are plain code with tables of unit
tests: how much to claim and when (`pgtasq._claims.ClaimPlanner`), what a finished handler's
task becomes (`pgtasq._policy.decide`, through `pgtasq._finishing.Finisher`). The worker's
row is `pgtasq._registration`'s. What stays here is I/O and asyncio: the claims, one task
per handler (its timer), readiness (see `Engine.run`) and the shutdown.

Every error that means the database is away is logged, backed off and retried: a restart of
PostgreSQL, a terminated backend or a network cut never stops the worker, and since every
write is fenced on ownership, nothing a stale worker writes can change a task it lost. Any
other error that stops a background loop or fails a claim (a missing table, a revoked
privilege, a bug) stops the worker as a signal does; `run` raises `WorkerCrashed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgtasq import _sql
from pgtasq._claims import PROBE_QUEUES_MIN, Burst, Claim, ClaimPlanner, queue_order
from pgtasq._database import RETRYABLE, Backoff, Outage, fetch
from pgtasq._executor import DaemonExecutor, handler_chain, is_async
from pgtasq._finishing import Finisher, RecordMaker
from pgtasq._listener import Listener
from pgtasq._observe import Recorder
from pgtasq._outcomes import Counts, Outcome, OutcomeWriter
from pgtasq._policy import time_limit
from pgtasq._pool import connection_kwargs
from pgtasq._progress import ProgressWriter
from pgtasq._registration import new_worker_id, register, unregister, worker_row
from pgtasq._services import (
    STALE_WORKER_AFTER_DEFAULT,
    BackgroundLoops,
    Cleaner,
    CleanerConfig,
    Heartbeat,
    HeartbeatConfig,
    Rescuer,
    RescuerConfig,
)
from pgtasq._settings import Settings
from pgtasq._teardown import Deadline, bounded
from pgtasq._tracing import TRACING, Tracing
from pgtasq.context import ErrorHook, Handler, Middleware, TaskContext
from pgtasq.errors import RetryIn, SkipRetry, TaskTimeout, WorkerCrashed
from pgtasq.models import TaskInfo
from pgtasq.retry import RetryDelay

log = logging.getLogger("pgtasq.consumer")

# Outcome.status -> the outcome label of the worker's metrics
_OUTCOME_NAMES = {
    "completed": "completed",
    "failed": "failed",
    "pending": "retried",
    "release": "released",
}


@dataclasses.dataclass
class _Running:
    ctx: TaskContext
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None  # lost | shutdown | timeout
    finishing: bool = False  # the handler is done: its outcome is being made, not cancelled
    started: float = 0.0  # time.perf_counter() at the start, when metrics are on
    span: Any = None  # its consumer span, when tracing is on
    outcome: str | None = None  # what was recorded for it, when tracing is on
    error: BaseException | None = None  # what its handler raised


class Engine:
    """One consumer process at work. Built by `Consumer`, used once."""

    def __init__(
        self,
        *,
        dsn: str,
        schema: str,
        settings: Settings,
        handlers: dict[str, Handler],
        middleware: Sequence[Middleware],
        on_error: ErrorHook | None,
        is_failure: Callable[[BaseException], bool],
        retry_delay: RetryDelay,
        metrics: Recorder | None = None,
        on_ready: Callable[[], None] | None = None,
        tracer_provider: Any = None,
    ) -> None:
        self.dsn = dsn
        self._tracing = Tracing(tracer_provider)
        self.metrics = metrics or Recorder()  # the base class records nothing
        self.settings = settings
        self.stmts = _sql.statements(schema, worker_events=settings.events)
        self.worker_id = new_worker_id()
        self.on_error = on_error
        self.is_failure = is_failure
        self.retry_delay = retry_delay
        self.types = sorted(handlers)
        self.queue_names = {name for name, _ in settings.queues}
        self.running: dict[int, _Running] = {}
        self.counts = Counts()
        self.stopping = False
        # Loop times, set by the first stop request (see request_stop).
        self._deadline = Deadline(settings.shutdown_timeout)
        self._plan = ClaimPlanner(settings.concurrency, settings.batch_size)
        # Ready (see run): registered, a claim done, and listening unless polling only.
        self._on_ready = on_ready
        self._registered = False
        self._polled = False
        self._listening = False
        self._claims: set[asyncio.Task[None]] = set()
        self._claim_backoff = Backoff()
        # One log line when the database goes, one when it is back, whichever part notices.
        self._outage = Outage(log, "worker")
        self._executor = DaemonExecutor(settings.concurrency)
        self._records = RecordMaker(settings.result_max_bytes)
        self._chains = {
            name: handler_chain(fn, middleware, self._executor) for name, fn in handlers.items()
        }
        self._threaded = {name for name, fn in handlers.items() if not is_async(fn)}
        self._worker_params = worker_row(self.worker_id, settings, self.types)
        # Created inside the loop (run()).
        self._wake: asyncio.Event
        self._force: asyncio.Event
        self._pool: AsyncConnectionPool[Any]
        self._writer: OutcomeWriter
        self._progress: ProgressWriter
        self._finisher: Finisher
        self._loops: BackgroundLoops
        self._heartbeat: Heartbeat
        self._rescuer: Rescuer
        self._cleaner: Cleaner

    # -- lifecycle ----------------------------------------------------------------------

    def request_stop(self, *, force: bool = False) -> None:
        """Stop claiming and shut down gracefully; ``force`` skips the wait for handlers.

        The first request sets the teardown deadline (`pgtasq._teardown.Deadline`):
        ``shutdown_timeout`` for the running handlers, then a margin to hand back what is
        left, unregister and close; a forced stop leaves only the margin. Every teardown
        step is bounded by it.
        """
        self._deadline.request(asyncio.get_running_loop().time(), force=force)
        if not self.stopping or force:
            log.debug("stop requested (%s)", "fast" if force else "graceful")
        self.stopping = True
        self._wake.set()
        if force:
            self._force.set()

    def _left(self) -> float:
        """Seconds left before stopping must be over (see `pgtasq._teardown`)."""
        return self._deadline.left(asyncio.get_running_loop().time())

    async def _bounded(self, step: str, work: Awaitable[Any], cap: float = 1e9) -> None:
        await bounded(step, work, min(cap, self._left()))

    async def run(self, *, burst: bool = False) -> Counts:
        """Work until stopped (with ``burst``, until drained); return the counts.

        ``on_ready()`` is called once the worker is registered, its first claim is done and,
        unless it only polls, its LISTEN is in place and checked (`Listener`): a task
        committed from then on wakes it (or the listener found that it cannot, and said so).
        """
        self._wake = asyncio.Event()
        self._force = asyncio.Event()
        try:
            registered = await self._open()
        except BaseException:
            self._executor.shutdown()
            raise
        if not registered:  # stopped while waiting for the database
            self._executor.shutdown()
            return self.counts
        self._pool = AsyncConnectionPool(
            self.dsn,
            min_size=1,
            max_size=4,
            open=False,
            name="pgtasq-worker",
            kwargs=connection_kwargs(prepare=self.settings.prepare),
        )
        self._writer = OutcomeWriter(
            pool=self._pool,
            stmts=self.stmts,
            worker_id=self.worker_id,
            counts=self.counts,
            flush_interval=self.settings.flush_interval,
            on_written=self._wake.set,  # room to claim again (see claim_room)
            metrics=self.metrics,
            on_record=self._observe_outcome if self.metrics.enabled else None,
        )
        self._progress = ProgressWriter(pool=self._pool, stmts=self.stmts, worker_id=self.worker_id)
        self._progress_record = self._progress.record  # one bound method, not one a task
        self._finisher = Finisher(
            writer=self._writer,
            records=self._records,
            on_error=self.on_error,
            is_failure=self.is_failure,
            retry_delay=self.retry_delay,
        )
        self._start_services()
        # A loop that stops stops the worker as a signal does; with no heartbeat, leases run
        # out, so then the handlers get no grace period.
        loops = BackgroundLoops(lambda name: self.request_stop(force=name == "heartbeat"))
        self._loops = loops
        try:
            # Not waiting: a pool whose first connection fails closes for good; the loops
            # wait for connections and retry on their own if the database went away again.
            await self._pool.open(wait=False)
            self._observe_slots()
            loops.start("heartbeat", self._heartbeat.run())
            loops.start("flush", self._writer.run())
            loops.start("progress", self._progress.run())
            loops.start("rescue", self._rescuer.run())
            loops.start("clean", self._cleaner.run())
            if self.settings.listen and not burst:
                listener = Listener(
                    dsn=self.settings.listen_dsn or self.dsn,
                    stmts=self.stmts,
                    queues=self.queue_names,
                    poll_interval=self.settings.poll_interval,
                    on_connected=self._more_ready,  # notifications may have been missed
                    on_checked=self._listener_checked,
                    on_notified=self._notified,
                )
                loops.start("listen", listener.run())
            else:
                self._listening = True  # polling only: nothing to wait for
            log.info(
                "worker %s started: queues %s, concurrency %d",
                self.worker_id,
                dict(self.settings.queues),
                self.settings.concurrency,
            )
            await self._claim_loop(burst)
            try:
                await self._shutdown()
            except Exception:
                if loops.crashed is None:
                    raise
                log.exception("shutdown failed too")  # WorkerCrashed below says why it began
        finally:
            await self._bounded("stopping the background loops", loops.close())
            unregistering = unregister(self._pool, self.stmts, self.worker_id, self._left())
            await self._bounded("unregistering", unregistering)
            await self._bounded("closing the pool", self._pool.close(timeout=self._left()))
            self._executor.shutdown()
            self._records.close()
            log.info("worker %s stopped: %s", self.worker_id, self.counts)
        if loops.crashed is not None:
            name, how, error = loops.crashed
            raise WorkerCrashed(name, how) from error
        return self.counts

    def _start_services(self) -> None:
        settings = self.settings
        self._heartbeat = Heartbeat(
            pool=self._pool,
            stmts=self.stmts,
            worker=self._worker_params,
            held=self._held,
            on_lost=self._lost,
            config=HeartbeatConfig(interval=settings.heartbeat_interval, lease=settings.lease),
            outage=self._outage,
        )
        self._rescuer = Rescuer(
            pool=self._pool,
            stmts=self.stmts,
            on_rescued=self._rescued,
            config=RescuerConfig(
                interval=settings.rescue_interval,
                stale_worker_after=max(STALE_WORKER_AFTER_DEFAULT, settings.lease * 2),
            ),
            outage=self._outage,
        )
        self._cleaner = Cleaner(
            pool=self._pool,
            stmts=self.stmts,
            config=CleanerConfig(
                interval=settings.clean_interval, retention_default=settings.retention_default
            ),
            outage=self._outage,
        )

    async def _open(self) -> bool:
        """Register (`pgtasq._registration.register`): False when a stop came first."""
        self._registered = await register(
            dsn=self.dsn,
            stmts=self.stmts,
            row=self._worker_params,
            outage=self._outage,
            stopping=lambda: self.stopping,
            pause=self._sleep_unless_stopping,
        )
        return self._registered

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        if not self.stopping:
            self._wake.clear()

    def _listener_checked(self) -> None:
        """LISTEN is in place and was checked (it works, or the worker is left to polling)."""
        self._listening = True
        self._check_ready()

    def waiting_for(self) -> list[str]:
        """What the worker has not done yet on its way to ready (see `run`)."""
        steps = {
            "registering": self._registered,
            "its first claim": self._polled,
            "LISTEN": self._listening,
        }
        return [step for step, done in steps.items() if not done]

    def _check_ready(self) -> None:
        if self._polled and self._listening and self._on_ready is not None:
            on_ready, self._on_ready = self._on_ready, None
            on_ready()

    # -- claiming -----------------------------------------------------------------------

    def _more_ready(self) -> None:
        """New tasks may be ready (a notification, a poll, a rescue): claim again."""
        self._plan.more_ready()
        self._wake.set()

    async def _claim_loop(self, burst: bool) -> None:
        """Make the claims the planner plans (`ClaimPlanner`) until stopped or drained."""
        if burst:
            await self._rescuer.try_once()
        poll_interval = self.settings.poll_interval
        while not self.stopping:
            self._wake.clear()
            self._issue_claims()
            if burst:
                step = self._plan.burst_step(
                    running=len(self.running), recorded=self._writer.recorded
                )
                if step is Burst.DONE:
                    break
                if step is Burst.CONFIRM:
                    await self._writer.flush_all()
                    continue
            try:
                await asyncio.wait_for(self._wake.wait(), poll_interval)
            except asyncio.TimeoutError:
                self._more_ready()
        if self._claims:
            claims = asyncio.gather(*self._claims, return_exceptions=True)
            await self._bounded("waiting for claims in flight", claims, self._left())

    def _issue_claims(self, low_water: int | None = None) -> None:
        plan = self._plan.plan
        while not self.stopping:
            claim = plan(
                running=len(self.running),
                unwritten=len(self._writer.unflushed),
                low_water=low_water,
            )
            if claim is None:
                break
            task = asyncio.create_task(self._claim_batch(claim))
            self._claims.add(task)
            task.add_done_callback(self._claims.discard)

    def _notified(self) -> None:
        """A NOTIFY for one of our queues: claim right away, without a trip through the loop."""
        self._more_ready()
        if self._plan.in_flight == 0 and not self.running:
            self._issue_claims(1)

    async def _claim_batch(self, claim: Claim) -> None:
        got: int | None = None
        try:
            try:
                claimed = await self._claim(claim.want)
                self._claim_backoff.reset()
                self._outage.back()
                self.metrics.database_ok()
            except RETRYABLE as exc:
                self._outage.lost(exc)
                self.metrics.database_error("claim")
                await asyncio.sleep(self._claim_backoff.next())
                return
            for info in claimed:
                self._start(info)
            got = len(claimed)
            if not self._polled:
                self._polled = True
                self._check_ready()
        except Exception as exc:
            # Not a lost database: a missing table, a revoked privilege, a bug. Claiming
            # again would fail again at once, so the worker stops as when a loop dies.
            self._loops.crash("claim", exc)
        finally:
            self._plan.claimed(claim, got)
            self._wake.set()

    async def _claim(self, limit: int) -> list[TaskInfo]:
        rows: list[dict[str, Any]] = []
        order = queue_order(self.settings.queues, self.settings.strict)
        async with self._pool.connection() as conn:
            if len(order) >= PROBE_QUEUES_MIN:
                probe = {"queues": order, "types": self.types}
                ready = {row["name"] for row in await fetch(conn, self.stmts.queue_ready, probe)}
                order = [queue for queue in order if queue in ready]
            for queue in order:
                params = {
                    "queue": queue,
                    "types": self.types,
                    "limit": limit - len(rows),
                    "worker": self.worker_id,
                    "lease": self.settings.lease,
                }
                rows.extend(await fetch(conn, self.stmts.task_claim, params))
                if len(rows) >= limit:
                    break
        self.counts.claimed += len(rows)
        self.metrics.claimed(len(rows))
        infos = []
        for row in rows:
            try:
                infos.append(TaskInfo.from_row(row))
            except Exception as exc:  # a payload nested too deep for Python's parser, …
                self._finisher.unreadable(row, exc)
        return infos

    def _start(self, info: TaskInfo) -> None:
        ctx = TaskContext(
            info,
            worker_id=self.worker_id,
            stmts=self.stmts,
            threaded=info.type in self._threaded,
            progress=self._progress_record,
        )
        entry = _Running(ctx)
        self.running[info.id] = entry
        if self.metrics.enabled:
            entry.started = time.perf_counter()
            self.metrics.task_started(info.queue, info.type, info.run_at, ctx.claimed_at)
            self._observe_slots()
        tracer = self._tracing.tracer() if TRACING else None
        if tracer is not None:
            # Only now: a worker without tracing makes no call per outcome for it.
            self._writer.on_record = self._observe_outcome
            entry.task = asyncio.create_task(self._traced(entry, tracer))
        else:
            entry.task = asyncio.create_task(self._execute(entry))

    # -- running one task ---------------------------------------------------------------

    def _cancel(self, entry: _Running, reason: str) -> None:
        if entry.cancel_reason is None:
            entry.cancel_reason = reason
        entry.ctx.cancelled.set()
        if entry.task is not None and not entry.finishing:
            entry.task.cancel()

    async def _traced(self, entry: _Running, tracer: Any) -> None:
        """`_execute` in the attempt's consumer span (see `pgtasq._tracing`)."""
        ctx = entry.ctx
        info = ctx.info
        span, token = self._tracing.start_processing(
            tracer,
            task_id=info.id,
            queue=info.queue,
            task_type=info.type,
            attempt=info.attempts,
            headers=info.headers,
        )
        entry.span = span
        try:
            await self._execute(entry)
        finally:
            outcome = entry.outcome
            if outcome is None:  # nothing queued for the writer to record
                lost = entry.cancel_reason == "lost"
                outcome = "completed" if ctx.completed_in_transaction else "released"
                outcome = "cancelled" if lost else outcome
            self._tracing.end_processing(span, token, outcome, entry.error)

    async def _execute(self, entry: _Running) -> None:
        ctx = entry.ctx
        info = ctx.info
        limit = None
        if info.timeout is not None or info.deadline is not None:
            limit = time_limit(info, datetime.now(timezone.utc))
        if limit == 0.0 and info.deadline is not None:
            entry.finishing = True
            try:
                passed = SkipRetry(f"deadline {info.deadline.isoformat()} passed")
                await self._finisher.failed(ctx, passed)
            finally:
                if self.running.get(info.id) is entry:
                    del self.running[info.id]
                self._wake.set()
            return
        timer = (
            asyncio.get_running_loop().call_later(limit, self._cancel, entry, "timeout")
            if limit is not None
            else None
        )
        try:
            try:
                result = await self._chains[info.type](ctx)
            finally:  # its last progress goes before its outcome (the fence would refuse it)
                ctx.progress_sink = None
                if info.id in self._progress.unwritten:
                    await self._progress.settle(info.id)
        except asyncio.CancelledError:
            entry.finishing = True
            if entry.cancel_reason == "timeout":
                entry.error = TaskTimeout(info.id, limit or 0.0)
                await self._finisher.failed(ctx, entry.error)
            else:  # a shutdown; or lost: someone else owns the task now, nothing is written
                self._finisher.released(ctx, lost=entry.cancel_reason == "lost")
        except RetryIn as exc:
            entry.finishing = True
            self._finisher.retry_in(ctx, exc)
        except Exception as exc:
            entry.finishing = True
            entry.error = exc
            await self._finisher.failed(ctx, exc)
        else:
            entry.finishing = True
            if timer is not None:
                timer.cancel()  # the handler finished in time, however long storing takes
            finisher = self._finisher
            if (
                entry.cancel_reason != "lost"
                and not ctx.completed_in_transaction
                and not finisher.completed_now(ctx, result)
            ):
                await finisher.completed(ctx, result, lambda: entry.cancel_reason == "lost")
        finally:
            if timer is not None:
                timer.cancel()
            if self.running.get(info.id) is entry:  # not a newer claim of the same task
                del self.running[info.id]
            if self.metrics.enabled:
                self.metrics.task_ended(info.queue, info.type, time.perf_counter() - entry.started)
                self._observe_slots()
            self._wake.set()

    # -- shutdown -----------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self.running:
            loop = asyncio.get_running_loop()

            def waiting_left() -> float:  # counted from the stop request, not from here
                return self._deadline.waiting_left(loop.time())

            log.info(
                "waiting up to %.0f s for %d running tasks",
                max(0.0, waiting_left()),
                len(self.running),
            )
            force = asyncio.create_task(self._force.wait())
            while self.running and not self._force.is_set():
                left = waiting_left()
                if left <= 0:
                    break
                pending = [e.task for e in self.running.values() if e.task is not None]
                await asyncio.wait(
                    [*pending, force], timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            force.cancel()
            for entry in list(self.running.values()):
                self._cancel(entry, "shutdown")
            still = [e.task for e in self.running.values() if e.task is not None]
            if still:
                log.debug("shutdown: cancelled %d handlers", len(still))
                await asyncio.wait(still, timeout=max(0.1, min(5.0, self._left() - 1.0)))
        await self._bounded("writing the outcomes", self._writer.flush_all())

    # -- what the services ask and tell ---------------------------------------------------

    def _held(self) -> dict[int, datetime]:
        """The tasks whose leases the heartbeat keeps: running, or with the outcome unwritten."""
        held = {i: e.ctx.claimed_at for i, e in self.running.items()}
        held.update(self._writer.unflushed)
        return held

    def _lost(self, task_id: int, claimed_at: datetime) -> None:
        entry = self.running.get(task_id)
        # Only the claim we asked about: the task may have been claimed again since.
        if entry is not None and entry.ctx.claimed_at == claimed_at:
            log.warning("task %s was cancelled or taken away; cancelling its handler", task_id)
            self.metrics.task_outcome(entry.ctx.info.queue, entry.ctx.info.type, "cancelled")
            self._cancel(entry, "lost")

    def _observe_outcome(self, outcome: Outcome) -> None:
        entry = self.running.get(outcome.id)  # still there: recorded before the handler ends
        if entry is not None:
            info = entry.ctx.info
            name = _OUTCOME_NAMES[outcome.status]
            if entry.span is not None:
                entry.outcome = name
            if self.metrics.enabled:
                self.metrics.task_outcome(info.queue, info.type, name)

    def _observe_slots(self) -> None:
        running = len(self.running)
        self.metrics.slots(running, max(0, self.settings.concurrency - running))

    def _rescued(self, count: int) -> None:
        self.counts.rescued += count
        self.metrics.tasks_rescued(count)
        self._more_ready()
