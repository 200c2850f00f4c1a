"""The outcome policy's writes on a real PostgreSQL: whatever `_policy.decide` is handed (any
delay a handler or a hook gives, any attempt count), the write it returns is one the
outcome statement accepts, and the row ends as the policy said."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, cast

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from pgtasq import Producer, Task, _sql
from pgtasq._outcomes import DELAY_MAX, Counts, OutcomeWriter
from pgtasq._policy import COMMITTED, LOST, Ended, How, decide
from pgtasq.models import TaskInfo

WORKER = "policy-test:1"


@pytest.fixture
def conn(pg_dsn: str, schema: str) -> Any:
    with psycopg.connect(pg_dsn, autocommit=True, row_factory=dict_row) as c:
        yield c


def _claim(
    conn: Any, dsn: str, schema: str, max_attempts: int, deadline: datetime | None
) -> TaskInfo:
    with Producer(dsn, schema=schema) as producer:
        producer.enqueue(Task("t", max_attempts=max_attempts, deadline=deadline))
    stmts = _sql.statements(schema)
    params = {"queue": "default", "types": ["t"], "limit": 1, "worker": WORKER, "lease": 30.0}
    [row] = conn.execute(stmts.task_claim.text, params).fetchall()
    return TaskInfo.from_row(row)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    how=st.sampled_from([h for h in How if h not in (LOST, COMMITTED)]),
    max_attempts=st.integers(min_value=1, max_value=3),
    attempts_before=st.integers(min_value=0, max_value=2),
    delay=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([DELAY_MAX, 1e-300]),
    counts=st.booleans(),
    final=st.booleans(),
    deadline_in=st.none() | st.sampled_from([-3600.0, 3600.0]),
)
def test_every_write_decide_makes_is_accepted(
    conn: Any,
    pg_dsn: str,
    schema: str,
    how: How,
    max_attempts: int,
    attempts_before: int,
    delay: float,
    counts: bool,
    final: bool,
    deadline_in: float | None,
) -> None:
    now = datetime.now(timezone.utc)
    deadline = None if deadline_in is None else now + timedelta(seconds=deadline_in)
    if deadline is not None and deadline < now:
        deadline = None  # a producer refuses a passed deadline; decide() sees it below
        passed = now - timedelta(hours=1)
    else:
        passed = None
    task = _claim(conn, pg_dsn, schema, max_attempts, deadline)
    # As if earlier attempts had been made: the claim counted one, the row says more.
    conn.execute(
        f"UPDATE {schema}.tasks SET attempts = attempts + %s WHERE id = %s",
        [attempts_before, task.id],
    )
    fields = {**task.__dict__, "attempts": task.attempts + attempts_before}
    if passed is not None:
        fields["deadline"] = passed
    seen = cast(TaskInfo, object.__new__(TaskInfo))
    seen.__dict__.update(fields)
    ended = Ended(how, result='{"r":1}', error='{"error":"E"}', counts=counts, final=final)
    ended.delay = delay
    outcome = decide(ended, seen, now, lambda: delay)
    assert outcome is not None
    stmts = _sql.statements(schema)
    writer = OutcomeWriter(
        pool=cast(Any, None), stmts=stmts, worker_id=WORKER, counts=Counts(), flush_interval=0
    )
    if outcome.status == "release":
        written = conn.execute(stmts.task_release_many.text, writer._release_params([outcome]))
    else:
        written = conn.execute(stmts.task_finish_many.text, writer._finish_params([outcome]))
    assert len(written.fetchall()) == 1  # accepted, and fenced on this very claim
    row = conn.execute(f"SELECT * FROM {schema}.tasks WHERE id = %s", [task.id]).fetchone()
    expected = {"completed": "completed", "failed": "failed"}.get(outcome.status, "pending")
    assert row["status"] == expected
    if expected == "pending":
        assert now <= row["run_at"] <= now + timedelta(seconds=DELAY_MAX + 60)
    conn.execute(f"DELETE FROM {schema}.tasks WHERE id = %s", [task.id])
