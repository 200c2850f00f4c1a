"""The Client's operations without I/O.

Each operation is a generator: it yields ``(statement, params)`` and receives the rows, then
returns its result. `Client` and `AsyncClient` only drive these generators on a connection,
so both shells share one logic. Every state change is one conditional statement whose WHERE
names the states it may leave; Python only reads the outcome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from pgtasq import _sql
from pgtasq._limits import ID_MAX, duration_problem
from pgtasq._transitions import TRANSITIONS
from pgtasq.errors import (
    ConfigurationError,
    QueueNotFound,
    TaskNotFound,
    TaskValidationError,
)
from pgtasq.filters import (
    COUNT_EXACT_MAX,
    CountMode,
    Cursor,
    InvalidFilter,
    TaskFilter,
    check_count,
    check_name,
)
from pgtasq.models import TaskInfo

Row = Mapping[str, Any]
Step = tuple[_sql.Statement, dict[str, Any]]
Op = Generator[Step, Sequence[Row], Any]
Progress = Callable[[int], None]

BULK_BATCH_DEFAULT = 1000


@dataclasses.dataclass(frozen=True)
class Preview:
    """A JSON value `list_tasks(full=False)` did not load: the first characters of its JSON
    text (up to 200), and whether there is more. `get_task` reads the value itself.

    It stands in `TaskInfo.payload` and `TaskInfo.result` (None stays None), so a payload
    that was not loaded can never be taken for one that was.
    """

    text: str
    truncated: bool

    @classmethod
    def of(cls, text: str) -> Preview:
        """From a column of `_sql.TASK_COLUMNS_PREVIEW` (one character past the preview)."""
        limit = _sql.PREVIEW_CHARS
        return cls(text[:limit], len(text) > limit)

    def __str__(self) -> str:
        return self.text + ("…" if self.truncated else "")


@dataclasses.dataclass(frozen=True)
class TaskPage:
    """One page of `list_tasks`: the tasks, the total matching the filter, and where the next
    page starts (``next_cursor``, None when this page is the last one).

    ``total`` is exact when ``total_exact``; otherwise (more than `COUNT_EXACT_MAX` tasks
    match, and the count was ``auto``) it is the planner's estimate, at least
    ``COUNT_EXACT_MAX + 1``. It is None when the count was ``none``.
    """

    tasks: list[TaskInfo]
    total: int | None
    next_cursor: Cursor | None
    total_exact: bool = True


@dataclasses.dataclass(frozen=True)
class QueueInfo:
    """A queue as `list_queues` reports it."""

    name: str
    paused: bool
    pending: int
    scheduled: int
    retry: int
    running: int
    completed: int
    failed: int
    cancelled: int
    latency: timedelta
    processed_today: int
    failed_today: int
    processed_total: int
    failed_total: int

    @property
    def size(self) -> int:
        """Tasks not yet finished: ``pending``, ``scheduled`` and ``retry`` count each pending
        task once (see `Client.list_queues`), ``running`` the claimed ones."""
        return self.pending + self.scheduled + self.retry + self.running


@dataclasses.dataclass(frozen=True)
class DailyStats:
    """One queue's counters for one UTC day: finished attempts by outcome."""

    queue: str
    day: date
    completed: int
    failed: int
    retried: int

    @property
    def processed(self) -> int:
        """Finished attempts of the day, whatever their outcome."""
        return self.completed + self.failed + self.retried


@dataclasses.dataclass(frozen=True)
class Stats:
    """A snapshot: totals since the schema was created, and the tasks per status now.

    ``enqueued`` counts ids drawn, so it includes enqueues that were rolled back.
    ``started`` is derived: finished attempts plus the tasks running now.
    """

    enqueued: int
    completed: int
    failed: int
    retried: int
    pending_now: int
    running_now: int
    completed_now: int
    failed_now: int
    cancelled_now: int

    @property
    def started(self) -> int:
        """Attempts started: the finished ones and those running now."""
        return self.completed + self.failed + self.retried + self.running_now


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """A registered worker process as `list_workers` reports it: its queues and weights, its
    concurrency, its last heartbeat and the ids of the tasks it runs now."""

    id: str
    host: str
    pid: int
    queues: dict[str, int]
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    running: list[int]


@dataclasses.dataclass(frozen=True)
class TaskEvent:
    """Something that happened to tasks, as `Client.events` reports it.

    ``kind``: enqueued (also: made ready again by a retry, a run now or a shutdown hand-back),
    started, retried, completed, failed, progress (a running task's progress was written),
    cancelled, deleted. ``count`` is how many tasks; ``task_ids`` lists them (the first 300
    per event); ``queues`` names the queues of ``enqueued`` events (empty when there were too
    many to send).
    """

    kind: str
    count: int
    task_ids: list[int]
    queues: list[str]


def parse_event(stmts: _sql.Statements, channel: str, payload: str) -> TaskEvent | None:
    """A notification on the wake or events channel as a TaskEvent (None: not ours, or not
    in the shape pgtasq sends: anyone may NOTIFY these channels)."""
    try:
        data = _loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if channel == stmts.channel:  # the wake-up: {"queues": [...] or "*", "count", "ids"}
        kind: object = "enqueued"
        queues = data.get("queues")
        names = [str(q) for q in queues] if isinstance(queues, list) else []
    else:
        kind, names = data.get("event"), []
    count, ids = data.get("count"), data.get("ids") or []
    if not isinstance(kind, str) or not isinstance(count, int) or not isinstance(ids, list):
        return None
    return TaskEvent(kind, count, [i for i in ids if isinstance(i, int)], names)


def check_task_id(task_id: object) -> int:
    """A task id, as tasks.id (a bigint) can hold it; checked when the operation is built,
    before any connection is taken, so a bad id never reaches (and aborts) a transaction."""
    if not isinstance(task_id, int) or isinstance(task_id, bool) or not 1 <= task_id <= ID_MAX:
        raise TaskValidationError(
            "task_id", f"expected a task id, an integer from 1 to {ID_MAX}, got {task_id!r}"
        )
    return task_id


def get_task(stmts: _sql.Statements, task_id: int) -> Op:
    return _get_task(stmts, check_task_id(task_id))


def _get_task(stmts: _sql.Statements, task_id: int) -> Op:
    rows = yield stmts.task_select, {"id": task_id}
    if not rows:
        raise TaskNotFound(task_id)
    return TaskInfo.from_row(rows[0])


def _changed_or_raise(task_id: int, rows: Sequence[Row], action: str) -> TaskInfo:
    """After a conditional change: the error for the state it found (its refusals in
    `pgtasq._transitions`), or the row it reports (the changed row, or for a no-op the row
    as the statement locked it)."""
    if not rows:
        raise TaskNotFound(task_id)
    row = rows[0]
    error = TRANSITIONS[action].refused(row["before"], row["ready"])
    if error is not None:
        raise error(task_id, row["before"])
    return TaskInfo.from_row(row)


def cancel_task(stmts: _sql.Statements, task_id: int) -> Op:
    """pending/failed/running -> cancelled; cancelled: no-op; completed: TaskAlreadyFinalized."""
    return _cancel_task(stmts, check_task_id(task_id))


def _cancel_task(stmts: _sql.Statements, task_id: int) -> Op:
    rows = yield stmts.task_cancel, {"id": task_id}
    return _changed_or_raise(task_id, rows, "cancel")


def retry_task(stmts: _sql.Statements, task_id: int) -> Op:
    """failed/cancelled -> pending now, with at least one attempt left."""
    return _retry_task(stmts, check_task_id(task_id))


def _retry_task(stmts: _sql.Statements, task_id: int) -> Op:
    rows = yield stmts.task_retry, {"id": task_id}
    return _changed_or_raise(task_id, rows, "retry")


def delete_task(stmts: _sql.Statements, task_id: int) -> Op:
    """Anything but running; returns what was deleted."""
    return _delete_task(stmts, check_task_id(task_id))


def _delete_task(stmts: _sql.Statements, task_id: int) -> Op:
    rows = yield stmts.task_delete, {"id": task_id}
    return _changed_or_raise(task_id, rows, "delete")


def run_task(stmts: _sql.Statements, task_id: int) -> Op:
    """pending with a future run_at -> due now (the workers are woken)."""
    return _run_task(stmts, check_task_id(task_id))


def _run_task(stmts: _sql.Statements, task_id: int) -> Op:
    rows = yield stmts.task_run, {"id": task_id}
    return _changed_or_raise(task_id, rows, "run")


def list_tasks(
    stmts: _sql.Statements, task_filter: TaskFilter, count: CountMode, full: bool = True
) -> Op:
    """A page, and its total as ``count`` asks (see `pgtasq.filters.CountMode`)."""
    mode = check_count(count)
    stmt, params = _sql.task_list(
        stmts.schema,
        check_filter(task_filter),
        count="capped" if mode == "auto" else mode,
        full=full,
    )
    return _list_tasks(stmts, stmt, params, task_filter, mode, full)


def _list_tasks(
    stmts: _sql.Statements,
    stmt: _sql.Statement,
    params: dict[str, Any],
    task_filter: TaskFilter,
    count: CountMode,
    full: bool,
) -> Op:
    rows = yield stmt, params  # one statement: the page and the total from one snapshot
    tasks = [_task_from_row(r, full) for r in rows if r["id"] is not None]
    cursor = None
    if len(tasks) > task_filter.limit_rows:  # the statement reads one row past the page
        del tasks[task_filter.limit_rows :]
        last = tasks[-1]
        cursor = Cursor(getattr(last, task_filter.order_field), last.id)
    total = rows[0]["total"]
    if total is None:
        return TaskPage(tasks=tasks, total=None, next_cursor=cursor, total_exact=False)
    if count == "auto" and total > COUNT_EXACT_MAX:
        # More than the exact count reads: the planner's estimate, never below what we saw.
        stmt, params = _sql.task_count_estimate(stmts.schema, task_filter)
        plan = (yield stmt, params)[0]["QUERY PLAN"]
        if isinstance(plan, str):  # json, as text on some connections
            plan = _loads(plan)
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        return TaskPage(
            tasks=tasks,
            total=max(estimate, COUNT_EXACT_MAX + 1),
            next_cursor=cursor,
            total_exact=False,
        )
    return TaskPage(tasks=tasks, total=int(total), next_cursor=cursor)


def bulk(
    stmts: _sql.Statements,
    action: str,
    task_filter: TaskFilter,
    batch_size: int,
    progress: Progress | None,
) -> Op:
    """Change every task the filter selects, ``batch_size`` rows per statement; returns the count.

    Without a connection of the caller's each batch commits on its own, so no statement holds
    more than ``batch_size`` row locks. Rows another session holds are skipped.
    """
    check_batch_size(batch_size)
    stmt, params = _sql.task_bulk(stmts.schema, action, check_filter(task_filter))
    params = {**params, "batch": batch_size, "after": 0}
    return _bulk(stmt, params, task_filter, batch_size, progress)


def _bulk(
    stmt: _sql.Statement,
    params: dict[str, Any],
    task_filter: TaskFilter,
    batch_size: int,
    progress: Progress | None,
) -> Op:
    if not task_filter.task_ids:
        return (yield from _in_batches(stmt, params, batch_size, progress))
    # By ids: each batch gets only its slice of the sorted ids, so every statement costs
    # what its slice does, not what the whole list does (which made 60k ids 15x slower
    # than 20k: each batch looked up every id again).
    ids = sorted(set(task_filter.task_ids))
    changed = 0
    for start in range(0, len(ids), batch_size):
        rows = yield stmt, {**params, "ids": ids[start : start + batch_size]}
        changed += len(rows)
        if progress is not None and rows:
            progress(changed)
    if progress is not None and not changed:
        progress(0)
    return changed


BULK_BATCH_MAX = 10_000


def check_batch_size(batch_size: object) -> None:
    """A bulk operation's batch size (ConfigurationError, also a ValueError)."""
    if (
        not isinstance(batch_size, int)
        or isinstance(batch_size, bool)
        or not 1 <= batch_size <= BULK_BATCH_MAX
    ):
        raise ConfigurationError(
            f"batch_size must be an integer from 1 to {BULK_BATCH_MAX}, got {batch_size!r}"
        )


def check_filter(task_filter: object) -> TaskFilter:
    if not isinstance(task_filter, TaskFilter):
        raise InvalidFilter(f"expected a TaskFilter, got {type(task_filter).__name__}")
    return task_filter


def _task_from_row(row: Row, full: bool) -> TaskInfo:
    if full:
        return TaskInfo.from_row(row)
    payload, result = row["payload"], row["result"]
    info = TaskInfo.from_row({**row, "payload": "null", "result": None})
    return dataclasses.replace(
        info,
        payload=Preview.of(payload),
        result=None if result is None else Preview.of(result),
    )


def _in_batches(
    stmt: _sql.Statement, params: dict[str, Any], batch_size: int, progress: Progress | None
) -> Op:
    """Run ``stmt`` until a batch changes fewer than ``batch_size`` rows; returns the total.

    A statement that takes ``after`` (`_sql.task_bulk`) gets the largest id of the previous
    batch, so it goes on from there. ``progress`` gets the running total after each batch
    that changed rows, so every count once; when nothing at all changed, it gets 0 once.
    (When the total is a multiple of ``batch_size`` the last batch is empty: it only tells
    us we are done.)
    """
    changed = 0
    while True:
        rows = yield stmt, params
        changed += len(rows)
        if progress is not None and (rows or not changed):
            progress(changed)
        if len(rows) < batch_size:
            return changed
        if "after" in params:
            params = {**params, "after": max(int(r["id"]) for r in rows)}


def list_queues(stmts: _sql.Statements) -> Op:
    rows = yield stmts.queue_list, {}
    return [
        QueueInfo(**{field.name: row[field.name] for field in dataclasses.fields(QueueInfo)})
        for row in rows
    ]


def pause_queue(stmts: _sql.Statements, name: str, paused: bool, create: bool = True) -> Op:
    """Checked when the operation is built, before any connection is taken. Without
    ``create``, only a queue that exists (a row in ``queues`` or any task), else
    `QueueNotFound`."""
    return _pause_queue(stmts, check_name("queue name", name), paused, create)


def _pause_queue(stmts: _sql.Statements, name: str, paused: bool, create: bool) -> Op:
    rows = yield stmts.queue_pause, {"name": name, "paused": paused, "create": bool(create)}
    if not rows:
        raise QueueNotFound(name)
    return None


HISTORY_DAYS_MAX = 3650


def queue_history(stmts: _sql.Statements, name: str | None, days: int) -> Op:
    if name is not None:
        check_name("queue name", name)
    if days.__class__ is not int or not 1 <= days <= HISTORY_DAYS_MAX:
        raise InvalidFilter(f"days must be from 1 to {HISTORY_DAYS_MAX} (an integer), got {days!r}")
    return _queue_history(stmts, name, days)


def _queue_history(stmts: _sql.Statements, name: str | None, days: int) -> Op:
    rows = yield stmts.queue_history, {"queue": name, "days": days}
    return [DailyStats(**dict(row)) for row in rows]


def stats(stmts: _sql.Statements) -> Op:
    rows = yield stmts.stats_snapshot, {}
    return Stats(**{field.name: int(rows[0][field.name]) for field in dataclasses.fields(Stats)})


def clean(
    stmts: _sql.Statements, retention: float, batch_size: int, progress: Progress | None
) -> Op:
    """Delete finished tasks past their retention (``retention`` seconds where a task has
    none), ``batch_size`` per statement; returns how many."""
    problem = duration_problem(retention)
    if problem is not None:
        raise TaskValidationError("retention", problem)
    check_batch_size(batch_size)
    params = {"retention": float(retention), "batch": batch_size}
    return _in_batches(stmts.task_clean, params, batch_size, progress)


@dataclasses.dataclass(frozen=True)
class ScheduleInfo:
    """A scheduler entry as the schedules table has it, with the tasks it enqueued."""

    id: str
    cron: str
    timezone: str
    task_type: str
    payload: Any
    options: dict[str, Any]
    last_run_at: datetime | None
    next_run_at: datetime | None
    task_ids: list[int]


def list_schedules(stmts: _sql.Statements) -> Op:
    rows = yield stmts.schedule_list, {"ids": None}
    return [
        ScheduleInfo(
            id=r["id"],
            cron=r["cron"],
            timezone=r["timezone"],
            task_type=r["task_type"],
            payload=_loads(r["payload"]),
            options=_loads(r["options"]),
            last_run_at=r["last_run_at"],
            next_run_at=r["next_run_at"],
            task_ids=list(r["task_ids"] or []),
        )
        for r in rows
    ]


def list_workers(stmts: _sql.Statements) -> Op:
    rows = yield stmts.worker_list, {}
    return [
        WorkerInfo(
            id=r["id"],
            host=r["host"],
            pid=r["pid"],
            queues=dict(r["queues"]) if not isinstance(r["queues"], str) else _loads(r["queues"]),
            concurrency=r["concurrency"],
            started_at=r["started_at"],
            heartbeat_at=r["heartbeat_at"],
            running=list(r["running"] or []),
        )
        for r in rows
    ]


def _loads(text: str) -> Any:
    import json

    return json.loads(text)
