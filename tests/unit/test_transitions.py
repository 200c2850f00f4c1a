"""The state tables of the docs are the table of transitions (`pgtasq._transitions`)."""

from __future__ import annotations

from pathlib import Path

import pgtasq.client
from pgtasq import _client_ops, _transitions
from pgtasq._transitions import TRANSITIONS
from pgtasq.models import TaskStatus

ROOT = Path(__file__).parents[2]


def test_client_docstring_holds_the_state_table() -> None:
    table = _transitions.state_table_rst()
    assert table in (pgtasq.client.__doc__ or ""), (
        "edit the pgtasq.client docstring: paste pgtasq._transitions.state_table_rst():\n" + table
    )


def test_monitoring_doc_holds_the_state_table() -> None:
    table = _transitions.state_table_markdown()
    assert table in (ROOT / "docs" / "monitoring.md").read_text(), (
        "edit docs/monitoring.md: paste pgtasq._transitions.state_table_markdown():\n" + table
    )


def test_architecture_doc_names_each_change() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    for t in TRANSITIONS.values():
        if t.sets is None:
            left = [s for s in TaskStatus if s not in t.from_states]
            line = f"any state but {', '.join(f'`{s.value}`' for s in left)}"
        else:
            states = ", ".join(f"`{s.value}`" for s in TaskStatus if s in t.from_states)
            line = f"| {states} | `{t.outcome}` | `task_{t.action}`, `task_bulk_{t.action}` |"
        assert line in text, f"edit docs/architecture.md (state changes): {line!r}"


def test_every_state_is_left_refused_or_a_no_op() -> None:
    for t in TRANSITIONS.values():
        results = {s: t.result(s) for s in TaskStatus}
        assert all(results.values())
        assert not t.from_states & set(t.refusals)
        assert t.sets is not None or t.event is not None  # a deletion is always told


def test_client_errors_are_the_refusals() -> None:
    assert _client_ops.TRANSITIONS is _transitions.TRANSITIONS
    assert _transitions.refusals("retry") == {
        "pending": pgtasq.TaskAlreadyAvailable,
        "running": pgtasq.TaskRunning,
        "completed": pgtasq.TaskAlreadyFinalized,
    }
    for t in TRANSITIONS.values():
        for state in TaskStatus:
            refused = t.refusals.get(state)
            assert t.refused(state.value, ready=True) is refused
            unmet = t.unmet if state in t.from_states else None
            assert t.refused(state.value, ready=False) is (refused or unmet)


def test_run_makes_a_waiting_pending_task_due() -> None:
    run = TRANSITIONS["run"]
    assert run.from_states == {TaskStatus.PENDING}
    assert run.guard == "run_at > now()"
    assert run.refused("pending", ready=False) is pgtasq.TaskAlreadyAvailable
    assert run.refused("pending", ready=True) is None
    for state in ("running", "completed", "failed", "cancelled"):
        assert run.refused(state, ready=True) is not None
    assert run.wake and run.event is None  # the wake-up is its `enqueued` event


def test_a_refusal_names_the_final_state() -> None:
    assert str(pgtasq.TaskAlreadyFinalized(7)) == "task 7 is completed already"
    assert str(pgtasq.TaskAlreadyFinalized(7, "failed")) == "task 7 is failed already"
    assert pgtasq.TaskAlreadyFinalized(7, "failed").state == "failed"


def test_states_sql() -> None:
    every = frozenset(TaskStatus)
    assert _transitions.states_sql("s", every - {TaskStatus.RUNNING}) == "s <> 'running'"
    assert (
        _transitions.states_sql("s", frozenset({TaskStatus.FAILED, TaskStatus.PENDING}))
        == "s IN ('pending', 'failed')"
    )
