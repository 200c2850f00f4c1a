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
    assert _client_ops.refusals is _transitions.refusals
    assert _transitions.refusals("retry") == {
        "pending": pgtasq.TaskAlreadyAvailable,
        "running": pgtasq.TaskRunning,
        "completed": pgtasq.TaskAlreadyFinalized,
    }


def test_states_sql() -> None:
    every = frozenset(TaskStatus)
    assert _transitions.states_sql("s", every - {TaskStatus.RUNNING}) == "s <> 'running'"
    assert (
        _transitions.states_sql("s", frozenset({TaskStatus.FAILED, TaskStatus.PENDING}))
        == "s IN ('pending', 'failed')"
    )
