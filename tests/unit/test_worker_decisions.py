"""The worker's decisions as tables: the outcome policy (`_policy.decide`, `time_limit`)
and claim planning (`_claims.ClaimPlanner`). No database, no clock, no event loop."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgtasq._claims import CLAIMS_IN_FLIGHT_MAX, Burst, Claim, ClaimPlanner
from pgtasq._outcomes import DELAY_MAX, Outcome
from pgtasq._policy import (
    CANCELLED,
    COMMITTED,
    LOST,
    RAISED,
    RETRY_IN,
    RETURNED,
    TIMED_OUT,
    Ended,
    How,
    decide,
    returned,
    time_limit,
)
from pgtasq.models import TaskInfo, TaskStatus

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
CLAIMED = NOW - timedelta(seconds=5)


def claimed(attempts: int = 1, max_attempts: int = 3, **fields: Any) -> TaskInfo:
    """A task as a worker holds it after its claim."""
    values: dict[str, Any] = {
        "id": 7,
        "queue": "default",
        "type": "t",
        "payload": None,
        "priority": 0,
        "status": TaskStatus.RUNNING,
        "run_at": CLAIMED,
        "attempts": attempts,
        "max_attempts": max_attempts,
        "timeout": None,
        "deadline": None,
        "idempotency_key": None,
        "errors": [],
        "result": None,
        "locked_by": "w",
        "locked_until": CLAIMED + timedelta(seconds=30),
        "created_at": CLAIMED,
        "updated_at": CLAIMED,
        "attempted_at": CLAIMED,
        "finalized_at": None,
        "retention": None,
        **fields,
    }
    return TaskInfo(**values)


def write(outcome: Outcome | None) -> tuple[Any, ...] | None:
    """The fields of a write that the table rows name."""
    if outcome is None:
        return None
    return (outcome.status, outcome.delay, outcome.refund, outcome.error, outcome.result)


PAST = NOW - timedelta(seconds=1)
LATER = NOW + timedelta(hours=1)


@pytest.mark.parametrize(
    ("ended", "task", "expected"),
    [
        # a handler returned: completed with its result, and a note when it was cleaned
        (Ended(RETURNED, result='{"a":1}'), claimed(), ("completed", 0.0, 0, None, '{"a":1}')),
        (Ended(RETURNED, error="note"), claimed(3, 3), ("completed", 0.0, 0, "note", None)),
        # completed in the handler's own transaction; or taken away: nothing to write
        (Ended(COMMITTED), claimed(), None),
        (Ended(LOST), claimed(), None),
        (Ended(LOST), claimed(3, 3), None),
        # a shutdown cancelled it: handed back, the attempt given back by the statement
        (Ended(CANCELLED), claimed(), ("release", 0.0, 0, None, None)),
        # RetryIn: pending after its delay, the attempt refunded, even on the last attempt
        (Ended(RETRY_IN, delay=30.0), claimed(), ("pending", 30.0, 1, None, None)),
        (Ended(RETRY_IN, delay=30.0), claimed(3, 3), ("pending", 30.0, 1, None, None)),
        (Ended(RETRY_IN, delay=-5.0), claimed(), ("pending", 0.0, 1, None, None)),
        (Ended(RETRY_IN, delay=math.inf), claimed(), ("pending", DELAY_MAX, 1, None, None)),
        (Ended(RETRY_IN, delay=math.nan), claimed(), ("pending", 0.0, 1, None, None)),
        # an error with attempts left: retried after the backoff
        (Ended(RAISED, error="e"), claimed(1, 3), ("pending", 12.0, 0, "e", None)),
        (Ended(RAISED, error="e"), claimed(2, 3), ("pending", 12.0, 0, "e", None)),
        # attempts exhausted: failed
        (Ended(RAISED, error="e"), claimed(3, 3), ("failed", 0.0, 0, "e", None)),
        (Ended(RAISED, error="e"), claimed(4, 3), ("failed", 0.0, 0, "e", None)),
        (Ended(RAISED, error="e"), claimed(1, 1), ("failed", 0.0, 0, "e", None)),
        # an error that does not count (is_failure False): retried, attempt given back
        (Ended(RAISED, error="e", counts=False), claimed(3, 3), ("pending", 12.0, 1, "e", None)),
        # final (SkipRetry, a result that cannot be stored, a deadline passed before start)
        (Ended(RAISED, error="e", final=True), claimed(1, 3), ("failed", 0.0, 0, "e", None)),
        (
            Ended(RAISED, error="e", final=True, counts=False),
            claimed(1, 3),
            ("failed", 0.0, 0, "e", None),
        ),
        # a timeout always counts; with the deadline passed, no retry is worth it
        (Ended(TIMED_OUT, error="t"), claimed(1, 3), ("pending", 12.0, 0, "t", None)),
        (Ended(TIMED_OUT, error="t", counts=False), claimed(1, 3), ("pending", 12.0, 0, "t", None)),
        (Ended(TIMED_OUT, error="t"), claimed(3, 3), ("failed", 0.0, 0, "t", None)),
        (Ended(TIMED_OUT, error="t"), claimed(1, 3, deadline=PAST), ("failed", 0.0, 0, "t", None)),
        (Ended(TIMED_OUT, error="t"), claimed(1, 3, deadline=NOW), ("failed", 0.0, 0, "t", None)),
        (
            Ended(TIMED_OUT, error="t"),
            claimed(1, 3, deadline=LATER),
            ("pending", 12.0, 0, "t", None),
        ),
        # a deadline passed matters to a timeout only, not to any error
        (Ended(RAISED, error="e"), claimed(1, 3, deadline=PAST), ("pending", 12.0, 0, "e", None)),
    ],
)
def test_decide(ended: Ended, task: TaskInfo, expected: tuple[Any, ...] | None) -> None:
    outcome = decide(ended, task, NOW, lambda: 12.0)
    assert write(outcome) == expected
    if outcome is not None:  # fenced on the claim; the attempt it ends for refused writes
        assert (outcome.id, outcome.claimed_at) == (task.id, CLAIMED)
        if outcome.status != "release":
            assert outcome.attempt == (task.attempts if ended.how is not RETRY_IN else 0)


@pytest.mark.parametrize(
    ("delay", "expected"),
    [(0.0, 0.0), (2.5, 2.5), (-1.0, 0.0), (math.nan, 0.0), (1e300, DELAY_MAX)],
)
def test_backoff_of_a_retry_is_clamped(delay: float, expected: float) -> None:
    outcome = decide(Ended(RAISED, error="e"), claimed(1, 3), NOW, lambda: delay)
    assert outcome is not None and outcome.delay == expected


def test_the_retry_delay_is_asked_only_for_a_retry() -> None:
    asked: list[int] = []

    def delay() -> float:
        asked.append(1)
        return 1.0

    for ended, task in [
        (Ended(RAISED, error="e"), claimed(3, 3)),
        (Ended(RAISED, final=True), claimed(1, 3)),
        (Ended(TIMED_OUT), claimed(1, 3, deadline=PAST)),
        (Ended(RETURNED), claimed()),
        (Ended(RETRY_IN, delay=5.0), claimed()),
        (Ended(CANCELLED), claimed()),
    ]:
        decide(ended, task, NOW, delay)
    assert asked == []
    decide(Ended(RAISED, error="e"), claimed(1, 3), NOW, delay)
    assert asked == [1]
    # without one, a retry is due at once
    outcome = decide(Ended(RAISED, error="e"), claimed(1, 3), NOW)
    assert outcome is not None and outcome.delay == 0.0


@pytest.mark.parametrize(
    ("timeout", "deadline", "expected"),
    [
        (None, None, None),
        (timedelta(seconds=30), None, 30.0),
        (None, NOW + timedelta(seconds=10), 10.0),
        (timedelta(seconds=30), NOW + timedelta(seconds=10), 10.0),
        (timedelta(seconds=5), NOW + timedelta(seconds=10), 5.0),
        (None, NOW - timedelta(seconds=10), 0.0),  # passed: not started (fails at once)
        (timedelta(seconds=30), NOW, 0.0),
        (timedelta(0), None, 0.0),
    ],
)
def test_time_limit(
    timeout: timedelta | None, deadline: datetime | None, expected: float | None
) -> None:
    assert time_limit(claimed(timeout=timeout, deadline=deadline), NOW) == expected


def _sql_float(value: float) -> bool:
    """Whether ``repr(value)`` (what `OutcomeWriter` sends in a float8[] literal) is a
    number PostgreSQL reads and can add to now() as seconds: finite, 0..DELAY_MAX."""
    text = repr(value)
    return "inf" not in text and "nan" not in text and 0.0 <= float(text) <= DELAY_MAX


@given(
    how=st.sampled_from(list(How)),
    attempts=st.integers(min_value=1, max_value=10_000),
    max_attempts=st.integers(min_value=1, max_value=10_000),
    delay=st.floats(allow_nan=True, allow_infinity=True),
    counts=st.booleans(),
    final=st.booleans(),
    deadline=st.none() | st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=3)),
)
def test_every_write_is_one_postgresql_accepts(
    how: How,
    attempts: int,
    max_attempts: int,
    delay: float,
    counts: bool,
    final: bool,
    deadline: timedelta | None,
) -> None:
    task = claimed(attempts, max_attempts, deadline=None if deadline is None else NOW + deadline)
    ended = Ended(how, error="e", counts=counts, final=final, delay=delay)
    outcome = decide(ended, task, NOW, lambda: delay)
    if how in (LOST, COMMITTED):
        assert outcome is None
        return
    assert outcome is not None
    assert outcome.status in ("completed", "failed", "pending", "release")
    assert outcome.refund in (0, 1)
    assert _sql_float(outcome.delay)
    # a task never runs more than max_attempts counted attempts
    if outcome.status == "pending" and outcome.refund == 0:
        assert attempts < max_attempts


# -- claim planning ------------------------------------------------------------------------


def test_claim_planning_sequence() -> None:
    """One idle worker: a full batch, a second overlapping claim, then no room."""
    plan = ClaimPlanner(concurrency=10, batch_size=4)
    assert plan.low_water == 2
    first = plan.plan(running=0, unwritten=0)
    assert first == Claim(want=4, generation=0, idle=True)
    second = plan.plan(running=0, unwritten=0)
    assert second == Claim(want=4, generation=0, idle=False)
    assert plan.plan(running=0, unwritten=0) is None  # two claims in flight at most
    assert (plan.in_flight, plan.reserved) == (CLAIMS_IN_FLIGHT_MAX, 8)
    plan.claimed(first, 4)  # a full batch: more may be ready
    assert (plan.in_flight, plan.reserved, plan.more) == (1, 4, True)
    # 4 running + 4 reserved of 10: 2 free, not less than the low water
    assert plan.plan(running=4, unwritten=0) == Claim(want=2, generation=0, idle=False)
    assert plan.plan(running=4, unwritten=0) is None


@pytest.mark.parametrize(
    ("concurrency", "batch", "running", "reserved", "in_flight", "unwritten", "low", "want"),
    [
        (10, 4, 0, 0, 0, 0, None, 4),  # idle: a batch
        (10, 100, 0, 0, 0, 0, None, 10),  # never more than the concurrency
        (10, 4, 9, 0, 0, 0, None, None),  # 1 free < low water 2 while busy
        (10, 4, 9, 0, 0, 0, 1, 1),  # a notification claims even one
        (10, 4, 10, 0, 0, 0, 1, None),  # full
        (10, 4, 0, 0, 1, 0, None, 4),  # a second claim overlaps the first
        (10, 4, 0, 8, 1, 0, None, 2),  # capacity reserved by the claim in flight
        (10, 4, 0, 0, 2, 0, 1, None),  # two in flight at most
        # backpressure: running + reserved + unwritten stays within 2 x concurrency
        (10, 4, 5, 0, 0, 14, None, None),
        (10, 4, 5, 0, 0, 13, None, 2),
        (10, 4, 0, 0, 0, 20, 1, None),
        (10, 4, 0, 0, 0, 19, 1, 1),
        (1, 100, 0, 0, 0, 0, None, 1),  # concurrency 1: low water 1
        (1, 100, 1, 0, 0, 0, 1, None),
    ],
)
def test_claim_capacity(
    concurrency: int,
    batch: int,
    running: int,
    reserved: int,
    in_flight: int,
    unwritten: int,
    low: int | None,
    want: int | None,
) -> None:
    plan = ClaimPlanner(concurrency, batch, reserved=reserved, in_flight=in_flight)
    claim = plan.plan(running=running, unwritten=unwritten, low_water=low)
    assert (claim.want if claim is not None else None) == want
    if claim is not None:
        assert claim.idle == (running == 0 and in_flight == 0)
        assert (plan.reserved, plan.in_flight) == (reserved + want, in_flight + 1)
        assert running + plan.reserved <= concurrency
        assert running + plan.reserved + unwritten <= 2 * concurrency
    else:
        assert (plan.reserved, plan.in_flight) == (reserved, in_flight)


def test_no_claim_while_nothing_may_be_ready() -> None:
    plan = ClaimPlanner(10, 4, more=False)
    assert plan.plan(running=0, unwritten=0) is None
    plan.more_ready()
    assert plan.plan(running=0, unwritten=0) == Claim(4, 1, True)


@pytest.mark.parametrize(
    ("got", "newer", "more", "empty_when_idle"),
    [
        (4, False, True, False),  # a full batch: more may be ready
        (2, False, False, False),  # short: drained
        (2, True, True, False),  # short, but a notification came meanwhile: claim again
        (0, False, False, True),  # nothing, claimed while idle
        (None, False, True, False),  # failed (the database was away): claim again
    ],
)
def test_what_a_claim_tells_the_planner(
    got: int | None, newer: bool, more: bool, empty_when_idle: bool
) -> None:
    plan = ClaimPlanner(10, 4)
    claim = plan.plan(running=0, unwritten=0)
    assert claim is not None and claim.idle
    if newer:
        plan.more_ready()
    plan.claimed(claim, got)
    assert (plan.more, plan.empty_when_idle, plan.in_flight, plan.reserved) == (
        more,
        empty_when_idle,
        0,
        0,
    )


def test_an_empty_claim_while_busy_does_not_mark_the_worker_idle() -> None:
    plan = ClaimPlanner(10, 4)
    claim = plan.plan(running=1, unwritten=0)
    assert claim is not None and not claim.idle
    plan.claimed(claim, 0)
    assert not plan.empty_when_idle and not plan.more


def test_burst_ends_after_an_idle_empty_claim_with_every_outcome_written() -> None:
    plan = ClaimPlanner(10, 4)
    assert plan.burst_step(running=0, recorded=0) is Burst.WAIT  # more may be ready
    claim = plan.plan(running=0, unwritten=0)
    assert claim is not None
    assert plan.burst_step(running=0, recorded=0) is Burst.WAIT  # a claim in flight
    plan.claimed(claim, 3)  # short: drained, but tasks run
    assert plan.burst_step(running=3, recorded=0) is Burst.WAIT
    # all three recorded: write them, then claim once more (a retry may be due now)
    assert plan.burst_step(running=0, recorded=3) is Burst.CONFIRM
    assert plan.more
    claim = plan.plan(running=0, unwritten=0)
    assert claim is not None and claim.idle
    plan.claimed(claim, 0)
    assert plan.burst_step(running=0, recorded=3) is Burst.DONE
    # an outcome recorded since the confirmation (a retry ran): confirm again
    plan2 = dataclasses.replace(plan, confirmed_after=2)
    assert plan2.burst_step(running=0, recorded=3) is Burst.CONFIRM


@pytest.mark.parametrize(("result", "note"), [(None, None), ('{"a":1}', None), ("1", "note")])
def test_the_hot_path_writes_what_decide_writes(result: str | None, note: str | None) -> None:
    """`returned` is `decide`'s RETURNED row without the `Ended` (the worker's hot path):
    a change to one that misses the other fails here."""
    task = claimed(2, 3)
    assert returned(task, result, note) == decide(
        Ended(RETURNED, result=result, error=note), task, NOW
    )
