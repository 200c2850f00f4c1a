"""The Client on a real PostgreSQL.

Every operation from every state (the table in `pgtasq.client`), races with a running worker,
the caller's transaction, filters and keyset pagination over thousands of rows, injection
attempts through every filter value, bulk operations in bounded batches, queues and workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from sqlalchemy.orm import Session

from pgtasq import (
    Client,
    ConfigurationError,
    Consumer,
    Cursor,
    DailyStats,
    DatabaseUnavailable,
    InvalidFilter,
    PgtasqError,
    Producer,
    SkipRetry,
    Task,
    TaskAlreadyAvailable,
    TaskAlreadyFinalized,
    TaskContext,
    TaskFilter,
    TaskInfo,
    TaskNotFound,
    TaskRunning,
    TaskStatus,
    TaskValidationError,
    _sql,
)
from pgtasq.filters import ID_MAX, ORDER_FIELDS
from tests.conftest import _drop_schema, clone_schema, count_tasks

Row = dict[str, Any]

# -- helpers ------------------------------------------------------------------------------


def execute(dsn: str, sql: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql, params)


def row_of(dsn: str, schema: str, task_id: int) -> Row | None:
    """The row as it is committed, every column, seen from a new connection."""
    with psycopg.connect(dsn, autocommit=True) as c, c.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT * FROM {schema}.tasks WHERE id = %s", (task_id,)).fetchone()


def all_rows(dsn: str, schema: str) -> list[Row]:
    with psycopg.connect(dsn, autocommit=True) as c, c.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT * FROM {schema}.tasks ORDER BY id").fetchall()


def info_of(dsn: str, schema: str, task_id: int) -> TaskInfo:
    """The row as a TaskInfo, read without the Client."""
    with psycopg.connect(dsn, autocommit=True) as c, c.cursor(row_factory=dict_row) as cur:
        found = cur.execute(
            f"SELECT {_sql.TASK_COLUMNS} FROM {schema}.tasks WHERE id = %s", (task_id,)
        ).fetchone()
    assert found is not None, f"task {task_id} is gone"
    return TaskInfo.from_row(found)


def db_now(dsn: str) -> datetime:
    with psycopg.connect(dsn, autocommit=True) as c:
        found = c.execute("SELECT now()").fetchone()
    assert found is not None
    value: datetime = found[0]
    return value


def enqueue(dsn: str, schema: str, *tasks: Task) -> list[int]:
    with Producer(dsn, schema=schema) as p:
        return [i.id for i in p.enqueue_many(tasks)]


# A cancel reaches a running handler at the worker's next heartbeat (every 0.2 s with `fast`):
# allow a loaded machine a few seconds, still far less than the lease (60 s) or a shutdown,
# the other ways a handler ends.
CANCEL_NOTICED_WITHIN = 5.0


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def fast(schema: str, **options: Any) -> Consumer:
    """A consumer with short timers and no backoff. The long lease keeps running rows still:
    the heartbeat only extends a lease with a third of it left."""
    defaults: dict[str, Any] = {
        "schema": schema,
        "lease": 60.0,
        "heartbeat_interval": 0.2,
        "poll_interval": 0.1,
        "retry_delay": lambda info, exc: 0.0,
        "shutdown_timeout": 2.0,
    }
    return Consumer(**{**defaults, **options})


def status_of(dsn: str, schema: str, task_id: int) -> str | None:
    found = row_of(dsn, schema, task_id)
    return None if found is None else str(found["status"])


_ONE_ERROR = '\'[{"attempt": 1, "error": "ValueError"}]\''
# Direct updates that put rows into a state, respecting the CHECK constraints
# (finalized_at iff final, locked_until iff running).
_STATE_SQL = {
    "running": "status = 'running', attempts = attempts + 1, attempted_at = now(), "
    "updated_at = now(), locked_by = 'ghost', locked_until = now() + interval '1 hour'",
    "completed": "status = 'completed', attempts = attempts + 1, attempted_at = now(), "
    "updated_at = now(), finalized_at = now(), result = '\"done\"'",
    "failed": "status = 'failed', attempts = max_attempts, attempted_at = now(), "
    "updated_at = now(), finalized_at = now(), errors = " + _ONE_ERROR,
    "cancelled": "status = 'cancelled', finalized_at = now(), updated_at = now()",
    "retry": "attempts = 1, errors = " + _ONE_ERROR,
    "scheduled": "run_at = now() + interval '1 day'",
    "retry_scheduled": "attempts = 1, run_at = now() + interval '1 day'",
}


def set_state(dsn: str, schema: str, ids: list[int], state: str) -> None:
    if ids:
        execute(
            dsn,
            f"UPDATE {schema}.tasks SET {_STATE_SQL[state]} WHERE id = ANY(%s)",
            (ids,),
        )


def seed(
    dsn: str, schema: str, queue: str, counts: dict[str, int], type_: str = "t"
) -> dict[str, list[int]]:
    """``counts`` tasks per state (a stored state, or one of the pending views) in one queue."""
    out: dict[str, list[int]] = {}
    for state, n in counts.items():
        ids = enqueue(dsn, schema, *[Task(type_, i, queue=queue, max_attempts=2) for i in range(n)])
        if state != "pending":
            set_state(dsn, schema, ids, state)
        out[state] = ids
    return out


@pytest.fixture
def client(pg_dsn: str, schema: str) -> Iterator[Client]:
    with Client(pg_dsn, schema=schema) as c:
        yield c


# -- every operation from every state -----------------------------------------------------


@dataclasses.dataclass
class Live:
    """One task in each state, put there by a real worker that is still running."""

    ids: dict[str, int]
    consumer: Consumer
    handler_stopped: dict[int, float]


@pytest.fixture
def every_status(pg_dsn: str, schema: str) -> Iterator[Live]:
    consumer = fast(schema)
    stopped: dict[int, float] = {}

    @consumer.task("ok")
    def ok(ctx: TaskContext) -> str:
        return "done"

    @consumer.task("boom")
    def boom(ctx: TaskContext) -> None:
        raise ValueError(f"boom {ctx.attempt}")

    @consumer.task("block")
    async def block(ctx: TaskContext) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped[ctx.id] = time.monotonic()
            raise

    # "idle" has no handler: it stays where it is put.
    names = ["pending", "running", "completed", "failed", "cancelled", "exhausted"]
    ids = dict(
        zip(
            names,
            enqueue(
                pg_dsn,
                schema,
                Task("idle", "pending"),
                Task("block"),
                Task("ok"),
                Task("boom", max_attempts=1),
                Task("idle", "cancelled"),
                Task("idle", "exhausted", max_attempts=2),
            ),
            strict=True,
        )
    )
    set_state(pg_dsn, schema, [ids["cancelled"]], "cancelled")
    execute(  # cancelled after its last attempt failed: retry must add one
        pg_dsn,
        f"UPDATE {schema}.tasks SET status = 'cancelled', attempts = 2, finalized_at = now() "
        "WHERE id = %s",
        (ids["exhausted"],),
    )
    ids["missing"] = max(ids.values()) + 1000
    expected = {
        "pending": "pending",
        "running": "running",
        "completed": "completed",
        "failed": "failed",
        "cancelled": "cancelled",
        "exhausted": "cancelled",
        "missing": None,
    }
    consumer.start(pg_dsn)
    try:
        wait_for(lambda: {k: status_of(pg_dsn, schema, v) for k, v in ids.items()} == expected)
        yield Live(ids, consumer, stopped)
    finally:
        consumer.stop(force=True, timeout=10)


def test_cancel_from_every_status(
    pg_dsn: str, schema: str, client: Client, every_status: Live
) -> None:
    ids = every_status.ids
    before = {name: row_of(pg_dsn, schema, i) for name, i in ids.items()}

    returned: dict[str, TaskInfo] = {}
    for name in ("pending", "running", "failed"):
        start = db_now(pg_dsn)
        info = returned[name] = client.cancel_task(ids[name])
        end = db_now(pg_dsn)
        old = before[name]
        assert old is not None
        assert (info.id, info.status) == (ids[name], TaskStatus.CANCELLED)
        assert info.finalized_at is not None and start <= info.finalized_at <= end
        assert info.updated_at == info.finalized_at
        assert info.locked_by is None and info.locked_until is None
        assert (info.attempts, info.max_attempts, info.run_at) == (
            old["attempts"],
            old["max_attempts"],
            old["run_at"],
        )
        assert info.errors == old["errors"] and info.attempted_at == old["attempted_at"]

    # The running task's handler is cancelled by the worker's next heartbeat (every 0.2 s).
    wait_for(lambda: ids["running"] in every_status.handler_stopped, timeout=2)
    for name in ("pending", "running", "failed"):  # the rows say what was returned
        assert info_of(pg_dsn, schema, ids[name]) == returned[name] == client.get_task(ids[name])
    assert info_of(pg_dsn, schema, ids["failed"]).errors[0]["error"] == "ValueError"

    # cancelled: nothing changes, not even updated_at; the current row comes back.
    for name in ("cancelled", "exhausted"):
        info = client.cancel_task(ids[name])
        assert row_of(pg_dsn, schema, ids[name]) == before[name]
        assert info == info_of(pg_dsn, schema, ids[name])

    with pytest.raises(TaskAlreadyFinalized) as finalized:
        client.cancel_task(ids["completed"])
    assert finalized.value.task_id == ids["completed"]
    assert str(ids["completed"]) in str(finalized.value)
    assert row_of(pg_dsn, schema, ids["completed"]) == before["completed"]

    with pytest.raises(TaskNotFound) as missing:
        client.cancel_task(ids["missing"])
    assert missing.value.task_id == ids["missing"]
    assert row_of(pg_dsn, schema, ids["missing"]) is None


def test_retry_from_every_status(
    pg_dsn: str, schema: str, client: Client, every_status: Live
) -> None:
    ids = every_status.ids
    before = {name: row_of(pg_dsn, schema, i) for name, i in ids.items()}

    refused: list[tuple[str, type[PgtasqError]]] = [
        ("pending", TaskAlreadyAvailable),
        ("running", TaskRunning),
        ("completed", TaskAlreadyFinalized),
        ("missing", TaskNotFound),
    ]
    for name, error in refused:
        with pytest.raises(error) as raised:
            client.retry_task(ids[name])
        assert type(raised.value) is error and raised.value.task_id == ids[name]  # type: ignore[attr-defined]
        assert row_of(pg_dsn, schema, ids[name]) == before[name], name
    assert ids["running"] not in every_status.handler_stopped  # its handler runs on

    # failed (1 of 1 attempts used) -> pending now, with one more attempt allowed.
    start = db_now(pg_dsn)
    info = client.retry_task(ids["failed"])
    end = db_now(pg_dsn)
    assert (info.status, info.attempts, info.max_attempts) == (TaskStatus.PENDING, 1, 2)
    assert start <= info.run_at <= end and info.updated_at == info.run_at
    assert info.finalized_at is None and info.locked_by is None and info.locked_until is None
    assert [e["message"] for e in info.errors] == ["boom 1"]  # the history is kept
    # The worker really gets the attempt: it runs the task again, and it fails again.
    wait_for(lambda: status_of(pg_dsn, schema, ids["failed"]) == "failed")
    again = info_of(pg_dsn, schema, ids["failed"])
    assert (again.attempts, again.max_attempts) == (2, 2)
    assert [e["message"] for e in again.errors] == ["boom 1", "boom 2"]

    # cancelled before it ever ran: attempts were left, max_attempts stays.
    info = client.retry_task(ids["cancelled"])
    assert (info.status, info.attempts, info.max_attempts) == (TaskStatus.PENDING, 0, 5)
    assert info.finalized_at is None and info == info_of(pg_dsn, schema, ids["cancelled"])

    # cancelled with every attempt used: one is added.
    info = client.retry_task(ids["exhausted"])
    assert (info.status, info.attempts, info.max_attempts) == (TaskStatus.PENDING, 2, 3)
    assert info.finalized_at is None and info == info_of(pg_dsn, schema, ids["exhausted"])

    # A second retry of a task now pending is refused.
    with pytest.raises(TaskAlreadyAvailable):
        client.retry_task(ids["exhausted"])


def test_delete_from_every_status(
    pg_dsn: str, schema: str, client: Client, every_status: Live
) -> None:
    ids = every_status.ids
    before = {name: row_of(pg_dsn, schema, i) for name, i in ids.items()}

    for name in ("pending", "completed", "failed", "cancelled", "exhausted"):
        expected = info_of(pg_dsn, schema, ids[name])
        assert client.delete_task(ids[name]) == expected  # what was deleted, as it was
        assert row_of(pg_dsn, schema, ids[name]) is None
        with pytest.raises(TaskNotFound):
            client.delete_task(ids[name])

    with pytest.raises(TaskRunning) as running:
        client.delete_task(ids["running"])
    assert running.value.task_id == ids["running"]
    assert row_of(pg_dsn, schema, ids["running"]) == before["running"]
    assert ids["running"] not in every_status.handler_stopped

    with pytest.raises(TaskNotFound) as missing:
        client.delete_task(ids["missing"])
    assert missing.value.task_id == ids["missing"]
    assert count_tasks(pg_dsn, schema) == 1


def test_get_task(pg_dsn: str, schema: str, client: Client) -> None:
    (task_id,) = enqueue(pg_dsn, schema, Task("t", {"k": [1, "ü"]}, queue="q", priority=3))
    info = client.get_task(task_id)
    assert info == info_of(pg_dsn, schema, task_id)
    assert (info.type, info.queue, info.payload, info.priority) == ("t", "q", {"k": [1, "ü"]}, 3)
    with pytest.raises(TaskNotFound) as missing:
        client.get_task(task_id + 1)
    assert missing.value.task_id == task_id + 1


# -- races with a worker ------------------------------------------------------------------


def test_cancel_fences_out_the_workers_completion(pg_dsn: str, schema: str, client: Client) -> None:
    # A slow heartbeat: the handler returns and its completion is written long before the
    # worker could notice the cancel, so only the fence in the database can keep it out.
    consumer = fast(schema, heartbeat_interval=5.0)
    started, release, returned = threading.Event(), threading.Event(), threading.Event()

    @consumer.task("t")
    def handler(ctx: TaskContext) -> dict[str, bool]:
        started.set()
        release.wait(5)
        returned.set()
        return {"done": True}

    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    consumer.start(pg_dsn)
    try:
        assert started.wait(5)
        cancelled = client.cancel_task(task_id)
        release.set()
        assert returned.wait(5)
        time.sleep(0.2)  # the outcome writer flushes within milliseconds
    finally:
        counts = consumer.stop(timeout=10)
    assert counts is not None
    assert (counts.completed, counts.lost, counts.failed) == (0, 1, 0)
    after = info_of(pg_dsn, schema, task_id)
    assert after == cancelled
    assert after.status is TaskStatus.CANCELLED and after.result is None
    assert after.locked_by is None and after.locked_until is None and after.errors == []


def test_cancel_stops_the_running_handler_at_the_next_heartbeat(
    pg_dsn: str, schema: str, client: Client
) -> None:
    consumer = fast(schema)
    started: dict[int, float] = {}
    stopped: dict[int, float] = {}

    @consumer.task("async")
    async def async_handler(ctx: TaskContext) -> None:
        started[ctx.id] = time.monotonic()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped[ctx.id] = time.monotonic()
            raise

    @consumer.task("sync")
    def sync_handler(ctx: TaskContext) -> str:
        started[ctx.id] = time.monotonic()
        ctx.cancelled.wait(30)
        stopped[ctx.id] = time.monotonic()
        return "returned after its cancel"

    a, s = enqueue(pg_dsn, schema, Task("async"), Task("sync"))
    consumer.start(pg_dsn)
    try:
        wait_for(lambda: a in started and s in started)
        cancel_at = time.monotonic()
        assert client.cancel_task(a).status is TaskStatus.CANCELLED
        assert client.cancel_task(s).status is TaskStatus.CANCELLED
        wait_for(lambda: a in stopped and s in stopped, timeout=CANCEL_NOTICED_WITHIN)
    finally:
        counts = consumer.stop(timeout=10)
    assert stopped[a] - cancel_at < CANCEL_NOTICED_WITHIN
    assert stopped[s] - cancel_at < CANCEL_NOTICED_WITHIN
    assert counts is not None and (counts.completed, counts.failed) == (0, 0)
    for task_id in (a, s):
        info = info_of(pg_dsn, schema, task_id)
        assert info.status is TaskStatus.CANCELLED and info.result is None and info.errors == []


def test_retry_and_delete_of_a_running_task_change_nothing(
    pg_dsn: str, schema: str, client: Client
) -> None:
    consumer = fast(schema)
    started, release = threading.Event(), threading.Event()

    @consumer.task("t")
    def handler(ctx: TaskContext) -> int:
        started.set()
        release.wait(5)
        return ctx.attempt

    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    consumer.start(pg_dsn)
    try:
        assert started.wait(5)
        before = row_of(pg_dsn, schema, task_id)
        assert before is not None and before["status"] == "running"
        with pytest.raises(TaskRunning) as retried:
            client.retry_task(task_id)
        with pytest.raises(TaskRunning) as deleted:
            client.delete_task(task_id)
        assert retried.value.task_id == deleted.value.task_id == task_id
        assert row_of(pg_dsn, schema, task_id) == before
        release.set()
        wait_for(lambda: status_of(pg_dsn, schema, task_id) == "completed")
    finally:
        release.set()
        counts = consumer.stop(timeout=10)
    # The worker's lease was untouched: it completed its own attempt normally.
    assert counts is not None and (counts.completed, counts.lost) == (1, 0)
    info = info_of(pg_dsn, schema, task_id)
    assert (info.attempts, info.result, info.errors) == (1, 1, [])


def _invalid(found: Row) -> list[str]:
    """What is wrong with a row (or a returned TaskInfo) of a task whose handler always fails."""
    status = str(found["status"])
    final = status in ("completed", "failed", "cancelled")
    wrong = []
    if status == "completed":
        wrong.append("completed, though the handler always fails")
    if (found["finalized_at"] is not None) != final:
        wrong.append(f"finalized_at wrong for {status}")
    if (found["locked_by"] is not None) != (status == "running"):
        wrong.append(f"locked_by wrong for {status}")
    if found["attempts"] > found["max_attempts"]:
        wrong.append("more attempts than allowed")
    if status == "pending" and found["attempts"] >= found["max_attempts"]:
        wrong.append("pending without an attempt left")
    return wrong


def test_concurrent_cancel_and_retry_never_leave_an_invalid_state(pg_dsn: str, schema: str) -> None:
    """Threads cancel and retry one task while a worker keeps claiming and failing it."""
    consumer = fast(schema, concurrency=4, heartbeat_interval=0.05, poll_interval=0.02)

    @consumer.task("t")
    def handler(ctx: TaskContext) -> None:
        ctx.cancelled.wait(0.01)
        raise ValueError(f"attempt {ctx.attempt}")

    (task_id,) = enqueue(pg_dsn, schema, Task("t", max_attempts=1))
    outcomes: list[str] = []
    problems: list[str] = []
    stop_checking = threading.Event()

    def checker() -> None:
        while not stop_checking.is_set():
            found = row_of(pg_dsn, schema, task_id)
            assert found is not None
            problems.extend(_invalid(found))

    def worker(seed: int, client: Client) -> None:
        rand = random.Random(seed)
        for _ in range(40):
            try:
                if rand.random() < 0.5:
                    info = client.cancel_task(task_id)
                    outcomes.append(f"cancel->{info.status.value}")
                else:
                    info = client.retry_task(task_id)
                    outcomes.append(f"retry->{info.status.value}")
                    if info.status is not TaskStatus.PENDING:
                        problems.append(f"retry returned {info.status.value}")
                problems.extend(_invalid(dataclasses.asdict(info)))
            except (TaskAlreadyAvailable, TaskRunning) as exc:
                outcomes.append(type(exc).__name__)
            except Exception as exc:  # anything else is a bug
                problems.append(repr(exc))

    consumer.start(pg_dsn)
    with Client(pg_dsn, schema=schema, pool_max_size=8) as client:
        threads = [threading.Thread(target=worker, args=(n, client)) for n in range(8)]
        watch = threading.Thread(target=checker)
        watch.start()
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
        finally:
            stop_checking.set()
            watch.join(5)
            counts = consumer.stop(timeout=10)
    assert problems == []
    assert len(outcomes) == 8 * 40
    assert {"cancel->cancelled", "retry->pending"} <= set(outcomes)
    assert counts is not None and counts.claimed >= 1 and counts.completed == 0
    final = row_of(pg_dsn, schema, task_id)
    assert final is not None and _invalid(final) == []
    # Every recorded failure belongs to a distinct attempt: fenced-out outcomes wrote nothing.
    attempts = [e["attempt"] for e in final["errors"]]
    assert attempts == sorted(set(attempts)) and all(a <= final["attempts"] for a in attempts)
    # The worker stopped: the task is not left running (a stale heartbeat reply once
    # cancelled the worker's newer claim of it, see the test below).
    assert final["status"] in ("pending", "failed", "cancelled")


def _wait_until_blocked(dsn: str, blocker: psycopg.Connection[Any]) -> None:
    """Until another session waits for a lock that ``blocker`` holds."""
    pid = blocker.info.backend_pid

    def blocked() -> bool:
        with psycopg.connect(dsn, autocommit=True) as c:
            found = c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (pid,),
            ).fetchone()
        return found is not None and found[0] >= 1

    wait_for(blocked)


@pytest.mark.parametrize("finalize", ["failed", "cancelled"])
def test_retry_racing_a_worker_that_finalizes_the_task(
    pg_dsn: str, schema: str, client: Client, finalize: str
) -> None:
    """The retry's snapshot says running; by the time it has the row lock, the row is final.

    PostgreSQL checks CHECK constraints on the row built from the snapshot's version before
    it re-reads the newer one, so the retry must clear the lease columns itself (it once
    raised CheckViolation on tasks_lease_iff_running here).
    """
    (task_id,) = enqueue(pg_dsn, schema, Task("t", max_attempts=1))
    set_state(pg_dsn, schema, [task_id], "running")
    with psycopg.connect(pg_dsn) as worker:
        # The worker finalizes the task; it has not committed when the retry starts.
        worker.execute(
            f"UPDATE {schema}.tasks SET status = %s, finalized_at = now(), locked_by = NULL, "
            "locked_until = NULL WHERE id = %s",
            (finalize, task_id),
        )
        result: list[TaskInfo | BaseException] = []

        def retry() -> None:
            try:
                result.append(client.retry_task(task_id))
            except BaseException as exc:
                result.append(exc)

        thread = threading.Thread(target=retry)
        thread.start()
        _wait_until_blocked(pg_dsn, worker)  # the retry's snapshot still says running
        worker.commit()
        thread.join(5)
    (outcome,) = result
    if isinstance(outcome, BaseException):
        raise outcome
    assert outcome.status is TaskStatus.PENDING and outcome.max_attempts == 2
    assert outcome.locked_by is None and outcome.locked_until is None
    assert info_of(pg_dsn, schema, task_id) == outcome


def test_a_stale_heartbeat_reply_spares_a_newer_claim_of_the_task(
    pg_dsn: str, schema: str, client: Client
) -> None:
    """Cancel, retry, and the same worker claims the task again while a heartbeat that saw
    the cancel is still on its way: its reply must not cancel the newer claim (it once did,
    leaving the task running with nobody working on it until the lease ran out)."""
    consumer = fast(schema, concurrency=2, heartbeat_interval=1.0)
    first_started, second_started = threading.Event(), threading.Event()
    release = threading.Event()
    contexts: list[TaskContext] = []

    @consumer.task("t")
    def handler(ctx: TaskContext) -> str:
        contexts.append(ctx)
        (first_started if ctx.attempt == 1 else second_started).set()
        release.wait(5)  # a sync handler that does not look at ctx.cancelled
        return f"attempt {ctx.attempt}"

    (task_id,) = enqueue(pg_dsn, schema, Task("t", max_attempts=1))
    consumer.start(pg_dsn)
    try:
        assert first_started.wait(5)
        wait_for(lambda: bool(client.list_workers()))
        (worker,) = client.list_workers()
        # Just after a heartbeat, so the next one starts about a second later.
        wait_for(lambda: client.list_workers()[0].heartbeat_at > worker.heartbeat_at, 3)
        with psycopg.connect(pg_dsn) as blocker:
            client.cancel_task(task_id)
            blocker.execute(
                f"SELECT 1 FROM {schema}.workers WHERE id = %s FOR UPDATE", (worker.id,)
            )
            # The next heartbeat reads "task_id is not yours" and waits on the worker row.
            _wait_until_blocked(pg_dsn, blocker)
            client.retry_task(task_id)
            assert second_started.wait(5)  # the same worker claimed the task again
            blocker.rollback()  # the stale reply arrives
        time.sleep(0.3)
        first, second = contexts
        assert first.claimed_at != second.claimed_at
        assert not second.cancelled.is_set(), "the newer claim was cancelled as lost"
        release.set()
        wait_for(lambda: status_of(pg_dsn, schema, task_id) == "completed")
        assert info_of(pg_dsn, schema, task_id).result == "attempt 2"
    finally:
        release.set()
        consumer.stop(timeout=10)


def test_a_cancel_that_changes_nothing_reports_the_row_it_decided_on(
    pg_dsn: str, schema: str
) -> None:
    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    set_state(pg_dsn, schema, [task_id], "cancelled")

    class Meanwhile(psycopg.Cursor[Any]):
        """Another session retries the task just before any follow-up statement."""

        sent = 0

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            Meanwhile.sent += 1
            if Meanwhile.sent > 1:
                with Client(pg_dsn, schema=schema) as other:
                    other.retry_task(task_id)
            return super().execute(query, params, **kwargs)

    with psycopg.connect(pg_dsn, autocommit=True, cursor_factory=Meanwhile) as conn:
        info = Client(schema=schema).cancel_task(task_id, conn=conn)
    assert info.status is TaskStatus.CANCELLED  # what cancel found and left alone
    assert Meanwhile.sent == 1


@pytest.mark.parametrize("state", ["pending", "running", "completed", "failed", "cancelled"])
@pytest.mark.parametrize("op", ["cancel_task", "retry_task", "delete_task"])
def test_each_change_is_one_statement_that_reports_the_row(
    pg_dsn: str, schema: str, op: str, state: str
) -> None:
    """Whatever it decides, an operation sends one statement, and what it returns (or the
    error it raises) comes from that statement alone."""
    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    if state != "pending":
        set_state(pg_dsn, schema, [task_id], state)
    sent: list[str] = []

    class Counting(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            sent.append(str(query))
            return super().execute(query, params, **kwargs)

    before = info_of(pg_dsn, schema, task_id)
    with psycopg.connect(pg_dsn, cursor_factory=Counting) as conn:
        try:
            info: TaskInfo | PgtasqError = getattr(Client(schema=schema), op)(task_id, conn=conn)
        except PgtasqError as exc:
            info = exc
        conn.commit()
    assert len(sent) == 1, sent
    if isinstance(info, PgtasqError):
        assert info_of(pg_dsn, schema, task_id) == before
    elif op == "delete_task":
        assert info == before and row_of(pg_dsn, schema, task_id) is None
    else:
        assert info == info_of(pg_dsn, schema, task_id)


# -- the caller's connection and transaction ----------------------------------------------


def test_on_the_callers_connection_nothing_is_committed(pg_dsn: str, schema: str) -> None:
    a, b = enqueue(pg_dsn, schema, Task("t"), Task("t"))
    client = Client(schema=schema)  # no DSN: only conn= works
    with psycopg.connect(pg_dsn) as conn:
        assert client.cancel_task(a, conn=conn).status is TaskStatus.CANCELLED
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert status_of(pg_dsn, schema, a) == "pending"  # not visible outside
        conn.rollback()
        assert status_of(pg_dsn, schema, a) == "pending"
        assert client.get_task(a, conn=conn).status is TaskStatus.PENDING

        client.delete_task(b, conn=conn)
        assert client.cancel_tasks(TaskFilter(), conn=conn) == 1
        conn.rollback()
        assert count_tasks(pg_dsn, schema, status="pending") == 2

        client.cancel_task(a, conn=conn)
        assert client.retry_task(a, conn=conn).status is TaskStatus.PENDING
        client.cancel_task(a, conn=conn)
        conn.commit()
    assert status_of(pg_dsn, schema, a) == "cancelled"
    with pytest.raises(ConfigurationError, match="no DSN"):
        client.get_task(a)


def test_an_error_leaves_the_callers_transaction_usable(pg_dsn: str, schema: str) -> None:
    pending, running, completed = enqueue(pg_dsn, schema, Task("t"), Task("t"), Task("t"))
    set_state(pg_dsn, schema, [running], "running")
    set_state(pg_dsn, schema, [completed], "completed")
    client = Client(schema=schema)
    with psycopg.connect(pg_dsn) as conn:
        mine = Producer(schema=schema).enqueue("mine", conn=conn)  # the caller's own work
        errors: list[tuple[Callable[..., Any], int, type[Exception]]] = [
            (client.cancel_task, pending + 1000, TaskNotFound),
            (client.get_task, pending + 1000, TaskNotFound),
            (client.retry_task, pending, TaskAlreadyAvailable),
            (client.retry_task, running, TaskRunning),
            (client.delete_task, running, TaskRunning),
            (client.cancel_task, completed, TaskAlreadyFinalized),
            (client.retry_task, completed, TaskAlreadyFinalized),
        ]
        for call, task_id, error in errors:
            with pytest.raises(error) as raised:
                call(task_id, conn=conn)
            assert raised.value.task_id == task_id  # type: ignore[attr-defined]
            assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert client.cancel_task(pending, conn=conn).status is TaskStatus.CANCELLED
        conn.commit()
    assert status_of(pg_dsn, schema, pending) == "cancelled"
    assert status_of(pg_dsn, schema, mine.id) == "pending"
    assert status_of(pg_dsn, schema, running) == "running"
    assert status_of(pg_dsn, schema, completed) == "completed"


def test_sqlalchemy_session(pg_dsn: str, schema: str) -> None:
    (task_id,) = enqueue(pg_dsn, schema, Task("t"))
    client = Client(schema=schema)
    engine = sa.create_engine("postgresql+psycopg://" + pg_dsn.removeprefix("postgresql://"))
    try:
        with Session(engine) as session:
            assert client.cancel_task(task_id, conn=session).status is TaskStatus.CANCELLED
            with pytest.raises(TaskNotFound):
                client.retry_task(task_id + 1, conn=session)
            session.rollback()
        assert status_of(pg_dsn, schema, task_id) == "pending"
        with Session(engine) as session, session.begin():
            client.cancel_task(task_id, conn=session)
            page = client.list_tasks(TaskFilter().statuses("cancelled"), conn=session)
            assert [t.id for t in page.tasks] == [task_id]
        assert status_of(pg_dsn, schema, task_id) == "cancelled"
    finally:
        engine.dispose()


def test_construction_errors(pg_dsn: str) -> None:
    with pytest.raises(ConfigurationError):
        Client(pg_dsn, schema="pgtasq; DROP TABLE x")
    with pytest.raises(TypeError, match="conn must be"):
        Client(schema="pgtasq").get_task(1, conn="not a connection")
    for bad in (0, -0.5, float("nan"), float("inf"), "1", True, None):
        for dsn in (pg_dsn, None):
            with pytest.raises(ConfigurationError, match="connect_timeout must be"):
                Client(dsn, connect_timeout=bad)  # type: ignore[arg-type]


CLOSED_PORT_DSN = "postgresql://nobody:secret@127.0.0.1:1/none"  # nothing listens on port 1


def test_connect_timeout_bounds_the_wait_for_a_dead_server(pg_dsn: str, schema: str) -> None:
    with Client(CLOSED_PORT_DSN, connect_timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL") as e:
            client.list_queues()
        assert time.monotonic() - started < 5  # 0.5 s asked; generous for a loaded machine
        assert "secret" not in str(e.value) and "127.0.0.1" in str(e.value)
    with Client(pg_dsn, schema=schema, connect_timeout=0.5) as client:  # a live server: fine
        assert client.list_queues() == []


class Forwarder:
    """A TCP port that refuses connections until `start`, then forwards them to the server
    (a server that is down, then comes back)."""

    def __init__(self, dsn: str) -> None:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        host, port = str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)
        # The embedded test server listens on a Unix socket: forward to that.
        self.target: str | tuple[str, int] = (
            f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]  # nothing listens here until start()
        self.dsn = psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=str(self.port))
        self.sockets: list[socket.socket] = []

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self.sockets.append(listener)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if isinstance(self.target, str):
                server = socket.socket(socket.AF_UNIX)
                server.connect(self.target)
            else:
                server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for s in self.sockets:  # shutdown wakes the threads blocked in accept() and recv()
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_after_a_failed_connect_the_next_use_tries_again(pg_dsn: str, schema: str) -> None:
    server = Forwarder(pg_dsn)
    try:
        with Client(server.dsn, schema=schema, connect_timeout=0.5) as client:
            for _ in range(2):  # down: each use fails the same way
                with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL"):
                    client.list_queues()
            server.start()  # back: the next use connects
            assert client.list_queues() == []
            client.close()  # and a closed client opens a new pool when used again
            assert client.list_queues() == []
    finally:
        server.close()


# -- filters and pagination over thousands of rows ----------------------------------------

BIG_TYPES = ("email", "sms", "push", "webhook")
BIG_QUEUES = ("default", "mail", "bulk")


@dataclasses.dataclass
class Big:
    schema: str
    rows: list[Row]
    now: datetime
    batch_created: list[datetime]


@pytest.fixture(scope="module")
def big(pg_dsn: str) -> Iterator[Big]:
    """3000 tasks in three enqueue batches, in every state, with varied order fields."""
    schema = "t_" + uuid.uuid4().hex[:12]
    clone_schema(pg_dsn, schema)
    rand = random.Random(7)
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    created: list[datetime] = []
    with Producer(pg_dsn, schema=schema) as producer:
        for batch in range(3):
            tasks = [
                Task(
                    BIG_TYPES[(batch * 1000 + i) % len(BIG_TYPES)],
                    {"n": batch * 1000 + i},
                    queue=BIG_QUEUES[i % len(BIG_QUEUES)],
                    priority=rand.randint(-3, 3),
                    run_at=past + timedelta(seconds=rand.randint(0, 600)),
                    max_attempts=3,
                )
                for i in range(1000)
            ]
            infos = producer.enqueue_many(tasks)
            assert len({i.created_at for i in infos}) == 1  # one transaction, one now()
            created.append(infos[0].created_at)
            time.sleep(0.01)
    for state, remainder in [
        ("completed", 1),
        ("failed", 2),
        ("cancelled", 3),
        ("running", 4),
        ("retry", 5),
        ("scheduled", 6),
        ("retry_scheduled", 7),
    ]:
        execute(
            pg_dsn,
            f"UPDATE {schema}.tasks SET {_STATE_SQL[state]} WHERE id %% 10 = %s",
            (remainder,),
        )
    execute(pg_dsn, f"UPDATE {schema}.tasks SET attempts = 2 WHERE id % 30 = 5")
    yield Big(schema, all_rows(pg_dsn, schema), db_now(pg_dsn), created)
    _drop_schema(pg_dsn, schema)


def _matches(r: Row, now: datetime, states: tuple[str, ...] = (), **f: Any) -> bool:
    if states:
        in_view = (
            r["status"] in states
            or ("scheduled" in states and r["status"] == "pending" and r["run_at"] > now)
            or ("retry" in states and r["status"] == "pending" and r["attempts"] > 0)
        )
        if not in_view:
            return False
    if "types" in f and r["type"] not in f["types"]:
        return False
    if "queues" in f and r["queue"] not in f["queues"]:
        return False
    if "ids" in f and r["id"] not in f["ids"]:
        return False
    if "after" in f and not r["created_at"] >= f["after"]:
        return False
    return not ("before" in f and not r["created_at"] < f["before"])


def _ordered(rows: list[Row], field: str, direction: str) -> list[int]:
    ordered = sorted(rows, key=lambda r: (r[field], r["id"]), reverse=direction == "desc")
    return [r["id"] for r in ordered]


def test_big_dataset_has_every_state(big: Big) -> None:
    statuses = {r["status"] for r in big.rows}
    assert statuses == {"pending", "running", "completed", "failed", "cancelled"}
    assert len(big.rows) == 3000


@pytest.mark.parametrize(
    ("build", "expect"),
    [
        (lambda f, b: f, {}),
        (lambda f, b: f.statuses("pending"), {"states": ("pending",)}),
        (lambda f, b: f.statuses("scheduled"), {"states": ("scheduled",)}),
        (lambda f, b: f.statuses("retry"), {"states": ("retry",)}),
        (lambda f, b: f.statuses("failed", "retry"), {"states": ("failed", "retry")}),
        (
            lambda f, b: f.statuses(TaskStatus.RUNNING, "completed", "cancelled"),
            {"states": ("running", "completed", "cancelled")},
        ),
        (lambda f, b: f.types("sms"), {"types": ("sms",)}),
        (lambda f, b: f.types("sms", "push", "nope"), {"types": ("sms", "push", "nope")}),
        (lambda f, b: f.queues("mail"), {"queues": ("mail",)}),
        (
            lambda f, b: f.queues("bulk").types("email").statuses("pending"),
            {"queues": ("bulk",), "types": ("email",), "states": ("pending",)},
        ),
        (lambda f, b: f.ids(3, 4, 2999, 999_999), {"ids": (3, 4, 2999, 999_999)}),
        (lambda f, b: f.created_after(b.batch_created[1]), {"after": "1"}),
        (lambda f, b: f.created_before(b.batch_created[1]), {"before": "1"}),
        (
            lambda f, b: f.created_after(b.batch_created[1]).created_before(b.batch_created[2]),
            {"after": "1", "before": "2"},
        ),
    ],
    ids=[
        "all",
        "pending",
        "scheduled",
        "retry",
        "failed+retry",
        "running+completed+cancelled",
        "type",
        "types",
        "queue",
        "queue+type+state",
        "ids",
        "created_after",
        "created_before",
        "created_between",
    ],
)
def test_filters_select_exactly_the_matching_tasks(
    pg_dsn: str, big: Big, build: Callable[[TaskFilter, Big], TaskFilter], expect: dict[str, Any]
) -> None:
    expect = dict(expect)
    for key in ("after", "before"):
        if key in expect:
            expect[key] = big.batch_created[int(expect[key])]
    wanted = [r["id"] for r in big.rows if _matches(r, big.now, **expect)]
    with Client(pg_dsn, schema=big.schema) as client:
        page = client.list_tasks(build(TaskFilter(), big).limit(10_000), count="exact")
    assert [t.id for t in page.tasks] == wanted
    assert page.total == len(wanted)
    assert page.next_cursor is None


def test_created_boundaries_are_inclusive_then_exclusive(pg_dsn: str, big: Big) -> None:
    second = big.batch_created[1]
    with Client(pg_dsn, schema=big.schema) as client:
        from_second = client.list_tasks(TaskFilter().created_after(second).limit(1), count="exact")
        before_second = client.list_tasks(
            TaskFilter().created_before(second).limit(1), count="exact"
        )
    assert (from_second.total, before_second.total) == (2000, 1000)


@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("field", ORDER_FIELDS)
def test_keyset_pagination_walks_every_row_once_in_order(
    pg_dsn: str, big: Big, field: str, direction: Any
) -> None:
    expected = _ordered(big.rows, field, direction)
    base = TaskFilter().order_by(field, direction)
    seen: list[int] = []
    pages = 0
    with Client(pg_dsn, schema=big.schema) as client:
        single = client.list_tasks(base.limit(10_000))
        f = base.limit(337)
        while True:
            page = client.list_tasks(f, count="exact")
            pages += 1
            assert page.total == 3000
            seen.extend(t.id for t in page.tasks)
            if page.next_cursor is None:
                break
            last = page.tasks[-1]
            assert page.next_cursor == Cursor(getattr(last, field), last.id)
            f = f.after(page.next_cursor)
    assert [t.id for t in single.tasks] == expected
    assert seen == expected  # no duplicates, no gaps, the single query's order
    assert pages == 9  # 8 full pages of 337 and one of 304
    assert page.tasks and len(page.tasks) == 3000 - 8 * 337


def test_keyset_pagination_with_a_filter_and_an_exact_last_page(pg_dsn: str, big: Big) -> None:
    f = TaskFilter().statuses("pending", "failed").queues("mail").order_by("run_at", "desc")
    expected = _ordered(
        [r for r in big.rows if _matches(r, big.now, ("pending", "failed"), queues=("mail",))],
        "run_at",
        "desc",
    )
    size = next(n for n in range(50, 200) if len(expected) % n == 0)  # ends on a full page
    seen: list[int] = []
    requests = 1
    with Client(pg_dsn, schema=big.schema) as client:
        page = client.list_tasks(f.limit(size), count="exact")
        while page.next_cursor is not None:
            seen.extend(t.id for t in page.tasks)
            assert page.total == len(expected) and len(page.tasks) == size
            page = client.list_tasks(f.limit(size).after(page.next_cursor), count="exact")
            requests += 1
        seen.extend(t.id for t in page.tasks)
    assert len(page.tasks) == size and page.total == len(expected)  # the last page is full
    assert requests == len(expected) // size  # and no empty page is asked for after it
    assert seen == expected


def test_the_page_and_the_total_agree_while_others_write(pg_dsn: str, schema: str) -> None:
    """Another session enqueues and deletes before any statement after the first one."""
    ids = enqueue(pg_dsn, schema, *[Task("t")] * 5)
    sent: list[str] = []

    class Meanwhile(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            sent.append(str(query))
            if len(sent) > 1:
                enqueue(pg_dsn, schema, Task("t"), Task("t"))
                execute(pg_dsn, f"DELETE FROM {schema}.tasks WHERE id = %s", (ids.pop(0),))
            return super().execute(query, params, **kwargs)

    with psycopg.connect(pg_dsn, autocommit=True, cursor_factory=Meanwhile) as conn:
        page = Client(schema=schema).list_tasks(TaskFilter().limit(50), conn=conn)
        assert page.total == len(page.tasks) == 5 and [t.id for t in page.tasks] == ids
        sent.clear()
        page = Client(schema=schema).list_tasks(TaskFilter().limit(2), conn=conn)
        assert page.total == 5 and [t.id for t in page.tasks] == ids[:2]
    assert len(sent) == 1


# Per order field: the extreme values the server's type takes (accepted, and they page
# correctly), and values just past them or of another type (refused before any SQL).
CURSOR_VALUES: dict[str, tuple[list[Any], list[Any]]] = {
    "id": ([-(2**63), 2**63 - 1], [2**63, 1.0, "1", True, None]),
    "priority": ([-(2**15), 2**15 - 1], [2**15, -(2**15) - 1, 1.5, "0", None]),
    "attempts": ([-(2**31), 2**31 - 1], [2**31, False, "2"]),
    "created_at": (
        [datetime.min.replace(tzinfo=timezone.utc), datetime(9999, 1, 1, tzinfo=timezone.utc)],
        [datetime(2026, 1, 1), "2026-01-01T00:00:00+00:00", date(2026, 1, 1), 0, None],
    ),
    "updated_at": ([datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=5)))], [1]),
    "run_at": ([datetime(2000, 1, 1, tzinfo=timezone.utc)], [datetime(2000, 1, 1)]),
}


@pytest.mark.parametrize("field", ORDER_FIELDS)
def test_cursor_values_are_checked_against_the_order_field(
    pg_dsn: str, big: Big, field: str
) -> None:
    good, bad = CURSOR_VALUES[field]
    base = TaskFilter().order_by(field).limit(10_000)
    with Client(pg_dsn, schema=big.schema) as client, psycopg.connect(pg_dsn) as conn:
        for value in good:
            page = client.list_tasks(base.after(Cursor(value, 1)), conn=conn)
            expected = [r["id"] for r in big.rows if (r[field], r["id"]) > (value, 1)]
            assert sorted(t.id for t in page.tasks) == sorted(expected), value
        for value in bad:
            with pytest.raises(InvalidFilter, match=f"ordered by {field}, the cursor's value"):
                base.after(Cursor(value, 1))
            with pytest.raises(InvalidFilter, match=f"ordered by {field}, the cursor's value"):
                TaskFilter(order_field=field, cursor=Cursor(value, 1))
        for task_id in (2**63, "7", None, True):
            with pytest.raises(InvalidFilter, match="cursor's id"):
                base.after(Cursor(good[0], task_id))
        assert conn.info.transaction_status == TransactionStatus.INTRANS  # still usable
        assert client.list_tasks(base.limit(1), count="exact", conn=conn).total == 3000


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_offset_pages(pg_dsn: str, big: Big, direction: Any) -> None:
    expected = _ordered(big.rows, "priority", direction)
    with Client(pg_dsn, schema=big.schema) as client:
        for offset in (0, 1, 999, 2990, 3000, 5000):
            f = TaskFilter().order_by("priority", direction).offset(offset).limit(25)
            page = client.list_tasks(f, count="exact")
            assert [t.id for t in page.tasks] == expected[offset : offset + 25]
            assert page.total == 3000


def test_list_defaults_to_a_hundred_by_id(pg_dsn: str, big: Big) -> None:
    with Client(pg_dsn, schema=big.schema) as client:
        page = client.list_tasks(count="exact")
    assert [t.id for t in page.tasks] == [r["id"] for r in big.rows[:100]]
    assert page.total == 3000 and page.next_cursor == Cursor(big.rows[99]["id"], big.rows[99]["id"])


# -- injection ------------------------------------------------------------------------------


def test_injection_through_every_filter_value_changes_nothing(
    pg_dsn: str, schema: str, client: Client
) -> None:
    nasty = [
        f"x'; DROP TABLE {schema}.tasks; --",
        "' OR '1'='1",
        '"; DELETE FROM pgtasq.tasks; --',
        "back\\slash\\'",
        "%(types)s",
        "%s",
        "$1",
        ":name",
        "ünïcødé ✓ 日本語 🚀",
        "tab\tnew\nline",
    ]
    ids = enqueue(pg_dsn, schema, *[Task(v, i, queue=v) for i, v in enumerate(nasty)])
    plain = enqueue(pg_dsn, schema, Task("plain"))
    before = all_rows(pg_dsn, schema)

    for task_id, value in zip(ids, nasty, strict=True):
        by_type = client.list_tasks(TaskFilter().types(value))
        by_queue = client.list_tasks(TaskFilter().queues(value))
        assert [t.id for t in by_type.tasks] == [task_id] and by_type.total == 1, value
        assert [t.id for t in by_queue.tasks] == [task_id] and by_queue.total == 1, value
        assert by_type.tasks[0].type == value and by_queue.tasks[0].queue == value
    for value in ("' OR 1=1 --", "x') OR true --", "*", "%", "_"):
        f = TaskFilter().types(value)
        assert client.list_tasks(f).total == 0
        assert client.list_tasks(TaskFilter().queues(value)).total == 0
        assert client.cancel_tasks(f) == 0
        assert client.retry_tasks(f) == 0
        assert client.delete_tasks(TaskFilter().queues(value)) == 0
    assert client.queue_history(nasty[0]) == []

    with pytest.raises(InvalidFilter):
        TaskFilter().statuses("pending') OR true --")
    for field in ("id; DROP TABLE tasks", "payload", "id DESC, (SELECT 1)", "ID", "id "):
        with pytest.raises(InvalidFilter):
            TaskFilter().order_by(field)
    with pytest.raises(InvalidFilter):
        TaskFilter().order_by("id", "desc; DROP TABLE tasks")  # type: ignore[arg-type]
    with pytest.raises(InvalidFilter):
        TaskFilter().ids("1 OR 1=1")  # type: ignore[arg-type]
    with pytest.raises(InvalidFilter):
        TaskFilter().limit("1; --")  # type: ignore[arg-type]

    # A filter built from its fields is checked as the builder checks it.
    for fields in (
        {"order_field": "id; DROP TABLE x"},
        {"limit_rows": "1; DROP TABLE x"},
        {"order_direction": "desc; DROP TABLE x"},
        {"type_names": ("x", "' OR 1=1 --", 7)},
    ):
        with pytest.raises(InvalidFilter):
            TaskFilter(**fields)
    # Past those checks (a filter forged without __init__), nothing still reaches SQL text:
    # the order field is looked up in a fixed table and numbers go through int().
    with psycopg.connect(pg_dsn) as conn:
        for name, value in [("order_field", "id; DROP TABLE x"), ("limit_rows", "1; DROP x")]:
            forged = TaskFilter()
            object.__setattr__(forged, name, value)
            with pytest.raises((KeyError, ValueError)):
                client.list_tasks(forged, conn=conn)
            assert conn.info.transaction_status == TransactionStatus.IDLE  # nothing was sent
        # A direction that is not "desc" is ascending; it is never placed in the text.
        odd = TaskFilter()
        object.__setattr__(odd, "order_direction", "desc; DROP TABLE x")
        assert [t.id for t in client.list_tasks(odd, conn=conn).tasks] == [*ids, *plain]
        conn.rollback()
        conn.rollback()
        # A cursor value of the wrong type is refused before any SQL; forged past that check
        # it is still a bound parameter, which the server refuses as data.
        with pytest.raises(InvalidFilter, match="cursor's value must be an integer"):
            TaskFilter().after(Cursor("1; DROP TABLE x", 1))
        forged_cursor = TaskFilter().after(Cursor(1, 1))
        object.__setattr__(forged_cursor, "cursor", Cursor("1; DROP TABLE x", 1))
        with pytest.raises(psycopg.DataError):
            client.list_tasks(forged_cursor, conn=conn)
        conn.rollback()

    # A queue name is stored as data too.
    client.pause_queue(nasty[0])
    assert [q.name for q in client.list_queues() if q.paused] == [nasty[0]]
    assert all_rows(pg_dsn, schema) == before


def test_injection_through_the_connection_paths_with_sqlalchemy(pg_dsn: str, schema: str) -> None:
    value = "a:b' OR '1'='1 %(x)s :types"
    (task_id,) = enqueue(pg_dsn, schema, Task(value, queue=value))
    enqueue(pg_dsn, schema, Task("other"))
    engine = sa.create_engine("postgresql+psycopg://" + pg_dsn.removeprefix("postgresql://"))
    try:
        with engine.connect() as conn:
            page = Client(schema=schema).list_tasks(
                TaskFilter().types(value).queues(value), conn=conn
            )
            assert [t.id for t in page.tasks] == [task_id] and page.total == 1
    finally:
        engine.dispose()


# -- bulk operations ------------------------------------------------------------------------


def _steps(total: int, batch: int) -> list[int]:
    """The progress calls of a bulk operation: the running count after each batch that
    changed rows, each count once (0 once when nothing changed)."""
    return [min(batch * k, total) for k in range(1, -(-total // batch) + 1)] or [0]


MIX = {
    "pending": 20,
    "scheduled": 5,
    "retry": 3,
    "running": 4,
    "completed": 3,
    "failed": 6,
    "cancelled": 2,
}


def test_bulk_cancel(pg_dsn: str, schema: str, client: Client) -> None:
    a = seed(pg_dsn, schema, "a", MIX)
    b = seed(pg_dsn, schema, "b", {"pending": 10})
    before = {r["id"]: r for r in all_rows(pg_dsn, schema)}
    seen: list[int] = []
    start = db_now(pg_dsn)
    n = client.cancel_tasks(TaskFilter().queues("a").limit(1), batch_size=7, progress=seen.append)
    end = db_now(pg_dsn)
    changed = [*a["pending"], *a["scheduled"], *a["retry"], *a["running"], *a["failed"]]
    assert n == len(changed) == 38
    assert seen == _steps(38, 7) == [7, 14, 21, 28, 35, 38]
    for r in all_rows(pg_dsn, schema):
        if r["id"] in changed:
            assert r["status"] == "cancelled" and r["locked_by"] is None
            assert r["locked_until"] is None and start <= r["finalized_at"] <= end
            assert r["attempts"] == before[r["id"]]["attempts"]
        else:
            assert r == before[r["id"]]
    assert {r["queue"] for r in all_rows(pg_dsn, schema) if r["status"] == "pending"} == {"b"}
    assert len(b["pending"]) == count_tasks(pg_dsn, schema, status="pending") == 10


def test_bulk_retry_leaves_an_attempt(pg_dsn: str, schema: str, client: Client) -> None:
    a = seed(pg_dsn, schema, "default", MIX)
    before = {r["id"]: r for r in all_rows(pg_dsn, schema)}
    seen: list[int] = []
    start = db_now(pg_dsn)
    assert client.retry_tasks(TaskFilter(), batch_size=7, progress=seen.append) == 8
    end = db_now(pg_dsn)
    assert seen == [7, 8]
    retried = [*a["failed"], *a["cancelled"]]
    for r in all_rows(pg_dsn, schema):
        if r["id"] in retried:
            assert r["status"] == "pending" and r["finalized_at"] is None
            assert start <= r["run_at"] <= end
            assert r["max_attempts"] == max(2, before[r["id"]]["attempts"] + 1)
            assert r["max_attempts"] > r["attempts"]
        else:
            assert r == before[r["id"]]
    # The attempt is real: a worker runs every retried task once more.
    consumer = fast(schema)
    consumer.register("t", lambda ctx: "again")
    counts = consumer.run(pg_dsn, burst=True)
    assert counts.completed == len(retried) + len(a["pending"]) + len(a["retry"])
    for task_id in retried:
        assert status_of(pg_dsn, schema, task_id) == "completed"


def test_bulk_delete_never_deletes_running_tasks(pg_dsn: str, schema: str, client: Client) -> None:
    a = seed(pg_dsn, schema, "a", MIX)
    seed(pg_dsn, schema, "b", {"running": 2, "pending": 1})
    running = {r["id"]: r for r in all_rows(pg_dsn, schema) if r["status"] == "running"}
    seen: list[int] = []
    assert client.delete_tasks(TaskFilter(), batch_size=7, progress=seen.append) == 40
    assert seen == _steps(40, 7)
    assert {r["id"]: r for r in all_rows(pg_dsn, schema)} == running
    assert set(a["running"]) < set(running)
    # Explicitly asking for running tasks deletes nothing either.
    assert client.delete_tasks(TaskFilter().statuses("running")) == 0
    assert count_tasks(pg_dsn, schema) == 6


def test_bulk_with_views_ids_and_types(pg_dsn: str, schema: str, client: Client) -> None:
    a = seed(pg_dsn, schema, "a", MIX)
    x = seed(pg_dsn, schema, "a", {"pending": 4}, type_="x")
    assert client.cancel_tasks(TaskFilter().statuses("scheduled")) == 5
    steps: list[int] = []
    assert (
        client.cancel_tasks(TaskFilter().statuses("retry"), batch_size=1, progress=steps.append)
        == 3
    )
    assert steps == [1, 2, 3]  # the empty batch after a full last one reports nothing
    assert client.delete_tasks(TaskFilter().ids(*a["pending"][:3], a["running"][0])) == 3
    assert client.cancel_tasks(TaskFilter().types("x")) == 4
    assert client.retry_tasks(TaskFilter().types("x").statuses("cancelled")) == 4
    assert {status_of(pg_dsn, schema, i) for i in x["pending"]} == {"pending"}
    assert {status_of(pg_dsn, schema, i) for i in a["scheduled"] + a["retry"]} == {"cancelled"}
    assert count_tasks(pg_dsn, schema) == sum(MIX.values()) + 4 - 3


def test_bulk_skips_rows_another_session_holds(pg_dsn: str, schema: str, client: Client) -> None:
    ids = seed(pg_dsn, schema, "a", {"pending": 30})["pending"]
    held = ids[3]
    with psycopg.connect(pg_dsn) as other:
        other.execute(f"SELECT 1 FROM {schema}.tasks WHERE id = %s FOR UPDATE", (held,))
        seen: list[int] = []
        assert client.cancel_tasks(TaskFilter(), batch_size=7, progress=seen.append) == 29
        assert seen == _steps(29, 7)
        other.rollback()
    assert status_of(pg_dsn, schema, held) == "pending"
    assert count_tasks(pg_dsn, schema, status="cancelled") == 29


def test_bulk_batches_commit_on_their_own_without_a_connection(pg_dsn: str, schema: str) -> None:
    seed(pg_dsn, schema, "a", {"pending": 20})
    seen: list[tuple[int, int]] = []

    def progress(done: int) -> None:  # what another session sees after each batch
        seen.append((done, count_tasks(pg_dsn, schema, status="cancelled")))

    with Client(pg_dsn, schema=schema) as client:
        assert client.cancel_tasks(TaskFilter(), batch_size=7, progress=progress) == 20
    assert seen == [(7, 7), (14, 14), (20, 20)]

    with psycopg.connect(pg_dsn) as conn:
        seen.clear()
        assert (
            Client(schema=schema).retry_tasks(
                TaskFilter(), conn=conn, batch_size=7, progress=progress
            )
            == 20
        )
        assert seen == [(7, 20), (14, 20), (20, 20)]  # one transaction: nothing seen yet
        conn.rollback()
    assert count_tasks(pg_dsn, schema, status="cancelled") == 20


@pytest.mark.parametrize(
    ("total", "expected"),
    [(0, [0]), (1, [1]), (6, [6]), (7, [7]), (14, [7, 14]), (21, [7, 14, 21])],
)
def test_bulk_progress_reports_each_count_once(
    pg_dsn: str, schema: str, client: Client, total: int, expected: list[int]
) -> None:
    """Also when the total is a multiple of the batch size (the last batch is then empty)."""
    seed(pg_dsn, schema, "a", {"pending": total})
    calls: dict[str, list[int]] = {"cancel": [], "retry": [], "delete": [], "clean": []}
    assert client.cancel_tasks(TaskFilter(), batch_size=7, progress=calls["cancel"].append) == total
    assert client.retry_tasks(TaskFilter(), batch_size=7, progress=calls["retry"].append) == total
    execute(pg_dsn, f"UPDATE {schema}.tasks SET {_STATE_SQL['cancelled']}")
    execute(pg_dsn, f"UPDATE {schema}.tasks SET finalized_at = now() - interval '2 days'")
    assert client.clean(batch_size=7, progress=calls["clean"].append) == total
    seed(pg_dsn, schema, "a", {"pending": total})
    assert client.delete_tasks(TaskFilter(), batch_size=7, progress=calls["delete"].append) == total
    assert calls == {key: expected for key in calls}
    assert _steps(total, 7) == expected


def test_bulk_batch_size_is_checked_before_sql(client: Client) -> None:
    for size in (0, -1, 10_001):
        seen: list[int] = []
        with pytest.raises(ValueError, match="batch_size"):
            client.delete_tasks(TaskFilter(), batch_size=size, progress=seen.append)
        assert seen == []


# -- queues ----------------------------------------------------------------------------------


def test_list_queues_counts_each_state_and_latency(
    pg_dsn: str, schema: str, client: Client
) -> None:
    old = datetime.now(timezone.utc) - timedelta(seconds=30)
    enqueue(pg_dsn, schema, Task("t", queue="q", run_at=old))
    seed(
        pg_dsn,
        schema,
        "q",
        {
            "pending": 2,
            "retry": 1,
            "scheduled": 2,
            "retry_scheduled": 1,
            "running": 2,
            "completed": 1,
            "failed": 1,
            "cancelled": 3,
        },
    )
    seed(pg_dsn, schema, "other", {"scheduled": 1})
    client.pause_queue("empty")
    queues = {q.name: q for q in client.list_queues()}
    assert list(queues) == ["empty", "other", "q"]
    q = queues["q"]
    # Each pending task counts once: retry (due or not), else scheduled, else pending.
    assert (q.pending, q.scheduled, q.retry, q.running) == (3, 2, 2, 2)
    assert (q.completed, q.failed, q.cancelled, q.size) == (1, 1, 3, 9)
    assert q.pending + q.scheduled + q.retry == count_tasks(
        pg_dsn, schema, queue="q", status="pending"
    )
    # The retry column is what `tasks list --status retry` lists.
    assert q.retry == client.list_tasks(TaskFilter().statuses("retry").queues("q")).total
    assert timedelta(seconds=30) <= q.latency < timedelta(seconds=35)
    assert not q.paused
    # No attempt has finished: the daily counters are empty.
    assert (q.processed_today, q.failed_today, q.processed_total, q.failed_total) == (0, 0, 0, 0)
    other = queues["other"]
    assert (other.pending, other.scheduled, other.latency) == (0, 1, timedelta(0))
    empty = queues["empty"]
    assert empty.paused and empty.size == 0 and empty.latency == timedelta(0)


def test_pause_and_resume_queue(pg_dsn: str, schema: str, client: Client) -> None:
    enqueue(pg_dsn, schema, *[Task("t", queue=q) for q in ("q1", "q1", "q2")])
    consumer = fast(schema, queues=["q1", "q2"])
    consumer.register("t", lambda ctx: ctx.queue)
    client.pause_queue("q1")
    client.pause_queue("q1")  # idempotent
    assert {q.name: q.paused for q in client.list_queues()} == {"q1": True, "q2": False}
    counts = consumer.run(pg_dsn, burst=True)
    assert (counts.claimed, counts.completed) == (1, 1)
    assert count_tasks(pg_dsn, schema, queue="q1", status="pending") == 2
    with psycopg.connect(pg_dsn) as c:
        paused_at = c.execute(f"SELECT paused_at FROM {schema}.queues WHERE name = 'q1'").fetchone()
    assert paused_at is not None and paused_at[0] is not None

    client.resume_queue("q1")
    client.resume_queue("never-paused")
    assert {q.name: q.paused for q in client.list_queues()} == {
        "never-paused": False,
        "q1": False,
        "q2": False,
    }
    assert consumer.run(pg_dsn, burst=True).completed == 2
    assert count_tasks(pg_dsn, schema, status="completed") == 3

    with psycopg.connect(pg_dsn) as conn:  # on the caller's connection: not committed
        client.pause_queue("q2", conn=conn)
        conn.rollback()
    assert not {q.name: q for q in client.list_queues()}["q2"].paused


def test_queue_history(pg_dsn: str, schema: str, client: Client) -> None:
    assert client.queue_history() == []
    consumer = fast(schema, queues=["q1", "q2"])
    consumer.register("ok", lambda ctx: None)

    @consumer.task("flaky")
    def flaky(ctx: TaskContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("once")

    @consumer.task("bad")
    def bad(ctx: TaskContext) -> None:
        raise SkipRetry("never")

    enqueue(
        pg_dsn, schema, Task("ok", queue="q1"), Task("flaky", queue="q1"), Task("bad", queue="q2")
    )
    assert consumer.run(pg_dsn, burst=True).completed == 2
    with psycopg.connect(pg_dsn) as c:
        found = c.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
        assert found is not None
        today: date = found[0]
    day = timedelta(days=1)
    # The worker counts every finished attempt, per queue and UTC day.
    assert client.queue_history() == [
        DailyStats(queue="q1", day=today, completed=2, failed=0, retried=1),
        DailyStats(queue="q2", day=today, completed=0, failed=1, retried=0),
    ]

    execute(
        pg_dsn,
        f"INSERT INTO {schema}.queue_daily_stats (queue, day, completed, failed, retried) "
        "VALUES ('q1', %(d1)s, 3, 0, 0), ('q1', %(d7)s, 9, 9, 0)",
        {"d1": today - day, "d7": today - 7 * day},
    )
    assert [(s.queue, s.day) for s in client.queue_history()] == [
        ("q1", today),
        ("q2", today),
        ("q1", today - day),
    ]
    assert [s.day for s in client.queue_history("q1", days=1)] == [today]
    assert [s.day for s in client.queue_history("q1", days=8)] == [
        today,
        today - day,
        today - 7 * day,
    ]
    assert client.queue_history("q1", days=8)[-1].processed == 18
    assert client.queue_history("nope") == []
    for days in (0, 3651):
        with pytest.raises(ValueError, match="days"):
            client.queue_history(days=days)
    q1 = {q.name: q for q in client.list_queues()}["q1"]
    assert (q1.processed_today, q1.failed_today) == (3, 1)
    assert (q1.processed_total, q1.failed_total) == (3 + 3 + 18, 1 + 9)


@pytest.mark.parametrize("name", ["", "q" * 129])
def test_pause_queue_refuses_a_bad_name_before_sql(pg_dsn: str, schema: str, name: str) -> None:
    """Refused in Python, so the caller's transaction is untouched (the CHECK constraint
    used to refuse it, leaving the transaction aborted)."""
    with psycopg.connect(pg_dsn) as conn:
        with pytest.raises(ValueError, match="name"):
            Client(schema=schema).pause_queue(name, conn=conn)
        with pytest.raises(ValueError, match="name"):
            Client(schema=schema).resume_queue(name, conn=conn)
        assert conn.info.transaction_status == TransactionStatus.IDLE


# -- workers -----------------------------------------------------------------------------------


def test_list_workers_shows_a_running_consumer(pg_dsn: str, schema: str, client: Client) -> None:
    consumer = fast(schema, queues={"a": 2, "b": 1}, concurrency=3)
    release = threading.Event()
    running: set[int] = set()

    @consumer.task("t")
    def handler(ctx: TaskContext) -> None:
        running.add(ctx.id)
        release.wait(5)

    ids = enqueue(pg_dsn, schema, Task("t", queue="a"), Task("t", queue="b"), Task("idle"))
    assert client.list_workers() == []
    start = db_now(pg_dsn)
    consumer.start(pg_dsn)
    try:
        wait_for(lambda: running == set(ids[:2]))
        wait_for(lambda: bool(client.list_workers()))
        (worker,) = client.list_workers()
        assert (worker.host, worker.pid) == (socket.gethostname(), os.getpid())
        assert worker.queues == {"a": 2, "b": 1} and worker.concurrency == 3
        assert worker.running == ids[:2]
        assert start <= worker.started_at <= worker.heartbeat_at <= db_now(pg_dsn)
        assert worker.id.startswith(f"{socket.gethostname()}:{os.getpid()}:")
        assert info_of(pg_dsn, schema, ids[0]).locked_by == worker.id
        # The heartbeat keeps it fresh.
        first = worker.heartbeat_at
        wait_for(lambda: client.list_workers()[0].heartbeat_at > first, timeout=2)
        release.set()
        wait_for(lambda: client.list_workers()[0].running == [])
    finally:
        release.set()
        consumer.stop(timeout=10)
    assert client.list_workers() == []


BAD_TASK_IDS = [0, -1, ID_MAX + 1, 2**64, "1", 1.0, True, None]


@pytest.mark.parametrize("task_id", BAD_TASK_IDS, ids=repr)
def test_a_bad_task_id_is_refused_before_any_sql(pg_dsn: str, schema: str, task_id: Any) -> None:
    """Outside tasks.id's range, or not an int: refused in Python, so the caller's transaction
    stays usable (the server would refuse it with a DataError that aborts it)."""
    (kept,) = enqueue(pg_dsn, schema, Task("t"))
    client = Client(schema=schema)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("SELECT 1")  # a transaction of the caller's is open
        for call in (client.get_task, client.cancel_task, client.retry_task, client.delete_task):
            with pytest.raises(TaskValidationError, match="task_id: expected a task id") as bad:
                call(task_id, conn=conn)
            assert bad.value.field == "task_id"
            assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert client.get_task(kept, conn=conn).id == kept
    with Client(pg_dsn, schema=schema) as own, pytest.raises(TaskValidationError):
        own.get_task(task_id)
    with psycopg.connect(pg_dsn) as conn, pytest.raises(TaskNotFound):
        client.get_task(ID_MAX, conn=conn)  # the largest id is a valid one
