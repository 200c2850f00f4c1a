"""What `TaskContext.set_progress` accepts (`pgtasq._progress.progress_text`), how a stored
progress reads back (`Progress.from_json`) and how the CLI shows it."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pgtasq import Progress, TaskContext, TaskValidationError, _sql
from pgtasq._cli_output import progress_cell
from pgtasq._progress import PROGRESS_MAX_BYTES, PROGRESS_NOTE_MAX_LENGTH, progress_text
from pgtasq.models import TaskInfo, TaskStatus

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
VALUES = st.one_of(
    st.floats(),
    st.integers(),
    st.booleans(),
    st.text(),
    st.none(),
    JSON,
    st.dictionaries(st.text(), JSON, max_size=8),
    st.dictionaries(st.integers(), JSON),
)
NOTES = st.none() | st.text() | st.integers()


@given(VALUES, NOTES)
@example(1e-320, None)
@example(True, None)
@example({"a": "\x00"}, None)
@example({"a": "\ud800"}, None)
@example(0.5, "\ud800")
@example(0.5, "x" * (PROGRESS_NOTE_MAX_LENGTH + 1))
@example({"k": "x" * PROGRESS_MAX_BYTES}, None)
def test_progress_is_stored_as_given_or_refused_with_a_pgtasq_error(value: Any, note: Any) -> None:
    try:
        text = progress_text(value, note)
    except TaskValidationError as exc:
        refused = exc
    else:
        refused = None
    if refused is not None:
        assert refused.field == "progress"
        return
    assert isinstance(note, (str, type(None))) and len(text.encode()) <= PROGRESS_MAX_BYTES
    if isinstance(value, dict):
        assert json.loads(text) == {"value": value, "note": note}
    else:
        assert not isinstance(value, bool) and 0 <= value <= 1
        assert json.loads(text) == {"value": float(value), "note": note}


@given(st.floats() | st.integers())
def test_a_number_is_accepted_exactly_when_it_is_a_fraction(value: float) -> None:
    accepted = math.isfinite(value) and 0 <= value <= 1
    if accepted:
        assert json.loads(progress_text(value, None))["value"] == float(value)
    else:
        with pytest.raises(TaskValidationError, match="from 0 to 1"):
            progress_text(value, None)


@pytest.mark.parametrize("value", ["50%", [0.5], None, True, {1, 2}, float("inf")])
def test_what_is_not_a_fraction_or_an_object_is_refused(value: Any) -> None:
    with pytest.raises(TaskValidationError):
        progress_text(value, None)


def test_a_context_without_a_worker_checks_and_drops() -> None:
    info = TaskInfo.from_row(
        {
            **{name: None for name in ("queue", "type", "priority", "run_at", "max_attempts")},
            **{name: None for name in ("timeout", "deadline", "idempotency_key", "locked_by")},
            **{name: None for name in ("locked_until", "created_at", "updated_at", "retention")},
            "id": 1,
            "payload": "1",
            "status": "running",
            "attempts": 1,
            "errors": "[]",
            "result": None,
            "attempted_at": datetime(2030, 1, 1, tzinfo=timezone.utc),
            "finalized_at": None,
            "headers": "{}",
            "unique_key": None,
            "unique_until": None,
        }
    )
    assert info.progress is None  # a claim leaves the column out
    got: list[tuple[int, datetime, str]] = []
    ctx = TaskContext(info, worker_id="w", stmts=_sql.statements("pgtasq"))
    ctx.set_progress(0.5)  # no worker: checked, then nothing
    ctx.progress_sink = lambda *args: got.append(args)
    ctx.set_progress({"done": 1}, note="n")
    assert got == [(1, info.attempted_at, '{"value":{"done":1},"note":"n"}')]
    with pytest.raises(TaskValidationError):
        ctx.set_progress(2.0)
    assert len(got) == 1


def test_progress_reads_back_and_odd_rows_read_as_none() -> None:
    stored = '{"value": 0.5, "note": "x", "at": "2030-01-02T03:04:05.000006+00:00"}'
    assert Progress.from_json(stored) == Progress(
        0.5, "x", datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    )
    for odd in ("null", "[]", '{"value": 1}', '{"value": 1, "at": "yesterday"}', '"s"'):
        assert Progress.from_json(odd) is None
    assert Progress.from_json(None) is None
    assert Progress.from_json('{"value": 1, "note": 7, "at": "2030-01-02T03:04:05+00:00"}') == (
        Progress(1, None, datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    )


def test_the_cli_cell() -> None:
    at = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert progress_cell(None) == "-"
    assert progress_cell(Progress(0.25, None, at)) == "25%"
    assert progress_cell(Progress(1.0, "done\x1b", at)) == "100% done\\x1b"
    assert progress_cell(Progress({"done": 3}, None, at)) == '{"done":3}'


def test_the_status_enum_is_unchanged() -> None:  # the row's enum is not touched by progress
    assert [s.value for s in TaskStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
