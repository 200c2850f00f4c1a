"""Threads for sync handlers (see `DaemonExecutor`)."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

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
