"""Progress while running: what `TaskContext.set_progress` reports, checked and written.

A handler may call ``ctx.set_progress(value, note=None)`` as often as it likes, from the
event loop or from its thread. The call checks the value (`progress_text`: a
`TaskValidationError` for a bad one, before any SQL) and only records it in memory; the
worker's `ProgressWriter` writes what was recorded in one statement for all of its tasks
(`task_progress_many`), at most once per `PROGRESS_INTERVAL_DEFAULT` seconds, so a task's
row is written at most that often whatever the handler does, and the latest value is
always written: a value recorded while a write is under way goes in the next one, and the
one left when the handler ends is written before its outcome (`settle`).

Every write carries the ownership fence: the progress of a task this worker lost changes
nothing (and is dropped; the heartbeat tells the handler, as for any lost task). A database
error never reaches the handler: it is logged once, the values stay recorded, and the next
round writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasq._database import RETRYABLE, Backoff, LogOnce, fetch, short_error
from pgtasq._limits import json_problem, text_problem
from pgtasq.errors import TaskValidationError

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from pgtasq import _sql

log = logging.getLogger("pgtasq.consumer")

# At most one progress write per task per this many seconds.
PROGRESS_INTERVAL_DEFAULT = 0.5
# What one report may take: the whole of it (value and note) as compact UTF-8 JSON text;
# and a note alone, in characters.
PROGRESS_MAX_BYTES = 8192
PROGRESS_NOTE_MAX_LENGTH = 1000
# How long a handler's end waits for its last progress to be written (`settle`): the
# outcome comes next, and a database that is away must not hold the slot for long.
SETTLE_TIMEOUT = 5.0


def progress_text(value: Any, note: str | None) -> str:
    """What `TaskContext.set_progress` stores, as JSON text: ``{"value": ..., "note": ...}``.

    ``value`` is a fraction done, a finite number from 0 to 1 (not a bool), or a JSON object
    (a dict with string keys, of dicts, lists, strings, numbers, booleans and None, read
    back as given); ``note`` None or a string of at most
    `PROGRESS_NOTE_MAX_LENGTH` characters; the two together at most `PROGRESS_MAX_BYTES` of
    JSON. Anything else: `TaskValidationError`.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not (isinstance(value, int) or math.isfinite(value)) or not 0 <= value <= 1:
            raise TaskValidationError("progress", f"must be from 0 to 1, got {value!r}")
        shown: Any = float(value)
    elif isinstance(value, dict):
        shown = value
    else:
        raise TaskValidationError(
            "progress",
            f"must be a number from 0 to 1 or a JSON object (dict), got {type(value).__name__}",
        )
    if note is not None:
        if not isinstance(note, str):
            raise TaskValidationError("progress", f"note must be a str, got {type(note).__name__}")
        if len(note) > PROGRESS_NOTE_MAX_LENGTH:
            raise TaskValidationError(
                "progress", f"note is longer than {PROGRESS_NOTE_MAX_LENGTH} characters"
            )
        problem = text_problem(note)
        if problem is not None:
            raise TaskValidationError("progress", f"note {problem}")
    try:
        text = json.dumps(
            {"value": shown, "note": note},
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except RecursionError:
        raise TaskValidationError("progress", "nests too deep") from None
    except (TypeError, ValueError) as exc:
        raise TaskValidationError("progress", f"is not JSON-serializable: {exc}") from None
    problem = json_problem(text)
    if problem is not None:
        raise TaskValidationError("progress", problem)
    size = len(text.encode())
    if size > PROGRESS_MAX_BYTES:
        raise TaskValidationError(
            "progress", f"is {size} bytes of JSON, over the limit of {PROGRESS_MAX_BYTES}"
        )
    if isinstance(value, dict) and json.loads(text)["value"] != value:
        # json.dumps makes keys of other types strings and tuples lists: what a reader gets
        # back would not be what the handler reported
        raise TaskValidationError(
            "progress",
            "must be plain JSON: a dict with string keys, of dicts, lists, strings, numbers, "
            "booleans and None",
        )
    return text


class ProgressWriter:
    """The progress a worker's handlers recorded, and the loop that writes it.

    `record` may be called from any thread; the rest runs on the worker's event loop.
    """

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        stmts: _sql.Statements,
        worker_id: str,
        interval: float = PROGRESS_INTERVAL_DEFAULT,
    ) -> None:
        self.pool = pool
        self.stmts = stmts
        self.worker_id = worker_id
        self.interval = interval
        self.written = 0  # rows written so far (tests and logs)
        # id -> (claim time, JSON text): the latest unwritten value of each task
        self.unwritten: dict[int, tuple[datetime, str]] = {}
        self._lock = threading.Lock()  # handler threads record while the loop takes
        self._writing = asyncio.Lock()  # one write at a time: a later value lands last
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._log_once = LogOnce(log)

    def record(self, task_id: int, claimed_at: datetime, text: str) -> None:
        """Keep ``text`` as the task's latest progress, to be written (any thread)."""
        with self._lock:
            first = not self.unwritten
            self.unwritten[task_id] = (claimed_at, text)
        if first:  # the loop is told once per round, not once per call
            with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is gone
                self._loop.call_soon_threadsafe(self._wake.set)

    def _take(self, only: int | None = None) -> dict[int, tuple[datetime, str]]:
        with self._lock:
            if only is None:
                taken, self.unwritten = self.unwritten, {}
            else:
                one = self.unwritten.pop(only, None)
                taken = {} if one is None else {only: one}
        return taken

    def _put_back(self, taken: dict[int, tuple[datetime, str]]) -> None:
        """Values a failed write took, unless a newer one was recorded meanwhile."""
        with self._lock:
            for task_id, value in taken.items():
                self.unwritten.setdefault(task_id, value)

    async def run_once(self, only: int | None = None) -> int:
        """Write what is recorded (of task ``only``, or of all); the rows written. On a
        database error the values stay recorded and the error is raised."""
        async with self._writing:
            taken = self._take(only)
            if not taken:
                return 0
            params = {
                "worker": self.worker_id,
                "id": list(taken),
                "claimed_at": [claimed_at for claimed_at, _ in taken.values()],
                "progress": [text for _, text in taken.values()],
            }
            try:
                async with self.pool.connection() as conn:
                    rows = await fetch(conn, self.stmts.task_progress_many, params)
            except BaseException:
                self._put_back(taken)
                raise
            self.written += len(rows)
            return len(rows)

    async def settle(self, task_id: int) -> None:
        """Write the task's last unwritten value, if any (its handler has ended: before the
        outcome, which the fence would then refuse it after). Never raises: a value that
        cannot be written within `SETTLE_TIMEOUT` is dropped, as its attempt is over."""
        if task_id not in self.unwritten:
            return
        try:
            await asyncio.wait_for(self.run_once(task_id), SETTLE_TIMEOUT)
        except Exception as exc:
            self._take(task_id)
            self._log_once(
                "settle",
                logging.WARNING,
                "writing the last progress of task %s failed (%s); dropped",
                task_id,
                short_error(exc),
            )

    async def run(self) -> None:
        """Write what is recorded, at most once per ``interval`` seconds; forever."""
        backoff = Backoff()
        last = -math.inf
        while True:
            await self._wake.wait()
            wait = last + self.interval - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # values recorded meanwhile join this write
            self._wake.clear()
            last = self._loop.time()
            try:
                await self.run_once()
                backoff.reset()
            except (*RETRYABLE, psycopg.Error) as exc:
                # A handler is never told: its values wait for the next round.
                self._log_once(
                    f"progress:{type(exc).__name__}",
                    logging.WARNING,
                    "writing task progress failed (%s); retrying (logged once per error)",
                    short_error(exc),
                )
                await asyncio.sleep(backoff.next())
                self._wake.set()
