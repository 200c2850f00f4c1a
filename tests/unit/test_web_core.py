"""The dashboard's pure parts: charts, durations, the filter form, the "why not running"
line and the bulk actions' eligible states."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed")

from pgtasq import TaskFilter, TaskInfo, TaskStatus
from pgtasq.web import _actions, _charts, _forms, _views
from pgtasq.web._queries import LiveWorker, TaskFacts

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def info(**changes: object) -> TaskInfo:
    base = TaskInfo(
        id=7,
        queue="default",
        type="t",
        payload=None,
        priority=0,
        status=TaskStatus.PENDING,
        run_at=NOW - timedelta(seconds=5),
        attempts=0,
        max_attempts=5,
        timeout=None,
        deadline=None,
        idempotency_key=None,
        errors=[],
        result=None,
        locked_by=None,
        locked_until=None,
        created_at=NOW,
        updated_at=NOW,
        attempted_at=None,
        finalized_at=None,
        retention=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


WORKER = LiveWorker("w1", "box", 1, ("default",), ("t",), 1.0)


def facts(**changes: object) -> TaskFacts:
    base = TaskFacts(False, (WORKER,), None, 0, NOW)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (60, "1m"), (61, "1m 1s"), (3600, "1h"), (3720, "1h 2m"),
     (86400, "1d"), (90000, "1d 1h"), (-5, "0s")],
)  # fmt: skip
def test_ago(seconds: float, text: str) -> None:
    assert _views.ago(seconds) == text


def test_pretty_json_cuts_at_the_limit() -> None:
    text, cut = _views.pretty_json({"a": "x" * 100}, limit=50)
    assert cut and len(text) == 50
    assert _views.pretty_json({"a": 1}) == ('{\n  "a": 1\n}', False)


def test_error_text() -> None:
    assert _views.error_text({"error": "KeyError", "message": "'k'"}) == "KeyError: 'k'"
    assert _views.error_text({"error": "Timeout"}) == "Timeout"
    assert _views.error_text("odd") == "odd"


@pytest.mark.parametrize(
    ("task", "facts_", "first"),
    [
        (info(), facts(queue_paused=True), "Its queue 'default' is paused"),
        (info(run_at=NOW + timedelta(hours=1)), facts(), "It is scheduled for 2026-01-01 13:00"),
        (
            info(run_at=NOW + timedelta(minutes=2), attempts=2),
            facts(),
            "It is waiting to be retried (attempt 3 of 5) at 2026-01-01 12:02:00, in 2m.",
        ),
        (info(), facts(live_workers=()), "No live worker consumes queue 'default'."),
        (
            info(type="other"),
            facts(),
            "The 1 live worker(s) of queue 'default' have no handler for type 'other'.",
        ),
        (info(), facts(ahead=3), "It is ready and waits for a free worker: 3 ready task(s)"),
        (info(), facts(ahead=10_000), "10000+ ready task(s)"),
        (
            info(status=TaskStatus.RUNNING, locked_by="w9", locked_until=NOW + timedelta(60)),
            facts(lease_holder_alive=True),
            "It is running: the lease is held by worker w9 until",
        ),
        (
            info(status=TaskStatus.RUNNING, locked_by="w9", locked_until=NOW - timedelta(0, 90)),
            facts(lease_holder_alive=False),
            "the lease expired 1m 30s ago",
        ),
        (info(status=TaskStatus.COMPLETED), facts(), "It completed"),
        (info(status=TaskStatus.FAILED, attempts=5), facts(), "It failed after 5 of 5 attempts"),
        (info(status=TaskStatus.CANCELLED), facts(), "It was cancelled"),
    ],
)
def test_why_not_running(task: TaskInfo, facts_: TaskFacts, first: str) -> None:
    lines = _views.why_not_running(task, facts_)
    assert first in lines[0]


def test_a_worker_that_does_not_list_its_types_counts_as_handling_any() -> None:
    untyped = dataclasses.replace(WORKER, types=None)
    lines = _views.why_not_running(info(type="x"), facts(live_workers=(untyped,)))
    assert lines[0].startswith("It is ready")


def test_a_dead_lease_holder_is_said() -> None:
    task = info(status=TaskStatus.RUNNING, locked_by="w9", locked_until=NOW + timedelta(60))
    lines = _views.why_not_running(task, facts(lease_holder_alive=False))
    assert "no recent heartbeat" in lines[1]


def test_bars_draw_one_group_per_label_and_escape_labels() -> None:
    svg = _charts.bars(
        ["a<b", "c"],
        [_charts.Series("ok", "ok", [1, 0]), _charts.Series("bad", "bad", [2, 5])],
        title="t<itle>",
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<g>") == 2
    assert svg.count("<rect") == 3  # zero values draw nothing
    assert "a&lt;b" in svg and "t&lt;itle&gt;" in svg and "a<b" not in svg
    with pytest.raises(ValueError, match="one value per label"):
        _charts.bars(["a"], [_charts.Series("x", "x", [1, 2])], title="t")


@pytest.mark.parametrize(("value", "top"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (501, 1000)])
def test_axis_top(value: int, top: int) -> None:
    assert _charts._nice_max(value) == top


def test_task_query_builds_the_client_filter() -> None:
    q = _forms.task_query(
        {
            "state": "failed",
            "queue": "a, b",
            "type": "t",
            "id": "1, #2 3",
            "created_after": "2026-01-01T10:00",
        }
    )
    assert q.error is None
    f = q.task_filter
    assert f.state_names == ("failed",)
    assert f.queue_names == ("a", "b")
    assert f.task_ids == (1, 2, 3)
    assert f.created_from == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    assert (f.order_field, f.order_direction) == ("id", "desc")
    assert "queue=a%2C+b" in q.query_string()
    assert _forms.task_query({"state": "all"}).task_filter.state_names == ()
    ordered = _forms.task_query({"order": "run_at", "dir": "asc"})
    assert (ordered.task_filter.order_field, ordered.task_filter.order_direction) == (
        "run_at",
        "asc",
    )
    assert "order=run_at&dir=asc" in ordered.query_string()
    unknown = _forms.task_query({"order": "payload; drop", "dir": "sideways"}).task_filter
    assert (unknown.order_field, unknown.order_direction) == ("id", "desc")


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"state": "nope"}, "state: unknown"),
        ({"id": "x"}, "id: expected task ids"),
        ({"id": "0"}, "ids: expected task ids"),
        ({"created_before": "soon"}, "created_before: expected a date"),
        ({"queue": "x" * 300}, "queues:"),
    ],
)
def test_task_query_reports_bad_values(params: dict[str, str], error: str) -> None:
    q = _forms.task_query(params)
    assert q.error is not None and error in q.error
    assert q.task_filter == TaskFilter().order_by("id", "desc")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/tasks?x=1", "/tasks?x=1"),
        (None, "/fallback"),
        ("", "/fallback"),
        ("http://evil/", "/fallback"),
        ("//evil/x", "/fallback"),
        ("/\\evil", "/fallback"),
        ("javascript:alert(1)", "/fallback"),
    ],
)
def test_safe_next(target: str | None, expected: str) -> None:
    assert _forms.safe_next(target, "/fallback") == expected


def test_with_notice_replaces_an_old_notice() -> None:
    assert _forms.with_notice("/tasks?state=failed&notice=old", "new one") == (
        "/tasks?state=failed&notice=new+one"
    )


def test_bulk_actions_count_only_the_states_they_change() -> None:
    assert _actions.eligible(TaskFilter(), "retry") == TaskFilter().statuses("failed", "cancelled")
    running = TaskFilter().statuses("running")
    assert _actions.eligible(running, "retry") is None
    assert _actions.eligible(running, "cancel") == running
    assert _actions.eligible(TaskFilter().statuses("scheduled", "completed"), "cancel") == (
        TaskFilter().statuses("scheduled")
    )
    assert _actions.eligible(TaskFilter().statuses("retry"), "delete") == (
        TaskFilter().statuses("retry")
    )


def test_timeline_orders_what_happened() -> None:
    task = info(
        status=TaskStatus.FAILED,
        attempts=2,
        attempted_at=NOW + timedelta(seconds=20),
        finalized_at=NOW + timedelta(seconds=21),
        errors=[
            {"attempt": 1, "at": (NOW + timedelta(seconds=10)).isoformat(), "error": "E"},
            {"attempt": 2, "at": (NOW + timedelta(seconds=21)).isoformat(), "error": "E"},
            {"attempt": 3, "at": "not a time", "error": "E"},
        ],
    )
    assert [what for _, what in _views.timeline(task)] == [
        "enqueued",
        "attempt 1 failed: E",
        "attempt 2 started",
        "attempt 2 failed: E",
        "failed",
    ]
    assert _views.timeline(task)[0][0] == "2026-01-01 12:00:00"
