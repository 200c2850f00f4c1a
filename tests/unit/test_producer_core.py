"""The enqueue logic without a database: planning, row matching, the statement protocol."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from pgtasq import DuplicateTask, Task, TaskStatus, TaskValidationError, _sql
from pgtasq.producer import _enqueue_steps, _match, _plan

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
STMTS = _sql.statements("pgtasq")


def _row(id_: int, key: str | None = None) -> dict[str, Any]:
    return {"id": id_, "idempotency_key": key, "run_at": T0, "created_at": T0}


def _existing(id_: int, key: str) -> dict[str, Any]:
    return {
        "id": id_, "queue": "default", "type": "old", "payload": '{"old": true}', "priority": 0,
        "status": "running", "run_at": T0, "attempts": 1, "max_attempts": 5, "timeout": None,
        "deadline": None, "idempotency_key": key, "errors": "[]", "result": None,
        "locked_by": "w1", "locked_until": T0, "created_at": T0, "updated_at": T0,
        "attempted_at": T0, "finalized_at": None, "retention": None,
    }  # fmt: skip


def test_plan_validates_every_payload_before_anything_runs() -> None:
    tasks = [Task("ok", {"i": 1}), Task("bad", {"x": object()})]
    with pytest.raises(TaskValidationError, match="payload"):
        _plan(tasks, 1000, 10)


def test_plan_batches() -> None:
    batches = _plan([Task("t", i) for i in range(7)], 1000, 3)
    assert [len(tasks) for tasks, _ in batches] == [3, 3, 1]
    assert batches[2][1]["payload"] == ["6"]
    assert set(batches[0][1]) == {name for name, _ in _sql.INSERT_ARRAYS}


def test_match_pairs_keyless_rows_by_id_order_and_keys_by_key() -> None:
    tasks = [Task("a"), Task("b", idempotency_key="k1"), Task("c"), Task("d", idempotency_key="k1")]
    rows = [_row(12), _row(11, "k1"), _row(10)]  # returned in any order
    infos, taken = _match(tasks, rows)
    assert [i.id if i else None for i in infos] == [10, 11, 12, None]
    assert [i.type if i else None for i in infos] == ["a", "b", "c", None]
    assert taken == ["k1"]


def _run(flow: Any, answers: list[list[dict[str, Any]]]) -> tuple[list[Any], list[str]]:
    names = []
    try:
        stmt, _params = next(flow)
        for answer in answers:
            names.append(stmt.name)
            stmt, _params = flow.send(answer)
        raise AssertionError("flow asked for more statements than expected")
    except StopIteration as stop:
        return stop.value, names


def test_flow_returns_existing_task_for_taken_key() -> None:
    tasks = [Task("new"), Task("dup", idempotency_key="k")]
    flow = _enqueue_steps(STMTS, _plan(tasks, 1000, 10), "return")
    infos, names = _run(flow, [[_row(5)], [_existing(1, "k")]])
    assert names == ["task_insert", "task_select_by_keys"]
    assert [(i.id, i.created) for i in infos] == [(5, True), (1, False)]
    assert infos[1].status is TaskStatus.RUNNING and infos[1].payload == {"old": True}


def test_flow_raises_duplicate_in_raise_mode() -> None:
    flow = _enqueue_steps(STMTS, _plan([Task("dup", idempotency_key="k")], 1000, 10), "raise")
    with pytest.raises(DuplicateTask) as info:
        _run(flow, [[], [_existing(1, "k")]])
    assert info.value.task_id == 1 and info.value.idempotency_key == "k"


def test_flow_reinserts_when_key_holder_vanished() -> None:
    tasks = [Task("a", idempotency_key="k"), Task("b")]
    flow = _enqueue_steps(STMTS, _plan(tasks, 1000, 10), "return")
    # first insert: key taken; the select finds nothing (deleted); the retry inserts it.
    infos, names = _run(flow, [[_row(7)], [], [_row(8, "k")]])
    assert names == ["task_insert", "task_select_by_keys", "task_insert"]
    assert [(i.id, i.type, i.created) for i in infos] == [(8, "a", True), (7, "b", True)]
