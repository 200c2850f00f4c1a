"""No handler outcome and no stored value can poison a worker (issue 10, items 2 and 3).

Each test hands a real worker on a real PostgreSQL something hostile (a lone surrogate, a
result nested too deep or too large, an exception whose ``__str__`` raises, a stored
retention that overflows, a lease beyond the calendar, a notification it cannot decode) and
checks that the bad task alone ends with a clear stored error while every other outcome is
written and every background loop keeps running.

Bursts are bounded (`burst`): before these fixes several of them never ended.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from pgtasq import Client, Consumer, Counts, Producer, RetryIn, Task, TaskContext, _sql
from pgtasq._finishing import RecordMaker
from pgtasq._listener import Listener
from pgtasq._outcomes import Outcome, OutcomeWriter
from pgtasq._records import RESULT_DEPTH_MAX, Prepared
from pgtasq._services import Cleaner, Heartbeat, Rescuer

BURST_WITHIN = 30.0  # seconds; a burst that was stuck before the fix fails here instead


def rows(dsn: str, schema: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as c, c.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT *, status::text AS status FROM {schema}.tasks ORDER BY id"
        ).fetchall()


def execute(dsn: str, sql: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql, params)


def enqueue(dsn: str, schema: str, *tasks: Task) -> list[int]:
    with Producer(dsn, schema=schema) as p:
        return [i.id for i in p.enqueue_many(tasks)]


def fast(schema: str, **options: Any) -> Consumer:
    defaults: dict[str, Any] = {
        "schema": schema,
        "lease": 5.0,
        "heartbeat_interval": 0.2,
        "poll_interval": 0.2,
        "retry_delay": lambda info, exc: 0.0,
        "shutdown_timeout": 2.0,
    }
    return Consumer(**{**defaults, **options})


def burst(consumer: Consumer, dsn: str) -> Counts:
    async def bounded() -> Counts:
        return await asyncio.wait_for(consumer.arun(dsn, burst=True), BURST_WITHIN)

    return asyncio.run(bounded())


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def messages(caplog: pytest.LogCaptureFixture, text: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level and text in r.getMessage()]


# -- results and error entries ---------------------------------------------------------------


def test_a_lone_surrogate_in_an_error_does_not_stall_the_other_outcomes(
    pg_dsn: str, schema: str
) -> None:
    """Before: the flush failed on every retry (jsonb refuses the escaped surrogate), so no
    outcome behind it was ever written and the burst never ended."""
    consumer = fast(schema)

    @consumer.task("bad")
    def bad(ctx: TaskContext) -> None:
        raise ValueError("truncated emoji \ud83d")

    @consumer.task("good")
    def good(ctx: TaskContext) -> int:
        return int(ctx.payload)

    enqueue(pg_dsn, schema, Task("bad", max_attempts=1), *[Task("good", i) for i in range(10)])
    counts = burst(consumer, pg_dsn)
    assert (counts.completed, counts.failed, counts.lost) == (10, 1, 0)
    first, *others = rows(pg_dsn, schema)
    [entry] = first["errors"]
    assert entry["error"] == "ValueError"
    assert entry["message"] == "truncated emoji \ufffd"
    assert "lone surrogate" in entry["note"]
    assert [r["result"] for r in others] == list(range(10))


def test_a_lone_surrogate_in_a_result_is_replaced_and_noted(pg_dsn: str, schema: str) -> None:
    """Before: UnicodeEncodeError in the flush stopped the worker (WorkerCrashed), and the
    task did the same to the next worker."""
    consumer = fast(schema)

    @consumer.task("t")
    async def t(ctx: TaskContext) -> Any:
        return {"text": "ab\ud800", "key\udc80": ["\udfff"], "ok": "\\u0000 stays text"}

    enqueue(pg_dsn, schema, Task("t"))
    assert burst(consumer, pg_dsn).completed == 1
    (row,) = rows(pg_dsn, schema)
    assert row["result"] == {
        "text": "ab\ufffd",
        "key\ufffd": ["\ufffd"],
        "ok": "\\u0000 stays text",
    }
    [note] = row["errors"]
    assert note["error"] == "ResultSanitized" and "3 lone surrogate(s)" in note["message"]


def test_an_exception_whose_str_raises_is_recorded(pg_dsn: str, schema: str) -> None:
    """Before: nothing was recorded; the task sat running until its lease expired."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    class WrongStr(Exception):
        def __str__(self) -> Any:
            return 42

    consumer = fast(schema)

    @consumer.task("unprintable")
    async def unprintable(ctx: TaskContext) -> None:
        raise Unprintable()

    @consumer.task("wrong")
    def wrong(ctx: TaskContext) -> None:
        raise WrongStr()

    enqueue(pg_dsn, schema, Task("unprintable", max_attempts=1), Task("wrong", max_attempts=1))
    assert burst(consumer, pg_dsn).failed == 2
    first, second = rows(pg_dsn, schema)
    for row, name in ((first, "Unprintable"), (second, "WrongStr")):
        [entry] = row["errors"]
        assert entry["error"].endswith(name)
        assert "str() of this" in entry["message"] and entry["note"] == "str(exc) raised"


def test_complete_in_the_handlers_transaction_stores_a_safe_result(
    pg_dsn: str, schema: str
) -> None:
    """ctx.complete(conn, result) takes the same care: before, the lone surrogate raised
    UnicodeEncodeError inside the handler's own transaction."""
    consumer = fast(schema)

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        with psycopg.connect(pg_dsn) as conn:
            ctx.complete(conn, result={"text": "cut \ud83d", "nul": "a\x00b"})

    enqueue(pg_dsn, schema, Task("t", max_attempts=1))
    assert burst(consumer, pg_dsn).completed == 0  # completed in the handler's transaction
    (row,) = rows(pg_dsn, schema)
    assert row["status"] == "completed"
    assert row["result"] == {"text": "cut \ufffd", "nul": "a\ufffdb"}


def test_results_that_cannot_be_stored_fail_at_once_with_a_clear_error(
    pg_dsn: str, schema: str
) -> None:
    """Too deep (RecursionError before: nothing recorded, the task stuck running), NaN,
    not JSON, an int too long for text, a cycle: failed after one attempt (running the
    handler again would return the same), each with a message that says why."""
    deep: list[Any] = []
    node = deep
    for _ in range(5000):
        node.append([])
        node = node[0]
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    results: dict[str, Any] = {
        "deep": deep,
        "nan": {"x": math.nan},
        "object": object(),
        "tuple_key": {(1, 2): "v"},
        "huge_int": 10**5000,
        "cycle": cycle,
    }
    consumer = fast(schema)

    @consumer.task("t")
    def t(ctx: TaskContext) -> Any:
        return results[ctx.payload]

    enqueue(pg_dsn, schema, *[Task("t", name, max_attempts=3) for name in results])
    counts = burst(consumer, pg_dsn)
    assert (counts.failed, counts.retried) == (len(results), 0)
    found = {}
    for row in rows(pg_dsn, schema):
        assert (row["status"], row["attempts"], row["result"]) == ("failed", 1, None)
        [entry] = row["errors"]
        assert entry["error"] == "TaskValidationError"
        found[row["payload"]] = entry["message"]
    assert f"nested deeper than {RESULT_DEPTH_MAX} levels" in found["deep"]
    assert "nested deeper" in found["cycle"]
    assert "Out of range float values" in found["nan"]
    assert "not JSON-serialisable" in found["object"] and "object" in found["object"]
    assert "keys must be" in found["tuple_key"]
    assert "digits" in found["huge_int"]


def test_a_result_over_the_cap_fails_the_task_and_costs_little(pg_dsn: str, schema: str) -> None:
    """Before: a result of any size was encoded on the event loop (a 270 MB one blocked the
    heartbeats past the lease) and stored. Now the default cap (1 MiB) fails it at once,
    after a walk that stops at the cap, off the event loop."""
    consumer = fast(schema, lease=2.0)
    piece = "x" * 30
    big = [piece] * 3_000_000  # about 100 MB of JSON

    @consumer.task("big")
    def big_result(ctx: TaskContext) -> Any:
        return big

    @consumer.task("small")
    def small(ctx: TaskContext) -> Any:
        return "y" * 2000

    enqueue(pg_dsn, schema, Task("big", max_attempts=2))
    counts = burst(consumer, pg_dsn)
    assert (counts.failed, counts.retried) == (1, 0)
    (row,) = rows(pg_dsn, schema)
    [entry] = row["errors"]
    assert entry["error"] == "TaskValidationError"
    assert "results are limited to 1048576 bytes" in entry["message"]

    # The cap is the consumer's to set.
    capped = fast(schema, result_max_bytes=1000)
    capped.register("small", small)
    enqueue(pg_dsn, schema, Task("small", max_attempts=1))
    assert burst(capped, pg_dsn).failed == 1
    assert "limited to 1000 bytes" in rows(pg_dsn, schema)[1]["errors"][0]["message"]


def test_a_refused_outcome_fails_only_its_task(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An outcome the database still refuses (here a result text jsonb rejects, as if the
    checks had missed something) is written alone: its task fails with an OutcomeRejected
    entry, every other outcome of the batch is written, and it is logged once."""
    real_inline = RecordMaker.inline

    def leaky(self: RecordMaker, value: Any) -> Prepared | None:
        if value == "poison":
            return Prepared(text='"\\u0000"')  # jsonb: unsupported Unicode escape sequence
        return real_inline(self, value)

    monkeypatch.setattr(RecordMaker, "inline", leaky)
    consumer = fast(schema, concurrency=20, batch_size=20, flush_interval=0.2)

    @consumer.task("t")
    async def t(ctx: TaskContext) -> Any:
        return ctx.payload

    ids = enqueue(pg_dsn, schema, *[Task("t", "poison" if i == 7 else i) for i in range(20)])
    with caplog.at_level(logging.ERROR, logger="pgtasq.consumer"):
        counts = burst(consumer, pg_dsn)
    assert (counts.completed, counts.failed, counts.lost) == (19, 1, 0)
    by_id = {r["id"]: r for r in rows(pg_dsn, schema)}
    poisoned = by_id.pop(ids[7])
    assert poisoned["status"] == "failed" and poisoned["result"] is None
    [entry] = poisoned["errors"]
    assert entry["error"] == "OutcomeRejected" and entry["attempt"] == 1
    assert "PostgreSQL refused this completed outcome" in entry["message"]
    assert all(r["status"] == "completed" for r in by_id.values())
    assert len(messages(caplog, "refused its outcome", logging.ERROR)) == 1


def test_an_outcome_refused_even_as_a_failure_is_left_to_the_rescuer(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When the database refuses the failure written in place of a refused outcome too, the
    writer gives up on that one task (logged once, counted lost, no longer held) instead of
    trying forever; its lease runs out and the rescuer takes it back."""
    poison: list[int] = []
    real_params = OutcomeWriter._finish_params

    def corrupting(self: OutcomeWriter, batch: list[Outcome]) -> dict[str, Any]:
        for outcome in batch:
            if outcome.id in poison:
                outcome.error = "{not json"
        return real_params(self, batch)

    monkeypatch.setattr(OutcomeWriter, "_finish_params", corrupting)
    consumer = fast(schema, lease=1.0, heartbeat_interval=0.2, batch_size=10, concurrency=10)
    consumer.register("t", lambda ctx: ctx.payload)
    ids = enqueue(pg_dsn, schema, *[Task("t", i) for i in range(5)])
    poison.append(ids[2])
    with caplog.at_level(logging.ERROR, logger="pgtasq.consumer"):
        counts = burst(consumer, pg_dsn)
    assert (counts.completed, counts.lost) == (4, 1)
    assert len(messages(caplog, "and its failure too", logging.ERROR)) == 1
    left = rows(pg_dsn, schema)[2]
    assert left["status"] == "running"
    time.sleep(1.2)  # no heartbeat extends it: the lease runs out

    async def rescue() -> int:
        async with AsyncConnectionPool(pg_dsn, kwargs={"autocommit": True}) as pool:
            return (await Rescuer(pool=pool, stmts=_sql.statements(schema)).run_once()).rescued

    assert asyncio.run(rescue()) == 1
    again = rows(pg_dsn, schema)[2]
    assert again["status"] == "pending" and again["errors"][-1]["error"] == "LeaseExpired"


def test_a_refused_release_does_not_hold_back_the_others(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At shutdown, a hand-back the database refuses (injected: a claim time it cannot
    parse) is given up alone, logged once; the other tasks are handed back."""
    poison: list[int] = []
    real_params = OutcomeWriter._release_params

    def corrupting(self: OutcomeWriter, batch: list[Outcome]) -> dict[str, Any]:
        params = real_params(self, batch)
        params["claimed_at"] = [
            "not a time" if o.id in poison else stamp
            for o, stamp in zip(batch, params["claimed_at"], strict=True)
        ]
        return params

    monkeypatch.setattr(OutcomeWriter, "_release_params", corrupting)
    started = threading.Semaphore(0)
    consumer = fast(schema, shutdown_timeout=0.1, concurrency=4)

    @consumer.task("t")
    def hold(ctx: TaskContext) -> None:
        started.release()
        ctx.cancelled.wait(10)

    ids = enqueue(pg_dsn, schema, *[Task("t") for _ in range(4)])
    poison.append(ids[1])
    with caplog.at_level(logging.ERROR, logger="pgtasq.consumer"):
        consumer.start(pg_dsn)
        for _ in ids:
            assert started.acquire(timeout=10)
        counts = consumer.stop(timeout=15)
    assert counts is not None and (counts.released, counts.lost) == (3, 1)
    assert [r["status"] for r in rows(pg_dsn, schema)] == [
        "pending",
        "running",
        "pending",
        "pending",
    ]
    assert len(messages(caplog, "refused to hand it back", logging.ERROR)) == 1


# -- the errors history -----------------------------------------------------------------------


def test_the_errors_history_keeps_the_first_and_the_latest_entries(
    pg_dsn: str, schema: str
) -> None:
    """Before: one entry per attempt, without bound."""
    consumer = fast(schema)

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        raise RuntimeError(f"attempt {ctx.attempt}")

    enqueue(pg_dsn, schema, Task("t", max_attempts=30))
    counts = burst(consumer, pg_dsn)
    assert (counts.retried, counts.failed) == (29, 1)
    (row,) = rows(pg_dsn, schema)
    errors = row["errors"]
    assert len(errors) == _sql.ERRORS_KEPT == 20
    assert [e["attempt"] for e in errors] == [1, *range(12, 31)]
    assert errors[1]["dropped_before"] == 10
    assert errors[-1]["message"] == "attempt 30"
    assert all("dropped_before" not in e for e in errors[2:])


async def test_the_rescuer_keeps_the_errors_history_bounded_on_any_stored_value(
    pg_dsn: str, schema: str
) -> None:
    """The rescuer appends LeaseExpired entries with the same bound, and no stored history
    (too long, not an array, odd entries) makes it fail."""
    ids = enqueue(pg_dsn, schema, *[Task("t", max_attempts=99) for _ in range(3)])
    long_history = '[{"attempt": 0}' + "".join(f', {{"attempt": {i}}}' for i in range(1, 40)) + "]"
    histories = [long_history, '{"not": "an array"}', '[1, "two", null]']
    for task_id, errors in zip(ids, histories, strict=True):
        execute(
            pg_dsn,
            f"UPDATE {schema}.tasks SET status = 'running', attempts = 1, attempted_at = now(), "
            "locked_by = 'ghost', locked_until = now() - interval '1 s', errors = %s::jsonb "
            "WHERE id = %s",
            (errors, task_id),
        )
    async with AsyncConnectionPool(pg_dsn, kwargs={"autocommit": True}) as pool:
        rescued = await Rescuer(pool=pool, stmts=_sql.statements(schema)).run_once()
    assert rescued.rescued == 3
    long_row, object_row, odd_row = rows(pg_dsn, schema)
    errors = long_row["errors"]
    assert len(errors) == 20
    assert errors[0] == {"attempt": 0}
    assert errors[1] == {"attempt": 22, "dropped_before": 21}
    assert errors[-1]["error"] == "LeaseExpired"
    assert object_row["errors"][0] == {"not": "an array"}
    assert object_row["errors"][1]["error"] == "LeaseExpired"
    assert odd_row["errors"][:3] == [1, "two", None]


# -- durations no stored or handed value can overflow -------------------------------------------


def test_a_huge_stored_retention_does_not_stop_the_cleaner(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: now() - retention raised DatetimeFieldOverflow, the clean loop ended and the
    worker stopped (WorkerCrashed); Client.clean() failed too."""
    huge, old, fresh = enqueue(pg_dsn, schema, Task("t"), Task("t"), Task("t"))
    execute(
        pg_dsn,
        f"UPDATE {schema}.tasks SET status = 'completed', finalized_at = now() - interval '1 day', "
        "retention = CASE id WHEN %s THEN make_interval(secs => 1e12) "
        "WHEN %s THEN interval '1 second' END WHERE id IN (%s, %s)",
        (huge, old, huge, old),
    )
    consumer = fast(schema, clean_interval=0.2)
    consumer.register("t", lambda ctx: None)
    consumer.start(pg_dsn)
    try:
        wait_for(lambda: [r["id"] for r in rows(pg_dsn, schema)] == [huge, fresh])
        time.sleep(1.0)  # a few more rounds: the worker is still there
        assert consumer._engine is not None
    finally:
        counts = consumer.stop(timeout=15)  # raised WorkerCrashed before
    assert counts is not None and counts.completed == 1
    with Client(pg_dsn, schema=schema) as client:
        assert client.clean() == 0  # and the Client's clean


def test_a_huge_retry_delay_is_clamped_and_said_once(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A retry delay that is infinite, NaN or negative (from retry_delay or RetryIn) is
    clamped, and said once (before: silently)."""
    delays = iter([math.inf, math.nan, -5.0])
    consumer = fast(schema, retry_delay=lambda info, exc: next(delays))

    @consumer.task("fails")
    def fails(ctx: TaskContext) -> None:
        raise RuntimeError("again")

    @consumer.task("waits")
    def waits(ctx: TaskContext) -> None:
        raise RetryIn(1e300)

    enqueue(pg_dsn, schema, Task("fails"), Task("waits"))
    with caplog.at_level(logging.WARNING, logger="pgtasq.consumer"):
        counts = burst(consumer, pg_dsn)
    assert counts.retried >= 1
    now = datetime.now(timezone.utc)
    for row in rows(pg_dsn, schema):
        assert row["status"] == "pending"
        if row["type"] == "waits":  # ten years from now, not beyond the calendar
            assert timedelta(days=3640) < row["run_at"] - now < timedelta(days=3660)
    # inf went to ten years for "fails" too; the clamp is reported once for the worker
    assert len(messages(caplog, "retry delay of", logging.WARNING)) == 1


def test_stored_limits_python_cannot_load_do_not_stop_the_claim(pg_dsn: str, schema: str) -> None:
    """Before: a deadline of 'infinity' (or after year 9999) made the claim fail while
    reading the rows it had taken (WorkerCrashed, on every worker in turn); so would a
    timeout beyond timedelta's range, and a payload nested deeper than Python's parser
    goes. Now the limits are read clamped, and a row that still cannot be read fails alone."""
    ids = enqueue(pg_dsn, schema, *[Task("t", i, max_attempts=3) for i in range(4)])
    execute(pg_dsn, f"UPDATE {schema}.tasks SET deadline = 'infinity' WHERE id = %s", (ids[0],))
    execute(
        pg_dsn,
        f"UPDATE {schema}.tasks SET timeout = interval '100000000 years', "
        "retention = interval '100000000 years' WHERE id = %s",
        (ids[1],),
    )
    execute(
        pg_dsn,
        f"UPDATE {schema}.tasks SET payload = (repeat('[', 5000) || repeat(']', 5000))::jsonb "
        "WHERE id = %s",
        (ids[2],),
    )
    consumer = fast(schema)
    consumer.register("t", lambda ctx: "ran")
    counts = burst(consumer, pg_dsn)
    assert (counts.completed, counts.failed) == (3, 1)
    with psycopg.connect(pg_dsn) as c, c.cursor(row_factory=dict_row) as cur:
        done = cur.execute(  # not the limits: psycopg cannot read them either
            f"SELECT status::text AS status, attempts, errors FROM {schema}.tasks ORDER BY id"
        ).fetchall()
    assert [r["status"] for r in done] == ["completed", "completed", "failed", "completed"]
    [entry] = done[2]["errors"]
    assert entry["error"] == "TaskValidationError" and "row: cannot be read" in entry["message"]
    assert done[2]["attempts"] == 1


def test_stored_attempt_counts_cannot_break_a_claim_a_retry_or_a_release(
    pg_dsn: str, schema: str
) -> None:
    """Before: a row whose attempts were at int's maximum made every claim fail (integer
    out of range: WorkerCrashed on every worker); one whose attempts were 0 while running
    made the outcome of RetryIn (attempt given back) or of a release violate the CHECK, and
    the flush failed on every retry, holding back every outcome behind it."""
    top, zero = enqueue(pg_dsn, schema, Task("t", max_attempts=3), Task("t", max_attempts=3))
    execute(pg_dsn, f"UPDATE {schema}.tasks SET attempts = 2147483647 WHERE id = %s", (top,))
    consumer = fast(schema)

    @consumer.task("t")
    def t(ctx: TaskContext) -> None:
        if ctx.id == zero:  # as if someone reset the count under the running task
            execute(pg_dsn, f"UPDATE {schema}.tasks SET attempts = 0 WHERE id = %s", (zero,))
            raise RetryIn(3600)

    counts = burst(consumer, pg_dsn)
    assert (counts.claimed, counts.completed, counts.retried, counts.lost) == (2, 1, 1, 0)
    first, second = rows(pg_dsn, schema)
    assert (first["status"], first["attempts"]) == ("completed", 2147483647)
    assert (second["status"], second["attempts"]) == ("pending", 0)

    # a release (shutdown) of a running task whose count was reset
    execute(pg_dsn, f"UPDATE {schema}.tasks SET run_at = now() WHERE id = %s", (zero,))
    started = threading.Event()
    holder = fast(schema, shutdown_timeout=0.1)

    @holder.task("t")
    def hold(ctx: TaskContext) -> None:
        execute(pg_dsn, f"UPDATE {schema}.tasks SET attempts = 0 WHERE id = %s", (zero,))
        started.set()
        ctx.cancelled.wait(10)

    holder.start(pg_dsn)
    assert started.wait(10)
    counts = holder.stop(timeout=15)  # raised the CHECK violation before
    assert counts is not None and counts.released == 1
    assert (rows(pg_dsn, schema)[1]["status"], rows(pg_dsn, schema)[1]["attempts"]) == (
        "pending",
        0,
    )


def test_worker_statements_clamp_any_lease(pg_dsn: str, schema: str) -> None:
    """The Consumer refuses a lease over 100 years (pgtasq._limits); the statements clamp
    one anyway (raw callers, other clients). Before: a lease past the calendar made every
    claim fail with DatetimeFieldOverflow (WorkerCrashed) and every heartbeat too."""
    enqueue(pg_dsn, schema, Task("t"))
    stmts = _sql.statements(schema)
    with psycopg.connect(pg_dsn, autocommit=True) as c, c.cursor(row_factory=dict_row) as cur:
        lease = {"worker": "w", "lease": 1e300}
        (claimed,) = cur.execute(
            stmts.task_claim.text, {**lease, "queue": "default", "types": ["t"], "limit": 1}
        ).fetchall()
        assert claimed["locked_until"] < datetime.now(timezone.utc) + timedelta(days=36530)
        beat = {
            **lease,
            "id": [claimed["id"]],
            "claimed_at": [claimed["attempted_at"]],
            "host": "h",
            "pid": 1,
            "queues": "{}",
            "concurrency": 1,
            "metadata": "{}",
        }
        assert cur.execute(stmts.task_heartbeat.text, beat).fetchall() == []  # still ours


def test_outcome_statement_clamps_any_delay(pg_dsn: str, schema: str) -> None:
    """task_finish_many itself takes any float8 delay (raw callers, other clients)."""
    ids = enqueue(pg_dsn, schema, Task("t"), Task("t"), Task("t"))
    execute(
        pg_dsn,
        f"UPDATE {schema}.tasks SET status = 'running', attempts = 1, attempted_at = now(), "
        "locked_by = 'w', locked_until = now() + interval '1 minute'",
    )
    claimed = {r["id"]: r["attempted_at"] for r in rows(pg_dsn, schema)}
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        done = c.execute(
            _sql.statements(schema).task_finish_many.text,
            {
                "worker": "w",
                "id": ids,
                "claimed_at": [claimed[i] for i in ids],
                "status": ["pending"] * 3,
                "delay": [1e300, math.inf, math.nan],
                "refund": [1, 1, 1],
                "error": [None] * 3,
                "result": [None] * 3,
            },
        ).fetchall()
    assert len(done) == 3
    run_ats = [r["run_at"] for r in rows(pg_dsn, schema)]
    assert all(r < datetime.now(timezone.utc) + timedelta(days=36530) for r in run_ats)  # 100 y


# -- background loops that meet a data error go on -----------------------------------------


@pytest.mark.parametrize(
    ("service", "loop"), [(Heartbeat, "heartbeat"), (Rescuer, "rescue"), (Cleaner, "cleaning")]
)
def test_a_data_error_does_not_stop_a_background_loop(
    pg_dsn: str,
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    service: Any,
    loop: str,
) -> None:
    """Every round of the loop hits a statement the server refuses with a data error (a
    real one, 22012): before, the loop ended and the worker stopped (WorkerCrashed). Now
    the loop logs it once and keeps running its rounds, and the worker keeps working."""
    rounds = 0

    async def refused(self: Any) -> Any:
        nonlocal rounds
        rounds += 1
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1 / 0")

    monkeypatch.setattr(service, "run_once", refused)
    consumer = fast(schema, rescue_interval=0.1, clean_interval=0.1)
    consumer.register("t", lambda ctx: "done")
    with caplog.at_level(logging.ERROR, logger="pgtasq.consumer"):
        consumer.start(pg_dsn)
        try:
            wait_for(lambda: rounds >= 5)
            enqueue(pg_dsn, schema, Task("t"))
            wait_for(lambda: rows(pg_dsn, schema)[0]["status"] == "completed")
        finally:
            counts = consumer.stop(timeout=15)  # raised WorkerCrashed before
    assert counts is not None and counts.completed == 1
    logged = messages(caplog, "division by zero", logging.ERROR)
    assert len(logged) == 1 and logged[0].startswith(f"{loop}: the database refused")


@pytest.fixture
def ascii_dsn(pg_dsn: str) -> Iterator[str]:
    """A database in SQL_ASCII: a NOTIFY there may carry any bytes, and psycopg decodes
    what it receives as ASCII."""
    name = "pgtasq_ascii_" + str(int(time.time() * 1000) % 10**9)
    execute(
        pg_dsn,
        f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 "
        "LC_COLLATE 'C' LC_CTYPE 'C'",
    )
    try:
        yield make_conninfo(pg_dsn, dbname=name)
    finally:
        execute(pg_dsn, f"DROP DATABASE {name} WITH (FORCE)")


async def test_a_notification_the_listener_cannot_decode_does_not_stop_it(
    ascii_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: UnicodeDecodeError ended the listen loop, and with it the worker. Now such
    a notification wakes the worker like any other, while the listener checks that LISTEN
    works (its probe) and afterwards, and is logged once."""
    stmts = _sql.statements("pgtasq")
    probed = asyncio.Event()
    woken: list[float] = []

    async def notify(payload: str | bytes) -> None:
        async with await psycopg.AsyncConnection.connect(ascii_dsn, autocommit=True) as c:
            await c.execute(
                "SELECT pg_notify(%s, convert_from(%s::bytea, 'SQL_ASCII'))",
                (stmts.channel, payload),
            )

    real_probe = Listener._probe

    async def probe(self: Listener, conn: Any) -> bool:
        await notify("\\xff")  # queued ahead of the probe's own notification
        try:
            return await real_probe(self, conn)
        finally:
            probed.set()

    monkeypatch.setattr(Listener, "_probe", probe)
    listener = Listener(
        dsn=ascii_dsn,
        stmts=stmts,
        queues=["default"],
        poll_interval=30.0,
        on_connected=lambda: None,
        on_notified=lambda: woken.append(time.monotonic()),
    )
    with caplog.at_level(logging.WARNING, logger="pgtasq.consumer"):
        loop = asyncio.create_task(listener.run())
        try:
            await asyncio.wait_for(probed.wait(), 10)
            assert len(woken) == 1  # the undecodable one, during the probe
            for payload in ("\\xfe", b'["default"]'):
                await notify(payload)
                # apart: psycopg drops the rest of a batch it failed to decode (the
                # wake-up given for the failure covers them)
                await asyncio.sleep(0.3)
            for _ in range(100):
                if len(woken) >= 3 or loop.done():
                    break
                await asyncio.sleep(0.05)
            assert not loop.done(), loop  # still listening
            assert len(woken) == 3
            assert "LISTEN gets no notifications" not in caplog.text  # the probe succeeded
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert len(messages(caplog, "could not be decoded", logging.WARNING)) == 1
