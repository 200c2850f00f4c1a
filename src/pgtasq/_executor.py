"""How handlers are called: the middleware chain around each, and the threads that sync
handlers run on (`DaemonExecutor`)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

from pgtasq.context import CallNext, Handler, Middleware, TaskContext

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class DaemonExecutor(Executor):
    """Threads for sync handlers, as daemon threads.

    A handler that ignores ``ctx.cancelled`` cannot be stopped from outside its thread; at
    shutdown its task is handed back, and a daemon thread does not keep the process alive
    (``concurrent.futures`` joins its threads at exit, so a worker would hang there while the
    task it gave back runs elsewhere).
    """

    def __init__(self, max_workers: int) -> None:
        self._max = max_workers
        self._work: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ]
        self._work = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if kwargs:
            args = (functools.partial(fn, **kwargs), *args)
            fn = _call_first
        future: Future[Any] = Future()
        with self._lock:
            if self._idle == 0 and len(self._threads) < self._max:
                thread = threading.Thread(target=self._serve, name="pgtasq-task", daemon=True)
                self._threads.append(thread)
                self._idle += 1
                thread.start()
            self._idle -= 1
        self._work.put((future, fn, args))
        return future

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = False) -> None:
        for _ in self._threads:
            self._work.put(None)


def _call_first(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def is_async(handler: Handler) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )


def handler_chain(
    handler: Handler, middleware: Sequence[Middleware], executor: Executor
) -> CallNext:
    """``handler`` wrapped in ``middleware`` (the first is the outermost), as one coroutine
    function. An async handler runs on the loop; a sync one on ``executor``, in a copy of
    the caller's context variables."""
    call_async = is_async(handler)
    if call_async and not middleware:
        return handler  # as is: one coroutine less per task

    async def innermost(ctx: TaskContext) -> Any:
        if call_async:
            return await handler(ctx)
        loop = asyncio.get_running_loop()
        run = contextvars.copy_context().run
        return await loop.run_in_executor(executor, run, handler, ctx)

    call: CallNext = innermost
    for mw in reversed(middleware):
        call = _wrap(mw, call)
    return call


def _wrap(mw: Middleware, call_next: CallNext) -> CallNext:
    async def call(ctx: TaskContext) -> Any:
        return await mw(ctx, call_next)

    return call
