from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pgtasq import TaskStatus
from pgtasq.filters import LIMIT_MAX, Cursor, InvalidFilter, TaskFilter

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_builder_is_immutable_and_chains() -> None:
    base = TaskFilter()
    f = base.states("failed", TaskStatus.CANCELLED).types("a").queues("q1", "q2").limit(5)
    assert base == TaskFilter()
    assert f.state_names == ("failed", "cancelled")
    assert (f.type_names, f.queue_names, f.limit_rows) == (("a",), ("q1", "q2"), 5)
    with pytest.raises(AttributeError):
        f.limit_rows = 7  # type: ignore[misc]


@pytest.mark.parametrize(
    "build",
    [
        lambda f: f.states("archived"),
        lambda f: f.types(""),
        lambda f: f.queues("q" * 129),
        lambda f: f.ids(0),
        lambda f: f.ids(True),
        lambda f: f.created_after(datetime(2026, 1, 1)),
        lambda f: f.order_by("payload"),
        lambda f: f.order_by("id; DROP TABLE tasks"),
        lambda f: f.order_by("id", "sideways"),
        lambda f: f.limit(0),
        lambda f: f.limit(LIMIT_MAX + 1),
        lambda f: f.offset(-1),
        lambda f: f.offset(5).after(Cursor(1, 1)),
        lambda f: f.after(Cursor(1, 1)).offset(5),
        lambda f: f.after("page-2"),
    ],
)
def test_invalid_arguments_raise_at_once(build: object) -> None:
    with pytest.raises(InvalidFilter):
        build(TaskFilter())  # type: ignore[operator]


def test_views_and_order() -> None:
    f = TaskFilter().states("scheduled", "retry").order_by("created_at", "desc")
    assert f.state_names == ("scheduled", "retry")
    assert (f.order_field, f.order_direction) == ("created_at", "desc")
    assert TaskFilter().created_after(T).created_before(T).created_from == T
    assert isinstance(InvalidFilter("x"), ValueError)
