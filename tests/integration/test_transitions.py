"""Every Client change does, for a task in every state, what `pgtasq._transitions` says:
by id and by filter alike, with the same events."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import psycopg
import pytest

from pgtasq import Client, Producer, Task, TaskEvent, TaskFilter, TaskNotFound, _sql
from pgtasq import _client_ops as ops
from pgtasq._transitions import TRANSITIONS, Transition
from pgtasq.models import TaskStatus

# The columns a task in each state has (the CHECKs: a lease iff running, finalized_at iff
# final), set directly: the test is about the Client's changes, not how a task got there.
_STATE_SQL = {
    TaskStatus.PENDING: "status = 'pending'",
    TaskStatus.RUNNING: "status = 'running', attempts = 1, attempted_at = now(), "
    "locked_by = 'w', locked_until = now() + interval '1 hour'",
    TaskStatus.COMPLETED: "status = 'completed', attempts = 1, finalized_at = now()",
    TaskStatus.FAILED: "status = 'failed', attempts = 5, finalized_at = now()",
    TaskStatus.CANCELLED: "status = 'cancelled', finalized_at = now()",
}


def _tasks_in_every_state(pg_dsn: str, schema: str) -> dict[TaskStatus, int]:
    with Producer(pg_dsn, schema=schema) as producer:
        infos = producer.enqueue_many([Task("t", queue=f"q{i}") for i in range(len(TaskStatus))])
    ids = {state: info.id for state, info in zip(TaskStatus, infos, strict=True)}
    with psycopg.connect(pg_dsn) as conn:
        for state, task_id in ids.items():
            conn.execute(f"UPDATE {schema}.tasks SET {_STATE_SQL[state]} WHERE id = %s", (task_id,))
    return ids


def _states(pg_dsn: str, schema: str, ids: dict[TaskStatus, int]) -> dict[TaskStatus, str | None]:
    with psycopg.connect(pg_dsn) as conn:
        rows = dict(
            conn.execute(
                f"SELECT id, status::text FROM {schema}.tasks WHERE id = ANY(%s)",
                (list(ids.values()),),
            ).fetchall()
        )
    return {state: rows.get(task_id) for state, task_id in ids.items()}


@contextlib.contextmanager
def _listening(pg_dsn: str, schema: str) -> Iterator[Callable[[], list[TaskEvent]]]:
    stmts = _sql.statements(schema)
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute(stmts.listen.text)
        listener.execute(stmts.listen_events.text)

        def received() -> list[TaskEvent]:
            notes = listener.notifies(timeout=0.5)
            events = [ops.parse_event(stmts, n.channel, n.payload) for n in notes]
            return [e for e in events if e is not None]

        yield received


def _expected(t: Transition, before: TaskStatus) -> str | None:
    """The state a task is in after the change (None: deleted)."""
    if before in t.from_states:
        return None if t.sets is None else t.outcome
    return before.value


def _event(t: Transition) -> str | None:
    return t.event or ("enqueued" if t.wake else None)


@pytest.mark.parametrize("action", list(TRANSITIONS))
def test_single_change_in_every_state(pg_dsn: str, schema: str, action: str) -> None:
    t = TRANSITIONS[action]
    ids = _tasks_in_every_state(
        pg_dsn,
        schema,
    )
    with Client(pg_dsn, schema=schema) as client, _listening(pg_dsn, schema) as received:
        change = getattr(client, f"{action}_task")
        for state, task_id in ids.items():
            if state in t.refusals:
                with pytest.raises(t.refusals[state]):
                    change(task_id)
            else:
                info = change(task_id)
                assert info.id == task_id
                assert info.status.value == (_expected(t, state) or state.value)
        events = [(e.kind, e.task_ids) for e in received()]
        with pytest.raises(TaskNotFound):
            change(max(ids.values()) + 1000)
    assert _states(pg_dsn, schema, ids) == {s: _expected(t, s) for s in ids}
    changed = sorted(ids[s] for s in t.from_states)
    kind = _event(t)
    assert events == ([(kind, [i]) for i in changed] if kind else [])


@pytest.mark.parametrize("action", list(TRANSITIONS))
def test_bulk_change_in_every_state(pg_dsn: str, schema: str, action: str) -> None:
    t = TRANSITIONS[action]
    ids = _tasks_in_every_state(pg_dsn, schema)
    with Client(pg_dsn, schema=schema) as client, _listening(pg_dsn, schema) as received:
        count = getattr(client, f"{action}_tasks")(TaskFilter().ids(*ids.values()))
        events = [(e.kind, e.task_ids) for e in received()]
    assert count == len(t.from_states)
    assert _states(pg_dsn, schema, ids) == {s: _expected(t, s) for s in ids}
    changed = sorted(ids[s] for s in t.from_states)
    kind = _event(t)
    assert events == ([(kind, changed)] if kind else [])
