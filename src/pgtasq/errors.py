"""Every error pgtasq raises, in one tree.

::

    PgtasqError
    ├── TaskValidationError (also a ValueError)   a task, option or task id is bad; names the field
    ├── ConfigurationError (also a ValueError)    a bad schema name, DSN or setting
    │   └── DatabaseMisconfigured                  the database answered: no retry can fix it
    ├── InvalidSchedule (also a ValueError)       a bad cron expression or time zone
    ├── InvalidFilter (also a ValueError)         a bad TaskFilter argument or queue name
    ├── DuplicateTask                              a key is taken (on_conflict="raise")
    ├── UniqueKeyHeld                              retry: another task holds the task's unique key
    ├── DatabaseUnavailable                        no database could be reached
    ├── TaskLost                                   this worker no longer owns the task
    ├── TaskNotFound                               no task with that id
    ├── QueueNotFound                              no such queue (pause/resume with create=False)
    ├── TaskRunning                                the task is running (retry, delete)
    ├── TaskAlreadyFinalized                       the task is completed (cancel, retry)
    ├── TaskAlreadyAvailable                       the task is pending already (retry)
    ├── TaskTimeout                                the task ran past its timeout or deadline
    └── WorkerCrashed                              a worker's loop stopped or a claim failed

    Handler signals (raise them from a handler; they are not failures of pgtasq):
    SkipRetry(PgtasqError)                         fail now, without further attempts
    RetryIn(PgtasqError)                           run again after a delay; not a failure

Validation happens before any SQL is sent, so a ``TaskValidationError`` never leaves the
caller's transaction broken. psycopg errors are translated in one place
(`pgtasq._driver_errors`, which tabulates the mapping): "the server is not there" becomes
``DatabaseUnavailable``, what no retry can fix ``DatabaseMisconfigured``; every message reads
``<what is wrong>: <what to do>`` and holds no password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgtasq.models import TaskInfo


class PgtasqError(Exception):
    """Root of every error raised by pgtasq."""


class TaskValidationError(PgtasqError, ValueError):
    """A task, one of its options, or a task id given to the Client (``field`` "task_id") is
    invalid. Nothing was sent to the database."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConfigurationError(PgtasqError, ValueError):
    """A setting (schema name, DSN, pool option) is invalid."""


class InvalidSchedule(PgtasqError, ValueError):
    """A scheduler entry's cron expression or time zone is invalid. Nothing was written."""

    def __init__(self, field: str, value: str, message: str) -> None:
        self.field = field
        self.value = value
        self.message = message
        super().__init__(f"{field} {value!r}: {message}")


class DuplicateTask(PgtasqError):
    """A task with this idempotency key already exists, or one holds this unique key
    (``unique_key`` is then set: docs/unique.md); it was left unchanged."""

    def __init__(self, existing: TaskInfo, *, unique_key: str | None = None) -> None:
        self.existing = existing
        self.task_id = existing.id
        self.idempotency_key = existing.idempotency_key
        self.unique_key = unique_key
        if unique_key is not None:
            message = f"a task holds unique key {unique_key!r}"
        else:
            message = f"a task with idempotency key {existing.idempotency_key!r} already exists"
        super().__init__(f"{message} (id {existing.id}, status {existing.status.value})")


class UniqueKeyHeld(PgtasqError):
    """Retrying the task would make it a second holder of its unique key: another task holds
    it (pending, running, or within its ``unique_for``). Nothing changed; on the caller's
    connection its transaction is aborted, as by any failed statement (docs/unique.md)."""

    def __init__(self, unique_key: str | None) -> None:
        self.unique_key = unique_key
        key = f" {unique_key!r}" if unique_key is not None else ""
        super().__init__(
            f"another task holds the unique key{key}: retry this one once that one is final, "
            "or cancel or delete that one first"
        )


class DatabaseUnavailable(PgtasqError):
    """The database could not be reached (refused, gone away, or timed out)."""


class DatabaseMisconfigured(ConfigurationError):
    """The database answered with an error that no retry can fix; the message names the fix.

    ``reason`` is one of ``"authentication"`` (wrong password, unknown role, no pg_hba.conf
    entry, no password given), ``"database"`` (the database does not exist), ``"dsn"`` (the
    DSN cannot be parsed), ``"not_migrated"`` (pgtasq's tables or schema are missing),
    ``"permission"`` (the role may not use the schema or its tables) or ``"read_only"`` (a
    standby, or a read-only session). Workers, schedulers and the CLI stop on it (the CLI
    with exit code 78) instead of retrying, and ``--processes N`` does not restart them.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class TaskLost(PgtasqError):
    """This worker no longer owns the task: it was cancelled, rescued or deleted.

    Raised by ``TaskContext.complete`` so that the handler's own transaction rolls back.
    """

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id} is no longer owned by this worker")


class TaskTimeout(PgtasqError):
    """The handler ran past the task's timeout or deadline and was cancelled."""

    def __init__(self, task_id: int, seconds: float) -> None:
        self.task_id = task_id
        self.seconds = seconds
        super().__init__(f"task {task_id} timed out after {seconds:g} s")


class WorkerCrashed(PgtasqError):
    """A worker's background loop (heartbeat, flush, rescue, clean, listen) stopped on an
    error, or returned, or a claim failed other than on a lost database (``loop`` is then
    ``"claim"``), so the worker shut down. Raised ``from`` that error, if any.

    The worker stopped the way a signal stops it: no more claims, running handlers given
    their shutdown time (none when the heartbeat stopped, as leases would expire meanwhile),
    unfinished tasks handed back and the outcomes written.
    """

    def __init__(self, loop: str, how: str) -> None:
        self.loop = loop
        super().__init__(f"the worker stopped: its {loop} loop {how}")


class SkipRetry(PgtasqError):
    """Raise from a handler to fail the task now, whatever attempts are left."""


class RetryIn(PgtasqError):
    """Raise from a handler to run the task again after ``delay`` seconds.

    Not a failure: the attempt is given back and no error is recorded.
    """

    def __init__(self, delay: float, reason: str = "") -> None:
        if not delay >= 0:
            raise TaskValidationError("delay", f"RetryIn needs seconds >= 0, got {delay!r}")
        self.delay = float(delay)
        self.reason = reason
        super().__init__(f"retry in {delay:g} s" + (f": {reason}" if reason else ""))


class _TaskStateError(PgtasqError):
    """A Client operation found the task in a state it may not leave that way."""

    what = ""

    def __init__(self, task_id: int, state: str | None = None) -> None:
        self.task_id = task_id
        self.state = state  # the task's state, when the operation knew it
        super().__init__(f"task {task_id} {self._what(state)}")

    def _what(self, state: str | None) -> str:
        return self.what


class TaskNotFound(_TaskStateError):
    """No task has this id (never enqueued, deleted, or cleaned)."""

    what = "does not exist"


class QueueNotFound(PgtasqError):
    """No queue of that name: no row in ``queues`` and no task."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(
            f"queue {queue!r} does not exist (no task has used it, it was never paused); "
            "create=True (pgtasq: --create) adds it"
        )


class TaskRunning(_TaskStateError):
    """The task is running: retry and delete refuse it (cancel it first)."""

    what = "is running; cancel it first"


class TaskAlreadyFinalized(_TaskStateError):
    """The task is completed (or, to run, in any final state): cancel and retry refuse it."""

    what = "is completed already"

    def _what(self, state: str | None) -> str:
        return f"is {state} already" if state else self.what


class TaskAlreadyAvailable(_TaskStateError):
    """The task is pending already, and due: retry and run have nothing to do."""

    what = "is pending already"
