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
# Pending comes three ways: due, scheduled (run_at later) and waiting for a retry; a guard
# (`Transition.guard`, run's ``run_at > now()``) holds only for the last two.
_STATE_SQL = {
    "pending": "status = 'pending'",
    "scheduled": "status = 'pending', run_at = now() + interval '1 hour'",
    "retry_wait": "status = 'pending', attempts = 1, run_at = now() + interval '1 hour'",
    "running": "status = 'running', attempts = 1, attempted_at = now(), "
    "locked_by = 'w', locked_until = now() + interval '1 hour'",
    "completed": "status = 'completed', attempts = 1, finalized_at = now()",
    "failed": "status = 'failed', attempts = 5, finalized_at = now()",
    "cancelled": "status = 'cancelled', finalized_at = now()",
}
_WAITING = {"scheduled", "retry_wait"}  # pending with run_at later: the guard holds


def _status(situation: str) -> TaskStatus:
    return TaskStatus.PENDING if situation in ("pending", *_WAITING) else TaskStatus(situation)


def _changes(t: Transition, situation: str) -> bool:
    return _status(situation) in t.from_states and (t.guard is None or situation in _WAITING)


def _refusal(t: Transition, situation: str) -> type[Exception] | None:
    state = _status(situation)
    if state in t.refusals:
        return t.refusals[state]
    return None if _changes(t, situation) or state not in t.from_states else t.unmet


def _tasks_in_every_state(pg_dsn: str, schema: str) -> dict[str, int]:
    with Producer(pg_dsn, schema=schema) as producer:
        infos = producer.enqueue_many([Task("t", queue=f"q{i}") for i in range(len(_STATE_SQL))])
    ids = {situation: info.id for situation, info in zip(_STATE_SQL, infos, strict=True)}
    with psycopg.connect(pg_dsn) as conn:
        for situation, task_id in ids.items():
            conn.execute(
                f"UPDATE {schema}.tasks SET {_STATE_SQL[situation]} WHERE id = %s", (task_id,)
            )
    return ids


def _states(pg_dsn: str, schema: str, ids: dict[str, int]) -> dict[str, str | None]:
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


def _expected(t: Transition, before: str) -> str | None:
    """The state a task is in after the change (None: deleted)."""
    if _changes(t, before):
        return None if t.sets is None else t.outcome
    return _status(before).value


def _event(t: Transition) -> str | None:
    return t.event or ("enqueued" if t.wake else None)


def _due(pg_dsn: str, schema: str, ids: dict[str, int]) -> dict[str, bool]:
    with psycopg.connect(pg_dsn) as conn:
        rows = dict(
            conn.execute(
                f"SELECT id, run_at <= now() FROM {schema}.tasks WHERE id = ANY(%s)",
                (list(ids.values()),),
            ).fetchall()
        )
    return {s: rows[i] for s, i in ids.items() if i in rows}


def _expected_due(t: Transition, ids: dict[str, int]) -> dict[str, bool]:
    """Which tasks are due after the change: those due before, and those it made due."""
    made_due = t.action == "run" or t.action == "retry"
    return {
        s: s not in _WAITING or (made_due and _changes(t, s))
        for s in ids
        if _expected(t, s) is not None
    }


@pytest.mark.parametrize("action", list(TRANSITIONS))
def test_single_change_in_every_state(pg_dsn: str, schema: str, action: str) -> None:
    t = TRANSITIONS[action]
    ids = _tasks_in_every_state(pg_dsn, schema)
    with Client(pg_dsn, schema=schema) as client, _listening(pg_dsn, schema) as received:
        change = getattr(client, f"{action}_task")
        for situation, task_id in ids.items():
            refusal = _refusal(t, situation)
            if refusal is not None:
                with pytest.raises(refusal) as refused:
                    change(task_id)
                assert refused.value.task_id == task_id  # type: ignore[attr-defined]
            else:
                info = change(task_id)
                assert info.id == task_id
                assert info.status.value == (_expected(t, situation) or _status(situation).value)
        events = [(e.kind, e.task_ids) for e in received()]
        with pytest.raises(TaskNotFound):
            change(max(ids.values()) + 1000)
    assert _states(pg_dsn, schema, ids) == {s: _expected(t, s) for s in ids}
    assert _due(pg_dsn, schema, ids) == _expected_due(t, ids)
    changed = sorted(ids[s] for s in ids if _changes(t, s))
    kind = _event(t)
    assert events == ([(kind, [i]) for i in changed] if kind else [])


@pytest.mark.parametrize("action", list(TRANSITIONS))
def test_bulk_change_in_every_state(pg_dsn: str, schema: str, action: str) -> None:
    t = TRANSITIONS[action]
    ids = _tasks_in_every_state(pg_dsn, schema)
    counts: list[int] = []
    with Client(pg_dsn, schema=schema) as client, _listening(pg_dsn, schema) as received:
        change = getattr(client, f"{action}_tasks")
        count = change(TaskFilter().ids(*ids.values()), progress=counts.append)
        events = [(e.kind, e.task_ids) for e in received()]
    changed = sorted(ids[s] for s in ids if _changes(t, s))
    assert count == len(changed) and counts == [count]
    assert _states(pg_dsn, schema, ids) == {s: _expected(t, s) for s in ids}
    assert _due(pg_dsn, schema, ids) == _expected_due(t, ids)
    kind = _event(t)
    assert events == ([(kind, changed)] if kind else [])


@pytest.mark.parametrize("action", list(TRANSITIONS))
def test_bulk_change_by_filter_without_ids(pg_dsn: str, schema: str, action: str) -> None:
    """The keyset path (no ids), batch by batch: the same rows change as by ids."""
    t = TRANSITIONS[action]
    ids = _tasks_in_every_state(pg_dsn, schema)
    with Client(pg_dsn, schema=schema) as client:
        count = getattr(client, f"{action}_tasks")(TaskFilter().types("t"), batch_size=1)
    assert count == sum(_changes(t, s) for s in ids)
    assert _states(pg_dsn, schema, ids) == {s: _expected(t, s) for s in ids}
    assert _due(pg_dsn, schema, ids) == _expected_due(t, ids)


def test_run_now_by_a_view_of_pending(pg_dsn: str, schema: str) -> None:
    """``run_tasks`` with the ``scheduled`` and ``retry`` views of pending."""
    ids = _tasks_in_every_state(pg_dsn, schema)
    with Client(pg_dsn, schema=schema) as client:
        assert client.run_tasks(TaskFilter().statuses("retry")) == 1
        assert (
            _due(pg_dsn, schema, ids)["retry_wait"] and not _due(pg_dsn, schema, ids)["scheduled"]
        )
        assert client.run_tasks(TaskFilter().statuses("scheduled")) == 1
        assert client.run_tasks(TaskFilter()) == 0
    assert all(_due(pg_dsn, schema, ids).values())
