from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pgtasq import Task, TaskStatus, TaskValidationError
from pgtasq.models import PRIORITY_MAX, PRIORITY_MIN, dump_payload

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_defaults() -> None:
    task = Task("email.send", {"to": "a@example.com"})
    assert (task.queue, task.priority, task.max_attempts) == ("default", 0, 5)
    assert task.run_at is task.delay is task.timeout is task.idempotency_key is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"type": ""}, "type"),
        ({"type": "   "}, "type"),
        ({"type": "x" * 129}, "type"),
        ({"type": 7}, "type"),
        ({"queue": ""}, "queue"),
        ({"queue": "q" * 129}, "queue"),
        ({"priority": PRIORITY_MAX + 1}, "priority"),
        ({"priority": PRIORITY_MIN - 1}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"priority": True}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2**31}, "max_attempts"),
        ({"delay": -1}, "delay"),
        ({"delay": 0}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"delay": "5"}, "delay"),
        ({"timeout": timedelta(0)}, "timeout"),
        ({"retention": -3.0}, "retention"),
        ({"run_at": datetime(2026, 1, 1)}, "run_at"),
        ({"run_at": "2026-01-01"}, "run_at"),
        ({"deadline": datetime(2026, 1, 1)}, "deadline"),
        ({"run_at": NOW, "delay": 5}, "delay"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
    ],
)
def test_invalid_option_names_the_field(options: dict[str, object], field: str) -> None:
    args = {"type": "t", **options}
    with pytest.raises(TaskValidationError) as info:
        Task(args.pop("type"), None, **args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


def test_valid_edges() -> None:
    Task("t", priority=PRIORITY_MIN)
    Task("x" * 128, queue="q" * 128, delay=timedelta(seconds=1), timeout=0.5, retention=1)
    Task("t", run_at=NOW, deadline=NOW + timedelta(hours=1))


def test_with_options_validates_again() -> None:
    task = Task("t", {"a": 1})
    assert task.with_options(queue="critical").queue == "critical"
    with pytest.raises(TaskValidationError, match="priority"):
        task.with_options(priority=1000)


def test_payload_serialization() -> None:
    assert dump_payload({"b": [1, "é"], "a": None}, 100) == '{"b":[1,"é"],"a":null}'
    assert dump_payload(None, 10) == "null"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"when": NOW}, "not JSON-serializable"),
        ({1, 2}, "not JSON-serializable"),
        (float("inf"), "not JSON-serializable"),
        ("nul\x00byte", "NUL"),
    ],
)
def test_bad_payload(payload: object, message: str) -> None:
    with pytest.raises(TaskValidationError, match=message) as info:
        dump_payload(payload, 1000)
    assert info.value.field == "payload"


def test_payload_limit_counts_utf8_bytes() -> None:
    assert dump_payload("é" * 10, 22)  # 20 bytes of é + 2 quotes
    with pytest.raises(TaskValidationError, match="over the limit of 21") as info:
        dump_payload("é" * 10, 21)
    assert info.value.field == "payload"


def test_status_values_and_finality() -> None:
    assert [s.value for s in TaskStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert {s for s in TaskStatus if s.is_final} == {
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
    }
    assert str(TaskStatus.PENDING) == "pending"
