"""`Consumer`: register handlers per task type, then run them as a worker.

::

    consumer = Consumer(queues={"critical": 6, "default": 3, "low": 1})

    @consumer.task("email.send")
    async def send(ctx):
        await mailer.send(**ctx.payload)

    consumer.run(dsn)            # blocks; SIGINT/SIGTERM shut down gracefully

Embedded in an application, ``consumer.start(dsn)`` runs it on a thread of its own and
returns once it is ready; in an event loop, run `Consumer.arun` as a task and ``await
consumer.ready()``. Ready means registered, listening (a task committed from then on wakes
it at once; or, behind a PgBouncer in transaction mode, found to be left to polling) and
done with its first claim.

Delivery is at least once: a task whose worker dies, or loses the database for longer than
its lease, runs again elsewhere. Make handlers idempotent, or complete them inside their own
transaction (`TaskContext.complete`) so their effects and the completion commit together.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pgtasq import _dsn, _supervisor
from pgtasq._claims import queue_order
from pgtasq._limits import text_problem
from pgtasq._observe import Recorder
from pgtasq._outcomes import Counts
from pgtasq._records import RESULT_MAX_BYTES_DEFAULT
from pgtasq._runtime import Engine
from pgtasq._services import CLEAN_INTERVAL_DEFAULT, LEASE_DEFAULT, RETENTION_DEFAULT
from pgtasq._settings import Queues, Settings
from pgtasq._teardown import TEARDOWN_MARGIN
from pgtasq.context import ErrorHook, Handler, Middleware, TaskContext
from pgtasq.errors import ConfigurationError, DatabaseUnavailable
from pgtasq.models import NAME_MAX_LENGTH, QUEUE_DEFAULT, Seconds, TaskInfo
from pgtasq.retry import RetryDelay, default_retry_delay
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name
from pgtasq.task_types import TaskType
from pgtasq.task_types import task_type as declare

# The lease, heartbeat, rescue and clean defaults are the services' (pgtasq._services); a
# heartbeat or rescue interval left to None is derived from the lease (pgtasq._settings).
CONCURRENCY_DEFAULT = 200
BATCH_SIZE_DEFAULT = 100
POLL_INTERVAL_DEFAULT = 1.0
FLUSH_INTERVAL_DEFAULT = 0.002
SHUTDOWN_TIMEOUT_DEFAULT = 30.0
WATCHDOG_GRACE = 1.0  # past the teardown deadline, before run() ends the process
READY_TIMEOUT_DEFAULT = 30.0  # seconds start() and ready() wait for the worker to be ready

log = logging.getLogger("pgtasq.consumer")

H = TypeVar("H", bound=Handler)

__all__ = ["Consumer", "Counts", "TaskContext", "queue_order"]


class Consumer:
    """Runs handlers for the task types registered on it. See the module docstring."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = SCHEMA_DEFAULT,
        queues: Queues = QUEUE_DEFAULT,
        strict: bool = False,
        concurrency: int = CONCURRENCY_DEFAULT,
        batch_size: int = BATCH_SIZE_DEFAULT,
        lease: float = LEASE_DEFAULT,
        heartbeat_interval: float | None = None,
        poll_interval: float = POLL_INTERVAL_DEFAULT,
        flush_interval: float = FLUSH_INTERVAL_DEFAULT,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT_DEFAULT,
        rescue_interval: float | None = None,
        listen: bool = True,
        clean_interval: float = CLEAN_INTERVAL_DEFAULT,
        retention_default: float = RETENTION_DEFAULT,
        events: bool = False,
        result_max_bytes: int = RESULT_MAX_BYTES_DEFAULT,
        listen_dsn: str | None = None,
        prepare: bool = True,
        on_error: ErrorHook | None = None,
        is_failure: Callable[[BaseException], bool] = lambda exc: True,
        retry_delay: RetryDelay = default_retry_delay,
        metrics: Recorder | None = None,
        tracer_provider: Any = None,
    ) -> None:
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self.handlers: dict[str, Handler] = {}
        self.task_types: dict[str, TaskType[Any]] = {}  # the declared ones (`task`)
        self._middleware: list[Middleware] = []
        self.on_error = on_error
        self.is_failure = is_failure
        self.retry_delay = retry_delay
        self.metrics = metrics  # pgtasq.metrics.WorkerMetrics(): count what the worker does
        self.tracer_provider = tracer_provider  # OpenTelemetry's; None: the global one
        # What was given; None leaves heartbeat_interval and rescue_interval to the lease.
        self._options: dict[str, Any] = {
            "queues": queues,
            "strict": strict,
            "concurrency": concurrency,
            "batch_size": batch_size,
            "lease": lease,
            "heartbeat_interval": heartbeat_interval,
            "poll_interval": poll_interval,
            "flush_interval": flush_interval,
            "shutdown_timeout": shutdown_timeout,
            "rescue_interval": rescue_interval,
            "listen": listen,
            "clean_interval": clean_interval,
            "retention_default": retention_default,
            "events": events,
            "result_max_bytes": result_max_bytes,
            "listen_dsn": listen_dsn,
            "prepare": prepare,
        }
        self.settings = Settings.build(**self._options)
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_result: Counts | BaseException | None = None
        self._signals = 0  # SIGINT/SIGTERM received while run() runs
        self._exit_at: float | None = None  # monotonic time the watchdog ends the process at
        self._ready: asyncio.Future[None] | None = None  # of the current (or next) arun
        self._ready_hooks: list[Callable[[], None]] = []  # start()'s, called when ready

    def configure(self, **options: Any) -> None:
        """Change settings before running (the CLI's --queues, --lease, …); None keeps a
        setting as it is. Checked as a whole: raises `ConfigurationError`, and then nothing
        changed."""
        unknown = options.keys() - self._options.keys()
        if unknown:
            raise TypeError(f"unknown consumer settings: {sorted(unknown)}")
        merged = {**self._options, **{k: v for k, v in options.items() if v is not None}}
        self.settings = Settings.build(**merged)
        self._options = merged

    # -- registration -------------------------------------------------------------------

    def register(self, task_type: str, handler: Handler) -> None:
        """Run ``handler(ctx)`` for tasks of ``task_type``."""
        if (
            not isinstance(task_type, str)
            or not task_type
            or len(task_type) > NAME_MAX_LENGTH
            or text_problem(task_type) is not None
        ):
            raise ConfigurationError(f"invalid task type {task_type!r}")
        if not callable(handler):
            raise TypeError(f"handler for {task_type!r} is not callable")
        if task_type in self.handlers:
            raise ConfigurationError(f"a handler for {task_type!r} is already registered")
        self.handlers[task_type] = handler

    def task(
        self,
        task_type: str | TaskType[Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: Seconds | None = None,
        retention: Seconds | None = None,
        retry: RetryDelay | float | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of `register`: ``@consumer.task("email.send")``.

        With options it declares the type too (`pgtasq.task_types.task_type`; kept in
        ``consumer.task_types``): ``retry`` is this type's ``retry_delay`` (a function, or
        fixed seconds), the others are enqueue defaults for tasks made through the
        declaration. ``@consumer.task(email_send)`` binds the handler to a `TaskType`
        declared elsewhere, options and all.
        """
        options = {
            "queue": queue,
            "priority": priority,
            "max_attempts": max_attempts,
            "timeout": timeout,
            "retention": retention,
            "retry": retry,
        }
        if isinstance(task_type, TaskType):
            if any(v is not None for v in options.values()):
                raise TypeError("the options of a TaskType are given to task_type(), not here")
            declared: TaskType[Any] | None = task_type
        elif any(v is not None for v in options.values()):
            declared = declare(
                task_type,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                timeout=timeout,
                retention=retention,
                retry=retry,
            )
        else:
            declared = None
        name = declared.name if declared is not None else task_type

        def decorate(handler: H) -> H:
            assert isinstance(name, str)
            self.register(name, handler)
            if declared is not None:
                self.task_types[name] = declared
            return handler

        return decorate

    def _retry_delay(self) -> RetryDelay:
        """The consumer's ``retry_delay``, or each declared type's own where it has one."""
        own = {name: t.retry for name, t in self.task_types.items() if t.retry is not None}
        if not own:
            return self.retry_delay
        default = self.retry_delay

        def by_type(info: TaskInfo, exc: BaseException) -> float:
            return own.get(info.type, default)(info, exc)

        return by_type

    def middleware(self, mw: Middleware) -> Middleware:
        """Wrap every handler: ``async def mw(ctx, call_next): return await call_next(ctx)``.

        The first registered is the outermost. Usable as a decorator.
        """
        self._middleware.append(mw)
        return mw

    # -- running ------------------------------------------------------------------------

    def _new_engine(self, dsn: str | None, on_ready: Callable[[], None]) -> Engine:
        dsn = dsn or self.dsn
        if not dsn:
            raise ConfigurationError("no DSN: pass one to Consumer(dsn) or to run(dsn)")
        if not self.handlers:
            raise ConfigurationError("no handlers registered: use @consumer.task('type')")
        return Engine(
            dsn=_dsn.normalize(dsn),
            schema=self.schema,
            settings=self.settings,
            handlers=dict(self.handlers),
            middleware=list(self._middleware),
            on_error=self.on_error,
            is_failure=self.is_failure,
            retry_delay=self._retry_delay(),
            metrics=self.metrics,
            on_ready=on_ready,
            tracer_provider=self.tracer_provider,
        )

    async def arun(self, dsn: str | None = None, *, burst: bool = False) -> Counts:
        """Run in the current event loop until `stop()` (or, with ``burst``, until drained).

        If one of the worker's background loops stops on an error, or a claim fails (a bug,
        a missing table, a revoked privilege: not a lost database), the worker shuts down as
        on a signal and this raises `WorkerCrashed`.
        """
        if self._engine is not None:
            raise RuntimeError("this consumer is already running")
        loop = asyncio.get_running_loop()
        if self._ready is None or self._ready.get_loop() is not loop:
            self._ready = loop.create_future()
        ready = self._ready
        try:
            engine = self._new_engine(dsn, lambda: self._became_ready(ready))
            self._engine = engine
            self._loop = loop
            try:
                return await engine.run(burst=burst)
            finally:
                self._engine = None
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else _stopped())
                ready.exception()  # retrieved: nobody need be waiting
            raise
        finally:
            if not ready.done():  # a burst, or a stop, that ended before ready
                ready.set_exception(_stopped())
                ready.exception()
            self._ready = None

    def _became_ready(self, ready: asyncio.Future[None]) -> None:
        if not ready.done():
            ready.set_result(None)
        for hook in tuple(self._ready_hooks):  # start() removes its own from another thread
            hook()

    async def ready(self, timeout: float | None = READY_TIMEOUT_DEFAULT) -> None:
        """Wait until the consumer running (or about to run) `arun` in this event loop is
        ready: registered, listening, its first claim done. A task committed after this
        returns wakes it at once (unless it only polls: ``listen=False``).

        ::

            worker = asyncio.create_task(consumer.arun(dsn))
            await consumer.ready()

        Raises what ended `arun` if it ended first (`RuntimeError` if it ended without
        error, as a stop or a drained burst do), and `DatabaseUnavailable` after
        ``timeout`` seconds (None waits for as long as it takes).
        """
        loop = asyncio.get_running_loop()
        if self._ready is None or (self._ready.get_loop() is not loop and self._engine is None):
            self._ready = loop.create_future()
        ready = self._ready
        if ready.get_loop() is not loop:
            raise RuntimeError("ready() must be awaited in the event loop the consumer runs in")
        try:
            await asyncio.wait_for(asyncio.shield(ready), timeout)
        except asyncio.TimeoutError:
            raise self._not_ready(timeout) from None

    def _not_ready(self, timeout: float | None) -> DatabaseUnavailable:
        engine = self._engine
        steps = engine.waiting_for() if engine is not None else ["starting"]
        return DatabaseUnavailable(
            f"the consumer was not ready within {timeout:g} s "
            f"(still waiting for: {', '.join(steps)}); is the database reachable?"
        )

    def run(
        self, dsn: str | None = None, *, burst: bool = False, handle_signals: bool = True
    ) -> Counts:
        """Run until SIGINT/SIGTERM (graceful; a second signal stops at once).

        ``burst=True`` drains the tasks that are ready, then returns the counts. Raises
        `WorkerCrashed` as `arun` does.

        With ``handle_signals`` (in the main thread) this owns the process's stop: SIGUSR1
        and SIGUSR2 (what ``pgtasq worker --processes N`` sends) also ask for a graceful
        and a fast stop unless the application handles them, and a watchdog ends the
        process (exit code 1) if stopping takes longer than ``shutdown_timeout`` + 6 s.
        """
        own_signals = handle_signals and threading.current_thread() is threading.main_thread()

        async def main() -> Counts:
            if not own_signals:
                return await self.arun(dsn, burst=burst)
            previous = self._handle_signals(asyncio.get_running_loop())
            try:
                return await self.arun(dsn, burst=burst)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        done = threading.Event()
        if own_signals:
            self._signals, self._exit_at = 0, None
            threading.Thread(
                target=self._watchdog, args=(done,), name="pgtasq-watchdog", daemon=True
            ).start()
        try:
            return asyncio.run(main())
        finally:
            done.set()

    def _handle_signals(self, loop: asyncio.AbstractEventLoop) -> dict[int, Any]:
        """Install the stop signals' handlers; return the ones they replace.

        Plain signal handlers, not the loop's: they run in the main thread between two
        bytecodes even while a handler blocks the event loop, so the teardown deadline is
        armed whatever the loop is doing. SIGINT/SIGTERM are counted: the first asks for a
        graceful stop, the second for a fast one. SIGUSR1 (graceful) and SIGUSR2 (fast) are
        what ``pgtasq worker --processes N`` sends its children: not counted, so a graceful
        request to a worker that is already stopping changes nothing. They are handled
        only if the application has not taken them.
        """

        def on_signal(signum: int, frame: object) -> None:
            if signum in (signal.SIGINT, signal.SIGTERM):
                self._signals += 1
                force = self._signals > 1
            else:
                force = signum == _supervisor.FAST
            limit = (0.0 if force else self.settings.shutdown_timeout) + TEARDOWN_MARGIN
            exit_at = time.monotonic() + limit + WATCHDOG_GRACE
            if self._exit_at is None or exit_at < self._exit_at:
                self._exit_at = exit_at
            loop.call_soon_threadsafe(self._request_stop, force)

        signals = [signal.SIGINT, signal.SIGTERM]
        for sig in (_supervisor.GRACEFUL, _supervisor.FAST):
            if signal.getsignal(sig) in (signal.SIG_DFL, _supervisor.exit_quietly):
                signals.append(sig)
        return {sig: signal.signal(sig, on_signal) for sig in signals}

    def _request_stop(self, force: bool) -> None:
        if self._engine is not None:
            self._engine.request_stop(force=force)

    def _watchdog(self, done: threading.Event) -> None:
        """The process exits at the teardown deadline whatever still runs (a handler that
        blocks the event loop, a connection that hangs): one overall bound on stopping."""
        while not done.wait(0.2):
            exit_at = self._exit_at
            if exit_at is not None and time.monotonic() > exit_at:
                log.error("the worker did not finish stopping in time; exiting now")
                logging.shutdown()
                os._exit(1)

    def start(
        self, dsn: str | None = None, *, ready_timeout: float | None = READY_TIMEOUT_DEFAULT
    ) -> None:
        """Run in a background thread (for embedding in a sync application); return once
        the consumer is ready: registered, listening, its first claim done (see `ready`).

        Raises what stopped the consumer if it stopped before (such as
        `DatabaseMisconfigured`), or `DatabaseUnavailable` if it is not ready within
        ``ready_timeout`` seconds (None waits for as long as it takes); then it is stopped,
        and nothing runs in the background.
        """
        if self._thread is not None:
            raise RuntimeError("this consumer is already started")
        ready = threading.Event()
        ended = threading.Event()
        self._ready_hooks.append(ready.set)

        def target() -> None:
            try:
                self._thread_result = asyncio.run(self.arun(dsn))
            except BaseException as exc:
                self._thread_result = exc
            finally:
                ended.set()
                ready.set()

        thread = threading.Thread(target=target, name="pgtasq-consumer", daemon=True)
        self._thread = thread
        try:
            thread.start()
            in_time = ready.wait(ready_timeout)
        finally:
            self._ready_hooks.remove(ready.set)
        if ended.is_set():  # it stopped before it was ready: say why
            self._thread = None
            thread.join()
            if isinstance(self._thread_result, BaseException):
                raise self._thread_result
            raise RuntimeError("the consumer stopped before it was ready")
        if not in_time:
            error = self._not_ready(ready_timeout)
            try:
                self.stop(force=True, timeout=TEARDOWN_MARGIN + WATCHDOG_GRACE)
            except Exception as stopped:
                raise error from stopped
            raise error

    def stop(self, *, force: bool = False, timeout: float | None = None) -> Counts | None:
        """Ask a running consumer to stop; when started with `start()`, wait for it and
        return its counts (or raise what ended it, such as `WorkerCrashed`). Safe to call
        from any thread or from a handler."""
        engine, loop = self._engine, self._loop
        if engine is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: engine.request_stop(force=force))
        thread = self._thread
        if thread is None:
            return None
        thread.join(timeout)
        if thread.is_alive():
            return None
        self._thread = None
        result = self._thread_result
        if isinstance(result, BaseException):
            raise result
        return result


def _stopped() -> RuntimeError:
    return RuntimeError("the consumer stopped before it was ready")
