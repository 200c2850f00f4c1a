"""What a finished handler leads to: the outcome its task gets, decided from what the handler
returned or raised, with everything it hands over made safe to store.

`RecordMaker` turns a result or an exception into what a row can hold (`pgtasq._records`),
off the event loop when that is more than a few fields of work. `Finisher` calls the user's
hooks (``on_error``, ``is_failure``, ``retry_delay``) without letting them raise, hands what
they and the records say to the outcome policy (`pgtasq._policy.decide`: completed, failed,
retried, and after which delay) and queues the write it returns on the `OutcomeWriter`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pgtasq._database import LogOnce, short_error
from pgtasq._executor import DaemonExecutor
from pgtasq._outcomes import Outcome, OutcomeRejected, OutcomeWriter, clamp_delay
from pgtasq._policy import (
    CANCELLED,
    LOST,
    RAISED,
    RETRY_IN,
    RETURNED,
    TIMED_OUT,
    Ended,
    decide,
    returned,
)
from pgtasq._records import (
    INLINE_BUDGET,
    Prepared,
    dump_entry,
    error_entry,
    error_text,
    formats_quickly,
    note_entry,
    prepare_result,
)
from pgtasq.errors import RetryIn, SkipRetry, TaskTimeout, TaskValidationError

if TYPE_CHECKING:
    from pgtasq.context import ErrorHook, TaskContext
    from pgtasq.models import TaskInfo
    from pgtasq.retry import RetryDelay

log = logging.getLogger("pgtasq.consumer")


class RecordMaker:
    """Turns a handler's result or exception into what its row can store, off the event
    loop (on threads of its own) when that is more than a few fields of work.

    A result walks `prepare_result` on the loop with a small budget first; an error entry
    is made on the loop when `formats_quickly` says so. The rest (a large result, an
    exception whose ``str()`` is its author's code or whose traceback is long) runs on a
    thread. Whatever does not finish within ``patience`` seconds is given up
    for a stand-in (the thread, which cannot be stopped, is a daemon).
    """

    def __init__(self, result_max_bytes: int, patience: float = 10.0) -> None:
        self.result_max_bytes = result_max_bytes
        self.patience = patience
        self._threads = DaemonExecutor(2)

    def inline(self, value: Any) -> Prepared | None:
        """``value`` ready to store when a few fields of work on the loop suffice, else
        None (then `result` does it off the loop)."""
        return prepare_result(value, self.result_max_bytes, INLINE_BUDGET)

    async def result(self, value: Any) -> Prepared:
        """``value`` ready to store (`inline` first, then on a thread)."""
        prepared = self.inline(value)
        if prepared is not None:
            return prepared
        done = await self._off_loop(prepare_result, value, self.result_max_bytes)
        if done is None:
            return Prepared(error=f"could not be checked within {self.patience:g} s")
        assert isinstance(done, Prepared)
        return done

    async def error(self, attempt: int, exc: BaseException, note: str | None = None) -> str:
        if formats_quickly(exc):  # most errors: a few microseconds, no thread hop
            return error_text(attempt, exc, note)
        text = await self._off_loop(error_text, attempt, exc, note)
        if isinstance(text, str):
            return text
        name = type(exc).__name__
        entry = error_entry(attempt, OutcomeRejected(f"a {name} could not be formatted"))
        entry["note"] = f"formatting the {name} took longer than {self.patience:g} s"
        return dump_entry(entry)

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        future = asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)
        try:
            return await asyncio.wait_for(future, self.patience)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        self._threads.shutdown()


class Finisher:
    """Records the outcome of each finished handler on ``writer``.

    It gathers what `pgtasq._policy.decide` needs (the result made safe to store, the error
    entry, the answers of the user's hooks, called so that they cannot raise) and queues the
    write `decide` returns.
    """

    def __init__(
        self,
        *,
        writer: OutcomeWriter,
        records: RecordMaker,
        on_error: ErrorHook | None,
        is_failure: Callable[[BaseException], bool],
        retry_delay: RetryDelay,
    ) -> None:
        self._writer = writer
        self.records = records
        self.on_error = on_error
        self.is_failure = is_failure
        self.retry_delay = retry_delay
        self._log_once = LogOnce(log)

    def _record(
        self, ended: Ended, info: TaskInfo, retry_delay: Callable[[], float] | None = None
    ) -> None:
        outcome = decide(ended, info, datetime.now(timezone.utc), retry_delay)
        if outcome is not None:
            self._writer.record(outcome)

    def completed_now(self, ctx: TaskContext, result: Any) -> bool:
        """Record a returned result that is ready to store after a few fields of work on
        the loop (most are); False leaves it to `completed`. The worker's hot path: no
        coroutine, no clock."""
        prepared = self.records.inline(result)
        if prepared is None or prepared.error is not None or prepared.note is not None:
            return False
        self._writer.record(returned(ctx.info, prepared.text, None))
        return True

    async def completed(self, ctx: TaskContext, result: Any, lost: Callable[[], bool]) -> None:
        """Record a returned result, made safe to store; one that cannot be stored fails
        the task at once (running it again would return it again). Nothing when ``lost()``
        says the task was taken away meanwhile."""
        info = ctx.info
        # Most results are a few fields: checked here, without a coroutine of their own.
        prepared = self.records.inline(result)
        if prepared is None:
            prepared = await self.records.result(result)
            if lost():
                return
        if prepared.error is not None:
            await self.failed(ctx, TaskValidationError("result", prepared.error), final=True)
            return
        note = None
        if prepared.note is not None:
            note = dump_entry(note_entry(info.attempts, "ResultSanitized", prepared.note))
        self._record(Ended(RETURNED, result=prepared.text, error=note), info)

    def retry_in(self, ctx: TaskContext, exc: RetryIn) -> None:
        """Record a `RetryIn`: pending again after its delay, the attempt given back."""
        self._record(Ended(RETRY_IN, delay=clamp_delay(exc.delay, self._warn_delay)), ctx.info)

    def released(self, ctx: TaskContext, *, lost: bool) -> None:
        """Record a handler cancelled by a shutdown (back to pending), or nothing when the
        task was taken away (``lost``)."""
        self._record(Ended(LOST if lost else CANCELLED), ctx.info)

    async def failed(self, ctx: TaskContext, exc: BaseException, *, final: bool = False) -> None:
        """Record a failed attempt: retried after the backoff while attempts are left (and
        ``final`` is not set), else failed."""
        info = ctx.info
        _log_failed_attempt(info, exc)
        await self._call_error_hook(ctx, exc)
        error = await self.records.error(info.attempts, exc)
        final = final or isinstance(exc, SkipRetry)
        if isinstance(exc, TaskTimeout):
            ended = Ended(TIMED_OUT, error=error, final=final)
        else:  # is_failure is asked only when its answer matters
            ended = Ended(RAISED, error=error, final=final, counts=final or self._counts(exc))
        self._record(ended, info, lambda: self._retry_delay(info, exc))

    def unreadable(self, row: dict[str, Any], exc: Exception) -> None:
        """Fail a claimed task whose row cannot be read (a payload nested too deep for
        Python's parser): every worker would fail the same way."""
        self._log_once(
            f"unreadable:{row['id']}",
            logging.ERROR,
            "task %s: its row cannot be read (%s); failing it",
            row["id"],
            short_error(exc),
        )
        error = error_text(
            row["attempts"], TaskValidationError("row", f"cannot be read: {short_error(exc)}")
        )
        self._writer.record(
            Outcome(row["id"], row["attempted_at"], "failed", error=error, attempt=row["attempts"])
        )

    def _retry_delay(self, info: TaskInfo, exc: BaseException) -> float:
        """The ``retry_delay`` hook's answer, within what a row holds; 1 s if it raised."""
        try:
            return clamp_delay(float(self.retry_delay(info, exc)), self._warn_delay)
        except Exception as hook_error:
            self._log_once(
                "retry_delay",
                logging.ERROR,
                "retry_delay raised %s for task %s; retrying in 1 s (logged once)",
                type(hook_error).__name__,
                info.id,
            )
            return 1.0

    def _warn_delay(self, message: str) -> None:
        self._log_once("delay", logging.WARNING, "%s (logged once)", message)

    def _counts(self, exc: BaseException) -> bool:
        """Whether ``exc`` counts as a failed attempt (``is_failure``; True if it raised)."""
        try:
            return bool(self.is_failure(exc))
        except Exception:
            log.exception("is_failure raised; counting the error as a failure")
            return True

    async def _call_error_hook(self, ctx: TaskContext, exc: BaseException) -> None:
        if self.on_error is None:
            return
        try:
            outcome = self.on_error(ctx, exc)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("on_error hook raised for task %s", ctx.id)


def _log_failed_attempt(info: TaskInfo, exc: BaseException) -> None:
    """One WARNING line per failed attempt; its traceback too when DEBUG is on."""
    try:
        message = (str(exc).strip().splitlines() or [""])[0]
    except Exception:  # an exception whose __str__ raises or returns no string
        message = "(its message cannot be read)"
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
