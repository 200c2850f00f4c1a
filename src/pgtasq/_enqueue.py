"""The enqueue logic, without I/O: what to send for a list of tasks, and what it returns.

`enqueue_steps` is a generator: it yields the steps to run (`Fetch` a statement's rows,
`Copy` text into the tasks table) and receives their results; it returns the TaskInfos.
`pgtasq.producer` drives it on a connection, synchronously or not. Three ways in, per batch:

- one task: `task_insert_one_idempotent`, a plain ``INSERT … VALUES … ON CONFLICT DO
  NOTHING RETURNING`` (no unnest, no CTE); with a unique key `task_insert_one` (the same
  after a CTE that releases the key's expired holder); a keyless one goes through
  `task_insert_one_keyless` (no ON CONFLICT), which the producer runs directly (`single`),
  without the generator;
- many keyless tasks, where COPY is possible (psycopg connections): `task_insert_copy_ids`
  (the transaction's ``now()``, one id per row in order, the NOTIFY), then ``COPY`` with
  those ids, both in one transaction, so the rows' ``created_at`` is that ``now()`` and the
  NOTIFY is delivered with the rows at commit;
- otherwise (idempotency or unique keys, SQLAlchemy connections): `task_insert`, arrays and
  unnest, whose ON CONFLICT arbitrates the keys.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, NamedTuple

from pgtasq import _sql
from pgtasq._connections import Row
from pgtasq.errors import DuplicateTask, PgtasqError
from pgtasq.models import (
    Task,
    TaskInfo,
    TaskStatus,
    _duration,
    _pending_info,
    _seconds,
    dump_headers,
    dump_payload,
)

OnConflict = Literal["return", "raise", "update"]
ON_CONFLICT_CHOICES = ("return", "raise", "update")
STALE_KEY_RETRIES = 3
# COPY data is formatted and handed to psycopg this many rows at a time: the server starts
# on the first rows while the rest are formatted, and a batch is never one huge string.
COPY_CHUNK_ROWS = 200


class Batch(NamedTuple):
    """Up to batch_size tasks, validated, with their payloads as JSON text."""

    tasks: list[Task]
    payloads: list[str]
    keyed: bool  # any idempotency or unique key: only task_insert/_one can arbitrate those


class Fetch(NamedTuple):
    """Run a statement; the flow receives its rows."""

    stmt: _sql.Statement
    params: dict[str, Any]


class Copy(NamedTuple):
    """COPY FROM STDIN these text-format chunks; the flow receives None."""

    stmt: _sql.Statement
    chunks: Iterator[str]


class Done(NamedTuple):
    """The flow returned: these are the TaskInfos, in the order of the tasks."""

    infos: list[TaskInfo]


Step = Fetch | Copy
Flow = Generator[Step, Any, list[TaskInfo]]


def as_task(task: Task | str, payload: Any, options: dict[str, Any]) -> Task:
    if isinstance(task, Task):
        if payload is not None:
            raise TypeError("give the payload inside the Task, or pass a task type string")
        return task.with_options(**options) if options else task
    if isinstance(task, str):
        return Task(task, payload, **options)
    raise TypeError(f"expected a Task or a task type string, got {type(task).__name__}")


def plan(tasks: Sequence[Task], max_payload_bytes: int, batch_size: int) -> list[Batch]:
    """Validate everything, then cut into batches. Raises before any SQL is sent."""
    payloads = []
    for task in tasks:
        if task.__class__ is not Task and not isinstance(task, Task):
            raise TypeError(f"enqueue_many takes Task objects, got {type(task).__name__}")
        payloads.append(dump_payload(task.payload, max_payload_bytes))
    batches = []
    for start in range(0, len(tasks), batch_size):
        chunk = list(tasks[start : start + batch_size])
        keyed = any(t.idempotency_key is not None or t.unique_key is not None for t in chunk)
        batches.append(Batch(chunk, payloads[start : start + batch_size], keyed))
    return batches


def insert_arrays(tasks: Sequence[Task], payloads: Sequence[str]) -> dict[str, list[Any]]:
    """The parameters of `task_insert` for a batch: one array per `_columns.INSERT_ARRAYS`
    (unrolled for speed; tests/unit/test_columns.py checks it against the table)."""
    delay: list[float | None] = []
    timeout: list[float | None] = []
    retention: list[float | None] = []
    unique_for: list[float | None] = []
    for task in tasks:
        delay.append(None if task.delay is None else _seconds("delay", task.delay))
        timeout.append(None if task.timeout is None else _seconds("timeout", task.timeout))
        retention.append(None if task.retention is None else _seconds("retention", task.retention))
        period = task.unique_for
        unique_for.append(None if period is None else _seconds("unique_for", period))
    return {
        "queue": [t.queue for t in tasks],
        "type": [t.type for t in tasks],
        "payload": list(payloads),
        "priority": [t.priority for t in tasks],
        "run_at": [utc(t.run_at) for t in tasks],
        "delay": delay,
        "max_attempts": [t.max_attempts for t in tasks],
        "timeout": timeout,
        "deadline": [utc(t.deadline) for t in tasks],
        "idempotency_key": [t.idempotency_key for t in tasks],
        "retention": retention,
        "headers": [dump_headers(t.headers) for t in tasks],
        "unique_key": [t.unique_key for t in tasks],
        "unique_for": unique_for,
    }


def utc(value: datetime | None) -> datetime | None:
    """An aware datetime in UTC: PostgreSQL's text input refuses offsets past ±15:59 and
    fractional seconds in an offset, both of which Python allows (psycopg converts them
    itself, psycopg2 and COPY's text do not)."""
    return None if value is None else value.astimezone(timezone.utc)


def one_params(task: Task, payload: str) -> dict[str, Any]:
    """The parameters of `task_insert_one` (a task with a unique key), of
    `task_insert_one_idempotent` (an idempotency key only: no unique key parameters) or of
    `task_insert_one_keyless` (no key: no key parameters)."""
    params = {
        "queue": task.queue,
        "type": task.type,
        "payload": payload,
        "priority": task.priority,
        "run_at": utc(task.run_at),
        "delay": None if task.delay is None else _seconds("delay", task.delay),
        "max_attempts": task.max_attempts,
        "timeout": None if task.timeout is None else _seconds("timeout", task.timeout),
        "deadline": utc(task.deadline),
        "retention": None if task.retention is None else _seconds("retention", task.retention),
        "headers": dump_headers(task.headers),
    }
    if task.unique_key is not None:
        params["idempotency_key"] = task.idempotency_key
        params["unique_key"] = task.unique_key
        unique_for = task.unique_for
        params["unique_for"] = None if unique_for is None else _seconds("unique_for", unique_for)
    elif task.idempotency_key is not None:
        params["idempotency_key"] = task.idempotency_key
    return params


def single(stmts: _sql.Statements, batches: Sequence[Batch]) -> Fetch | None:
    """One keyless task: its `task_insert_one_keyless`, which returns its row; else None.

    The producer runs it directly, without the flow's machinery (about 25 µs of a ~400 µs
    `enqueue`, measured), and without ON CONFLICT, which a row with no key never needs.
    """
    if len(batches) != 1 or batches[0].keyed or len(batches[0].tasks) != 1:
        return None
    return insert_one(stmts, batches[0].tasks[0], batches[0].payloads[0])


def single_info(batches: Sequence[Batch], row: Row | None) -> list[TaskInfo]:
    """The result of `single`, from the row its statement returned."""
    assert row is not None, "task_insert_one_keyless returns the row it inserted"
    return [_pending_info(batches[0].tasks[0], row["id"], row["run_at"], row["created_at"])]


def insert_one(stmts: _sql.Statements, task: Task, payload: str) -> Fetch:
    if task.unique_key is not None:
        stmt = stmts.task_insert_one
    elif task.idempotency_key is not None:
        stmt = stmts.task_insert_one_idempotent
    else:
        stmt = stmts.task_insert_one_keyless
    return Fetch(stmt, one_params(task, payload))


def insert(stmts: _sql.Statements, tasks: Sequence[Task], payloads: Sequence[str]) -> Fetch:
    if len(tasks) == 1:
        return insert_one(stmts, tasks[0], payloads[0])
    return Fetch(stmts.task_insert, insert_arrays(tasks, payloads))


def task_key(task: Task) -> tuple[str, str] | None:
    """What a task's row is matched by: its idempotency key, else its unique key, else None."""
    if task.idempotency_key is not None:
        return ("idempotency", task.idempotency_key)
    if task.unique_key is not None:
        return ("unique", task.unique_key)
    return None


def row_key(row: Row) -> tuple[str, str] | None:
    """`task_key` of the task a returned row was inserted for."""
    # (task_insert_one_keyless returns no key columns.)
    key = row.get("idempotency_key")
    if key is not None:
        return ("idempotency", key)
    key = row.get("unique_key")
    if key is not None:
        return ("unique", key)
    return None


def match(tasks: Sequence[Task], rows: Sequence[Row]) -> tuple[list[TaskInfo | None], list[Task]]:
    """Pair the inserted rows with their tasks; list the tasks whose key was already taken.

    Rows with a key are matched by key (`task_key`). Keyless rows come back in id order,
    which is the order the statement inserted them in (``ORDER BY ord``), so they match
    keyless tasks in turn.
    """
    by_key: dict[tuple[str, str], Row] = {}
    keyless_rows = []
    for r in rows:
        key = row_key(r)
        if key is None:
            keyless_rows.append(r)
        else:
            by_key[key] = r
    keyless = iter(sorted(keyless_rows, key=lambda r: r["id"]))
    claimed: set[tuple[str, str]] = set()
    infos: list[TaskInfo | None] = []
    taken: list[Task] = []
    for task in tasks:
        key = task_key(task)
        if key is None:
            row = next(keyless)
        elif key in by_key and key not in claimed:
            claimed.add(key)
            row = by_key[key]
        else:
            infos.append(None)
            taken.append(task)
            continue
        infos.append(_pending_info(task, row["id"], row["run_at"], row["created_at"]))
    return infos, taken


def holder(existing: dict[tuple[str, str], TaskInfo], task: Task) -> TaskInfo | None:
    """The row that holds one of ``task``'s keys (its idempotency key first), if any."""
    if task.idempotency_key is not None and ("idempotency", task.idempotency_key) in existing:
        return existing["idempotency", task.idempotency_key]
    if task.unique_key is not None:
        return existing.get(("unique", task.unique_key))
    return None


def update_params(
    existing: dict[tuple[str, str], TaskInfo], taken: Sequence[Task]
) -> dict[str, list[Any]]:
    """The parameters of `task_update_pending` for the pending holders of taken keys: each
    takes the priority of the task that found it, and its run_at or delay if it gives one
    (when several tasks of a batch find the same holder, the last one's win)."""
    by_id: dict[int, Task] = {}
    for task in taken:
        info = holder(existing, task)
        if info is not None and info.status is TaskStatus.PENDING:
            by_id[info.id] = task
    tasks = list(by_id.values())
    return {
        "id": list(by_id),
        "priority": [t.priority for t in tasks],
        "run_at": [utc(t.run_at) for t in tasks],
        "delay": [None if t.delay is None else _seconds("delay", t.delay) for t in tasks],
    }


def replace_updated(existing: dict[tuple[str, str], TaskInfo], rows: Sequence[Row]) -> None:
    """Put the rows `task_update_pending` changed in place of the holders they were."""
    updated = {r["id"]: TaskInfo.from_row(r, created=False) for r in rows}
    for key, info in existing.items():
        if info.id in updated:
            existing[key] = updated[info.id]


def duplicate(existing: dict[tuple[str, str], TaskInfo], taken: Sequence[Task]) -> None:
    """Raise `DuplicateTask` for the first taken task whose key has a holder."""
    for task in taken:
        if task.idempotency_key is not None:
            info = existing.get(("idempotency", task.idempotency_key))
            if info is not None:
                raise DuplicateTask(info)
        if task.unique_key is not None:
            info = existing.get(("unique", task.unique_key))
            if info is not None:
                raise DuplicateTask(info, unique_key=task.unique_key)


def insert_steps(stmts: _sql.Statements, batch: Batch, on_conflict: OnConflict) -> Flow:
    """One batch through `task_insert`/`task_insert_one`, then the rows of taken keys."""
    tasks, payloads = batch.tasks, batch.payloads
    final: list[TaskInfo | None] = [None] * len(tasks)
    todo = list(range(len(tasks)))
    sub_tasks, sub_payloads = tasks, payloads
    for _ in range(STALE_KEY_RETRIES):
        rows = yield insert(stmts, sub_tasks, sub_payloads)
        infos, taken = match(sub_tasks, rows)
        existing: dict[tuple[str, str], TaskInfo] = {}
        if taken:
            keys = sorted({t.idempotency_key for t in taken if t.idempotency_key is not None})
            unique = sorted({t.unique_key for t in taken if t.unique_key is not None})
            found = yield Fetch(stmts.task_select_by_keys, {"keys": keys, "unique_keys": unique})
            for r in found:
                row = TaskInfo.from_row(r, created=False)
                if row.idempotency_key is not None and row.idempotency_key in keys:
                    existing["idempotency", row.idempotency_key] = row
                if row.unique_key is not None and row.unique_key in unique:
                    existing["unique", row.unique_key] = row
            if on_conflict == "raise":
                duplicate(existing, taken)
            elif on_conflict == "update":
                params = update_params(existing, taken)
                if params["id"]:
                    updated = yield Fetch(stmts.task_update_pending, params)
                    replace_updated(existing, updated)
        retry: list[int] = []
        for j, inserted in enumerate(infos):
            info = inserted if inserted is not None else holder(existing, sub_tasks[j])
            if info is None:
                retry.append(todo[j])  # the holder of the key was deleted or finished meanwhile
            else:
                final[todo[j]] = info
        if not retry:
            return [info for info in final if info is not None]
        todo = retry
        sub_tasks = [tasks[i] for i in todo]
        sub_payloads = [payloads[i] for i in todo]
    raise PgtasqError("task keys kept changing hands while enqueueing; try again")


COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: str) -> str:
    """A text field in COPY's text format (the delimiter is a tab, NULL is ``\\N``)."""
    return value.translate(COPY_ESCAPES)


def copy_timestamp(value: datetime | None) -> str:
    return "\\N" if value is None else value.astimezone(timezone.utc).isoformat()


def copy_interval(value: timedelta | None) -> str:
    """An interval in seconds, exact to the microsecond, as make_interval(secs => …) stores it."""
    if value is None:
        return "\\N"
    return f"{value.days * 86400 + value.seconds}.{value.microseconds:06d} seconds"


def copy_columns(tasks: Sequence[Task]) -> tuple[str, ...]:
    """The columns of `task_insert_copy` this batch needs: the optional ones only if used
    (`_columns.COPY_COLUMNS_OPTIONAL`, unrolled; tests/unit/test_columns.py checks)."""
    extra = []
    if any(t.run_at is not None or t.delay is not None for t in tasks):
        extra.append("run_at")
    if any(t.timeout is not None for t in tasks):
        extra.append("timeout")
    if any(t.deadline is not None for t in tasks):
        extra.append("deadline")
    if any(t.retention is not None for t in tasks):
        extra.append("retention")
    if any(t.headers for t in tasks):
        extra.append("headers")
    return _sql.COPY_COLUMNS + tuple(extra)


def copy_run_at(task: Task, now: datetime) -> datetime:
    """The run_at of a row COPY inserts at ``now``: as the database computes it."""
    if task.run_at is not None:
        return task.run_at.astimezone(now.tzinfo)
    delay = _duration(task.delay)
    if delay is not None:
        # now() + make_interval(secs => delay): elapsed time, so add in UTC, not wall time.
        return (now.astimezone(timezone.utc) + delay).astimezone(now.tzinfo)
    return now


def copy_chunks(
    tasks: Sequence[Task],
    payloads: Sequence[str],
    ids: Sequence[int],
    columns: tuple[str, ...],
    run_ats: Sequence[datetime] | None,
    names: dict[str, str],
) -> Iterator[str]:
    """The rows of `task_insert_copy`, in COPY text format, `COPY_CHUNK_ROWS` at a time.

    ``names`` maps every queue and type name of the tasks to its escaped form.
    """
    optional = columns[len(_sql.COPY_COLUMNS) :]
    rows: list[str] = []
    for i, task in enumerate(tasks):
        payload = payloads[i]
        if "\\" in payload:
            payload = payload.replace("\\", "\\\\")  # JSON text has no tab or newline
        row = (
            f"{ids[i]}\t{names[task.queue]}\t{names[task.type]}\t{payload}"
            f"\t{task.priority}\t{task.max_attempts}"
        )
        if optional:
            row += copy_optional(task, optional, run_ats[i] if run_ats is not None else None)
        rows.append(row)
        if len(rows) == COPY_CHUNK_ROWS:
            rows.append("")
            yield "\n".join(rows)
            rows = []
    if rows:
        rows.append("")
        yield "\n".join(rows)


def copy_optional(task: Task, optional: tuple[str, ...], run_at: datetime | None) -> str:
    fields = []
    for column in optional:
        if column == "run_at":
            fields.append(copy_timestamp(run_at))
        elif column == "timeout":
            fields.append(copy_interval(_duration(task.timeout)))
        elif column == "deadline":
            fields.append(copy_timestamp(task.deadline))
        elif column == "retention":
            fields.append(copy_interval(_duration(task.retention)))
        else:
            fields.append(copy_text(dump_headers(task.headers) or "{}"))
    return "\t" + "\t".join(fields)


def copy_steps(stmts: _sql.Statements, batch: Batch, on_conflict: OnConflict) -> Flow:
    """One keyless batch through COPY: ids and time first, then the rows with those ids."""
    tasks, payloads = batch.tasks, batch.payloads
    queues = sorted({t.queue for t in tasks})
    types = {t.type for t in tasks}
    # Every name and payload is valid UTF-8 (Task and dump_payload refuse lone surrogates),
    # so COPY never fails halfway on the text.
    names = {name: copy_text(name) for name in (*queues, *types)}
    columns = copy_columns(tasks)
    (row,) = yield Fetch(stmts.task_insert_copy_ids, {"count": len(tasks), "queues": queues})
    now: datetime = row["now"]
    ids: Sequence[int] = row["ids"] or range(row["first_id"], row["first_id"] + len(tasks))
    run_ats = [copy_run_at(t, now) for t in tasks] if "run_at" in columns else None
    chunks = copy_chunks(tasks, payloads, ids, columns, run_ats, names)
    yield Copy(_sql.task_insert_copy(stmts.schema, columns), chunks)
    if run_ats is None:
        return [_pending_info(t, i, now, now) for t, i in zip(tasks, ids, strict=True)]
    return [_pending_info(t, i, r, now) for t, i, r in zip(tasks, ids, run_ats, strict=True)]


def enqueue_steps(
    stmts: _sql.Statements, batches: list[Batch], on_conflict: OnConflict, *, copy: bool
) -> Flow:
    """Enqueue the batches; yields steps, receives their rows, returns the TaskInfos."""
    results: list[TaskInfo] = []
    for batch in batches:
        if copy and not batch.keyed and len(batch.tasks) > 1:
            results.extend((yield from copy_steps(stmts, batch, on_conflict)))
        else:
            results.extend((yield from insert_steps(stmts, batch, on_conflict)))
    return results


def atomic(batches: Sequence[Batch], *, copy: bool) -> bool:
    """Whether the call may run several statements that must all commit or none."""
    return len(batches) > 1 or batches[0].keyed or (copy and len(batches[0].tasks) > 1)


def may_raise(batches: Sequence[Batch], on_conflict: OnConflict) -> bool:
    """Whether DuplicateTask may be raised, after some rows were inserted: needs a savepoint."""
    # ("update" raises nothing: its UPDATE is conditional, so it cannot fail on a row's state.)
    return on_conflict == "raise" and any(b.keyed for b in batches)


def resume(flow: Flow, sent: Any) -> Step | Done:
    """The flow's next step, or `Done` with its result."""
    try:
        return flow.send(sent)
    except StopIteration as stop:
        return Done(stop.value)
