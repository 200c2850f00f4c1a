"""Unique keys without a database: validation, derived keys, and how a flow matches them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgtasq import DuplicateTask, Task, TaskValidationError, _sql
from pgtasq._enqueue import Done, Fetch, enqueue_steps, match, plan, resume, single
from pgtasq.models import UNIQUE_KEY_MAX_LENGTH, payload_key

STMTS = _sql.statements("pgtasq")
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.text(max_size=UNIQUE_KEY_MAX_LENGTH + 20))
def test_a_unique_key_is_accepted_exactly_when_it_is_a_valid_name(key: str) -> None:
    valid = (
        key.strip() != ""
        and len(key) <= UNIQUE_KEY_MAX_LENGTH
        and "\x00" not in key
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in key)
    )
    if valid:
        assert Task("t", unique_key=key).unique_key == key
    else:
        with pytest.raises(TaskValidationError) as refused:
            Task("t", unique_key=key)
        assert refused.value.field == "unique_key"


@pytest.mark.parametrize("key", [b"k", 1, ["k"], False])
def test_a_unique_key_must_be_a_string(key: Any) -> None:
    with pytest.raises(TaskValidationError, match="unique_key"):
        Task("t", unique_key=key)


def test_unique_for_needs_a_key_and_a_positive_period() -> None:
    with pytest.raises(TaskValidationError, match=r"unique_for.*needs a unique_key"):
        Task("t", unique_for=10)
    for bad in (0, -1, timedelta(0), float("nan")):
        with pytest.raises(TaskValidationError, match="unique_for"):
            Task("t", unique_key="k", unique_for=bad)
    assert Task("t", unique_key="k", unique_for=timedelta(minutes=5)).unique_for == timedelta(
        minutes=5
    )


def _reordered(value: Any) -> Any:
    """The same JSON value with every object's keys inserted in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@given(json_values, json_values)
def test_derived_keys_are_equal_exactly_when_type_and_canonical_payload_are(a: Any, b: Any) -> None:
    key_a = Task("t", a, unique_key=True).unique_key
    assert key_a == payload_key("t", a) == payload_key("t", _reordered(a))
    assert key_a is not None and key_a.startswith("sha256:") and len(key_a) == 71
    assert payload_key("u", a) != key_a
    assert (payload_key("t", b) == key_a) == (_canonical(a) == _canonical(b))


def test_derived_keys_ignore_dict_order_and_refuse_what_json_cannot_say() -> None:
    assert payload_key("t", {"a": 1, "b": 2}) == payload_key("t", {"b": 2, "a": 1})
    assert payload_key("t", [1, 2]) != payload_key("t", [2, 1])
    with pytest.raises(TaskValidationError, match=r"unique_key.*not JSON"):
        Task("t", {"x": object()}, unique_key=True)
    with pytest.raises(TaskValidationError, match="unique_key"):
        Task("t", float("nan"), unique_key=True)


def test_unique_keys_take_the_arbitrating_statements_never_copy() -> None:
    (batch,) = plan([Task("a"), Task("b", unique_key="k")], 1000, 10)
    assert batch.keyed
    assert single(STMTS, plan([Task("t", unique_key="k")], 1000, 10)) is None
    step = resume(enqueue_steps(STMTS, [batch], "return", copy=True), None)
    assert isinstance(step, Fetch) and step.stmt is STMTS.task_insert
    assert step.params["unique_key"] == [None, "k"] and step.params["unique_for"] == [None, None]
    one = resume(
        enqueue_steps(STMTS, plan([Task("t", unique_key="k", unique_for=9)], 1000, 10), "return",
                      copy=True),
        None,
    )  # fmt: skip
    assert isinstance(one, Fetch) and one.stmt is STMTS.task_insert_one
    assert one.params["unique_key"] == "k" and one.params["unique_for"] == 9.0
    assert one.params["idempotency_key"] is None


def _row(id_: int, *, key: str | None = None, unique: str | None = None) -> dict[str, Any]:
    return {"id": id_, "idempotency_key": key, "unique_key": unique, "run_at": T0,
            "created_at": T0}  # fmt: skip


def test_match_pairs_rows_by_unique_key_too() -> None:
    tasks = [Task("a"), Task("b", unique_key="u"), Task("c", unique_key="u"), Task("d")]
    infos, taken = match(tasks, [_row(12), _row(11, unique="u"), _row(10)])
    assert [i.id if i else None for i in infos] == [10, 11, None, 12]
    assert taken == [tasks[2]]


def _existing(id_: int, *, key: str | None, unique: str | None) -> dict[str, Any]:
    return {
        "id": id_, "queue": "default", "type": "old", "payload": "1", "priority": 0,
        "status": "pending", "run_at": T0, "attempts": 0, "max_attempts": 5, "timeout": None,
        "deadline": None, "idempotency_key": key, "errors": "[]", "result": None,
        "locked_by": None, "locked_until": None, "created_at": T0, "updated_at": T0,
        "attempted_at": None, "finalized_at": None, "retention": None, "headers": "{}",
        "unique_key": unique, "unique_until": None,
    }  # fmt: skip


def test_flow_returns_the_holder_of_a_unique_key() -> None:
    tasks = [Task("new"), Task("dup", unique_key="u")]
    flow = enqueue_steps(STMTS, plan(tasks, 1000, 10), "return", copy=True)
    step = resume(flow, None)
    assert isinstance(step, Fetch)
    step = resume(flow, [_row(5)])
    assert isinstance(step, Fetch) and step.stmt is STMTS.task_select_by_keys
    assert step.params == {"keys": [], "unique_keys": ["u"]}
    done = resume(flow, [_existing(1, key=None, unique="u")])
    assert isinstance(done, Done)
    assert [(i.id, i.created) for i in done.infos] == [(5, True), (1, False)]


def test_flow_raises_naming_the_unique_key() -> None:
    flow = enqueue_steps(STMTS, plan([Task("dup", unique_key="u")], 1000, 10), "raise", copy=True)
    resume(flow, None)
    resume(flow, [])
    with pytest.raises(DuplicateTask) as raised:
        resume(flow, [_existing(1, key="other", unique="u")])
    assert raised.value.unique_key == "u" and raised.value.task_id == 1
    assert "unique key 'u'" in str(raised.value)


def test_flow_retries_when_the_holder_finished_meanwhile() -> None:
    flow = enqueue_steps(STMTS, plan([Task("a", unique_key="u")], 1000, 10), "return", copy=True)
    resume(flow, None)
    resume(flow, [])  # taken
    step = resume(flow, [])  # the holder is no longer holding: insert again
    assert isinstance(step, Fetch) and step.stmt is STMTS.task_insert_one
    done = resume(flow, [_row(8, unique="u")])
    assert isinstance(done, Done) and done.infos[0].id == 8 and done.infos[0].created


def test_flow_updates_the_pending_holder_on_request() -> None:
    tasks = [Task("dup", unique_key="u", priority=3, delay=60)]
    flow = enqueue_steps(STMTS, plan(tasks, 1000, 10), "update", copy=True)
    resume(flow, None)
    resume(flow, [])  # taken
    step = resume(flow, [_existing(1, key=None, unique="u")])
    assert isinstance(step, Fetch) and step.stmt is STMTS.task_update_pending
    assert step.params == {"id": [1], "priority": [3], "run_at": [None], "delay": [60.0]}
    changed = {**_existing(1, key=None, unique="u"), "priority": 3}
    done = resume(flow, [changed])
    assert isinstance(done, Done)
    assert [(i.id, i.priority, i.created) for i in done.infos] == [(1, 3, False)]


def test_flow_update_leaves_a_holder_that_is_not_pending_alone() -> None:
    flow = enqueue_steps(STMTS, plan([Task("dup", unique_key="u")], 1000, 10), "update", copy=True)
    resume(flow, None)
    resume(flow, [])
    running = {**_existing(1, key=None, unique="u"), "status": "running"}
    done = resume(flow, [running])  # no UPDATE is sent
    assert isinstance(done, Done) and done.infos[0].status.value == "running"
