from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from pgtasq import TaskStatus
from pgtasq.filters import (
    COUNT_MODES,
    ID_MAX,
    LIMIT_MAX,
    OFFSET_MAX,
    Cursor,
    InvalidFilter,
    TaskFilter,
    check_count,
)

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_builder_is_immutable_and_chains() -> None:
    base = TaskFilter()
    f = base.statuses("failed", TaskStatus.CANCELLED).types("a").queues("q1", "q2").limit(5)
    assert base == TaskFilter()
    assert f.state_names == ("failed", "cancelled")
    assert (f.type_names, f.queue_names, f.limit_rows) == (("a",), ("q1", "q2"), 5)
    with pytest.raises(AttributeError):
        f.limit_rows = 7  # type: ignore[misc]


@pytest.mark.parametrize(
    "build",
    [
        lambda f: f.statuses("archived"),
        lambda f: f.types(""),
        lambda f: f.queues("q" * 129),
        lambda f: f.ids(0),
        lambda f: f.ids(True),
        lambda f: f.ids(2**63),
        lambda f: f.ids(1, 10**30),
        lambda f: f.ids(-(2**63)),
        lambda f: f.ids(1.0),
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


def test_ids_are_task_ids_up_to_the_bigint_maximum() -> None:
    assert TaskFilter().ids(1, ID_MAX).task_ids == (1, ID_MAX)
    with pytest.raises(InvalidFilter, match=r"^ids: expected task ids, integers from 1 to "):
        TaskFilter().ids(ID_MAX + 1)
    assert ID_MAX == 2**63 - 1


def test_views_and_order() -> None:
    f = TaskFilter().statuses("scheduled", "retry").order_by("created_at", "desc")
    assert f.state_names == ("scheduled", "retry")
    assert (f.order_field, f.order_direction) == ("created_at", "desc")
    assert TaskFilter().created_after(T).created_before(T).created_from == T
    assert isinstance(InvalidFilter("x"), ValueError)


# The same mistake made through a method and through the fields: the same error, at once.
SAME_MISTAKE: list[tuple[Callable[[TaskFilter], object], dict[str, Any]]] = [
    (lambda f: f.statuses("archived"), {"state_names": ("archived",)}),
    (lambda f: f.types(""), {"type_names": ("",)}),
    (lambda f: f.queues("q" * 129), {"queue_names": ("q" * 129,)}),
    (lambda f: f.ids(0), {"task_ids": (0,)}),
    (lambda f: f.ids(True), {"task_ids": (True,)}),
    (lambda f: f.ids("1 OR 1=1"), {"task_ids": ("1 OR 1=1",)}),
    (lambda f: f.ids(3, 2**63), {"task_ids": (3, 2**63)}),
    (lambda f: f.created_after(datetime(2026, 1, 1)), {"created_from": datetime(2026, 1, 1)}),
    (lambda f: f.created_before("2026-01-01"), {"created_until": "2026-01-01"}),
    (lambda f: f.order_by("payload"), {"order_field": "payload"}),
    (lambda f: f.order_by("id", "desc; DROP x"), {"order_direction": "desc; DROP x"}),
    (lambda f: f.limit(0), {"limit_rows": 0}),
    (lambda f: f.limit("1; --"), {"limit_rows": "1; --"}),
    (lambda f: f.offset(-1), {"offset_rows": -1}),
    (lambda f: f.offset(OFFSET_MAX + 1), {"offset_rows": OFFSET_MAX + 1}),
    (lambda f: f.after("page-2"), {"cursor": "page-2"}),
    (lambda f: f.offset(5).after(Cursor(1, 1)), {"offset_rows": 5, "cursor": Cursor(1, 1)}),
]


@pytest.mark.parametrize(
    ("method", "fields"), SAME_MISTAKE, ids=["+".join(fields) for _, fields in SAME_MISTAKE]
)
def test_fields_are_checked_like_the_methods(
    method: Callable[[TaskFilter], object], fields: dict[str, Any]
) -> None:
    with pytest.raises(InvalidFilter) as by_method:
        method(TaskFilter())
    message = re.escape(str(by_method.value))
    with pytest.raises(InvalidFilter, match=f"^{message}$"):
        TaskFilter(**fields)
    with pytest.raises(InvalidFilter, match=f"^{message}$"):
        dataclasses.replace(TaskFilter(), **fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"state_names": "failed"},  # a string is not a sequence of names here
        {"type_names": "email"},
        {"queue_names": b"mail"},
        {"task_ids": 5},
        {"state_names": None},
    ],
)
def test_fields_want_sequences(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidFilter, match="expected a sequence"):
        TaskFilter(**fields)


def test_fields_are_normalized_like_the_methods() -> None:
    by_fields = TaskFilter(
        state_names=[TaskStatus.FAILED, "retry"],  # type: ignore[list-item]
        type_names=["a"],  # type: ignore[arg-type]
        queue_names=iter(["q"]),  # type: ignore[arg-type]
        task_ids=[3, 4],  # type: ignore[arg-type]
        created_from=T,
        order_field="priority",
        order_direction="desc",
        limit_rows=5,
        cursor=Cursor(1, 9),
    )
    by_methods = (
        TaskFilter()
        .statuses(TaskStatus.FAILED, "retry")
        .types("a")
        .queues("q")
        .ids(3, 4)
        .created_after(T)
        .order_by("priority", "desc")
        .limit(5)
        .after(Cursor(1, 9))
    )
    assert by_fields == by_methods and hash(by_fields) == hash(by_methods)
    assert by_fields.state_names == ("failed", "retry")
    assert type(by_fields.state_names[0]) is str


@pytest.mark.parametrize(
    ("field", "cursor", "text"),
    [
        ("id", Cursor(42, 42), "42,42"),
        ("priority", Cursor(-5, 7), "-5,7"),
        ("attempts", Cursor(0, 9), "0,9"),
        (
            "created_at",
            Cursor(datetime(2026, 12, 2, 10, 15, 0, 123456, tzinfo=timezone.utc), 9912),
            "2026-12-02T10:15:00.123456+00:00,9912",
        ),
    ],
)
def test_cursor_text_round_trips(field: str, cursor: Cursor, text: str) -> None:
    assert cursor.to_text() == text
    assert Cursor.from_text(text, field) == cursor
    assert TaskFilter().order_by(field).after(Cursor.from_text(text, field)).cursor == cursor


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("id", "12"),  # no id
        ("id", "a,1"),
        ("id", "1,b"),
        ("priority", "40000,1"),  # out of smallint
        ("created_at", "3,4"),  # an integer where a time belongs
        ("created_at", "2026-12-02T10:15:00,4"),  # naive
        ("payload", "1,1"),  # not an order field
    ],
)
def test_cursor_text_that_does_not_fit_is_refused(field: str, text: str) -> None:
    with pytest.raises(InvalidFilter):
        Cursor.from_text(text, field)


def test_count_modes() -> None:
    assert [check_count(mode) for mode in COUNT_MODES] == ["auto", "exact", "none"]
    for bad in ("all", None, 1, "AUTO"):
        with pytest.raises(InvalidFilter, match="count: expected one of auto, exact, none"):
            check_count(bad)


def test_states_is_a_deprecated_spelling_of_statuses() -> None:
    with pytest.warns(DeprecationWarning, match="use TaskFilter.statuses"):
        old = TaskFilter().states("failed", TaskStatus.CANCELLED)
    assert old == TaskFilter().statuses("failed", "cancelled")
