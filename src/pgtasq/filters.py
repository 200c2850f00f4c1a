"""`TaskFilter`: an immutable builder that selects tasks for listing and bulk operations.

::

    f = TaskFilter().statuses("failed", "cancelled").queues("mail").order_by("created_at", "desc")
    page = client.list_tasks(f.limit(50))
    more = client.list_tasks(f.limit(50).after(page.next_cursor))   # keyset pagination
    every = client.list_tasks(f, count="exact").total               # see COUNT_MODES

Every method returns a new filter and validates its arguments at once. Statuses are the
stored ones (`TaskStatus`: pending, running, completed, failed, cancelled) plus two views of
pending: ``scheduled`` (run_at in the future) and ``retry`` (pending after a failed attempt).
Order fields come from a fixed set; values only ever travel as bound parameters.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Literal

from pgtasq._limits import ID_MAX as ID_MAX  # importable from here, as before
from pgtasq._limits import NAME_MAX_LENGTH, text_problem
from pgtasq.errors import PgtasqError
from pgtasq.models import TaskStatus

LIMIT_DEFAULT = 100
LIMIT_MAX = 10_000
OFFSET_MAX = 1_000_000
VIEW_STATES = ("scheduled", "retry")
STATUSES = tuple(s.value for s in TaskStatus) + VIEW_STATES
STATES = STATUSES  # the former name
# Fields that are never NULL, so keyset pagination on (field, id) is exact.
ORDER_FIELDS = ("id", "created_at", "updated_at", "run_at", "priority", "attempts")
Direction = Literal["asc", "desc"]
# How list_tasks computes a page's total. "auto": exact up to COUNT_EXACT_MAX matching rows
# (counting stops there), above that the planner's estimate (page.total_exact is False);
# "exact": count every matching row (its cost grows with them); "none": no total (None).
CountMode = Literal["auto", "exact", "none"]
COUNT_MODES: tuple[CountMode, ...] = ("auto", "exact", "none")
COUNT_MODE_DEFAULT: CountMode = "auto"
COUNT_EXACT_MAX = 1000


class InvalidFilter(PgtasqError, ValueError):
    """A filter argument is out of range or unknown. Nothing was sent to the database."""


def _sequence(kind: str, values: object) -> tuple[Any, ...]:
    """A tuple of the values (a list or any iterable but a string is fine)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InvalidFilter(f"{kind}: expected a sequence of values, got {values!r}")
    return tuple(values)


def _states(values: object) -> tuple[str, ...]:
    statuses = _sequence("statuses", values)
    names = tuple(s.value if isinstance(s, TaskStatus) else s for s in statuses)
    unknown = [s for s in names if s not in STATUSES]
    if unknown:
        raise InvalidFilter(f"statuses: unknown {unknown!r}; known: {', '.join(STATUSES)}")
    return names


def _names(kind: str, values: object) -> tuple[str, ...]:
    out = _sequence(kind, values)
    for value in out:
        check_name(kind, value)
    return out


def check_name(kind: str, value: object) -> str:
    """A task type or queue name to look for: what such a column can hold (InvalidFilter)."""
    if not isinstance(value, str) or not value or len(value) > NAME_MAX_LENGTH:
        raise InvalidFilter(
            f"{kind}: expected non-empty strings of at most {NAME_MAX_LENGTH} characters, "
            f"got {value!r}"
        )
    problem = text_problem(value)
    if problem is not None:
        raise InvalidFilter(f"{kind}: {value!r} {problem}")
    return value


def _ids(values: object) -> tuple[int, ...]:
    """Task ids: integers from 1 to the bigint maximum (a larger one would only be refused
    by the server, as a `psycopg.DataError`)."""
    out = _sequence("ids", values)
    for value in out:
        if not _is_int(value, "id") or value < 1:
            raise InvalidFilter(
                f"ids: expected task ids, integers from 1 to {ID_MAX}, got {value!r}"
            )
    return out


def _is_aware(value: object) -> bool:
    """An aware datetime that has a UTC time (year 1 at +05:00 has none): what every driver
    can send as a timestamptz."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        return False
    try:
        value.astimezone(timezone.utc)
    except OverflowError:
        return False
    return True


def _aware(name: str, value: datetime) -> datetime:
    if not _is_aware(value):
        raise InvalidFilter(
            f"{name}: expected a timezone-aware datetime (with a UTC time from year 1 to "
            f"9999), got {value!r}"
        )
    return value


def _order(field: object, direction: object) -> None:
    if field not in ORDER_FIELDS:
        raise InvalidFilter(f"order_by: unknown field {field!r}; known: {', '.join(ORDER_FIELDS)}")
    if direction not in ("asc", "desc"):
        raise InvalidFilter(f"order_by: direction must be 'asc' or 'desc', got {direction!r}")


def _limit(n: object) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= LIMIT_MAX:
        raise InvalidFilter(f"limit: must be from 1 to {LIMIT_MAX}, got {n!r}")


def _offset(n: object) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= OFFSET_MAX:
        raise InvalidFilter(f"offset: must be from 0 to {OFFSET_MAX}, got {n!r}")


# The SQL type of each order field's values (an integer type's range), as the keyset
# comparison casts a cursor's value; a value out of range would only be refused by the server.
_INT_RANGES = {
    "id": (-(2**63), ID_MAX),
    "priority": (-(2**15), 2**15 - 1),
    "attempts": (-(2**31), 2**31 - 1),
}


def _is_int(value: object, field: str) -> bool:
    low, high = _INT_RANGES[field]
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _cursor(cursor: object, field: str) -> None:
    """A Cursor whose value fits the order field (what a page of that order returns)."""
    if cursor is None:
        return
    if not isinstance(cursor, Cursor):
        raise InvalidFilter(f"after: expected a Cursor, got {type(cursor).__name__}")
    if not _is_int(cursor.id, "id"):
        raise InvalidFilter(
            f"after: the cursor's id must be a task id (an integer), got {cursor.id!r}"
        )
    value = cursor.value
    if field in _INT_RANGES:
        if not _is_int(value, field):
            low, high = _INT_RANGES[field]
            raise InvalidFilter(
                f"after: ordered by {field}, the cursor's value must be an integer from {low} "
                f"to {high}, got {value!r}"
            )
    elif not _is_aware(value):
        raise InvalidFilter(
            f"after: ordered by {field}, the cursor's value must be a timezone-aware "
            f"datetime, got {value!r}"
        )


def check_count(count: object) -> CountMode:
    """A `CountMode`, checked before anything is sent."""
    if count not in COUNT_MODES:
        raise InvalidFilter(f"count: expected one of {', '.join(COUNT_MODES)}, got {count!r}")
    return count


_BOTH = "{}: use either offset or after, not both"


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where the next page starts: the last row's order value and id."""

    value: Any
    id: int

    def to_text(self) -> str:
        """The cursor as one word, ``VALUE,ID`` (ISO 8601 for times), as the CLI prints it."""
        value = self.value.isoformat() if isinstance(self.value, datetime) else self.value
        return f"{value},{self.id}"

    @classmethod
    def from_text(cls, text: str, order_field: str) -> Cursor:
        """Parse `to_text`'s form for a page ordered by ``order_field`` (InvalidFilter if
        it does not fit the field)."""
        _order(order_field, "asc")
        value, sep, task_id = text.strip().rpartition(",")
        parsed: Any = value
        try:
            if not sep:
                raise ValueError
            ident = int(task_id)
            parsed = int(value) if order_field in _INT_RANGES else datetime.fromisoformat(value)
        except ValueError:
            raise InvalidFilter(
                f"after: expected a cursor VALUE,ID as a page of this order prints it "
                f"(ordered by {order_field}), got {text!r}"
            ) from None
        cursor = cls(parsed, ident)
        _cursor(cursor, order_field)
        return cursor


@dataclasses.dataclass(frozen=True)
class TaskFilter:
    """Selects tasks; see the module docstring.

    Build it with its methods. Built from its fields (or with ``dataclasses.replace``) it is
    checked the same way, with the same messages; sequences become tuples, `TaskStatus`
    members their values and datetimes UTC (PostgreSQL's text input refuses some offsets
    Python allows), so equal filters compare equal however they were built.
    """

    state_names: tuple[str, ...] = ()
    type_names: tuple[str, ...] = ()
    queue_names: tuple[str, ...] = ()
    task_ids: tuple[int, ...] = ()
    created_from: datetime | None = None
    created_until: datetime | None = None
    order_field: str = "id"
    order_direction: Direction = "asc"
    limit_rows: int = LIMIT_DEFAULT
    offset_rows: int = 0
    cursor: Cursor | None = None

    def __post_init__(self) -> None:
        # Every way of building a filter ends here (the methods go through dataclasses.replace).
        normal = {
            "state_names": _states(self.state_names),
            "type_names": _names("types", self.type_names),
            "queue_names": _names("queues", self.queue_names),
            "task_ids": _ids(self.task_ids),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)
        if self.created_from is not None:
            _aware("created_after", self.created_from)
            object.__setattr__(self, "created_from", self.created_from.astimezone(timezone.utc))
        if self.created_until is not None:
            _aware("created_before", self.created_until)
            object.__setattr__(self, "created_until", self.created_until.astimezone(timezone.utc))
        _order(self.order_field, self.order_direction)
        _limit(self.limit_rows)
        _offset(self.offset_rows)
        _cursor(self.cursor, self.order_field)
        if self.cursor is not None and isinstance(self.cursor.value, datetime):
            utc = Cursor(self.cursor.value.astimezone(timezone.utc), self.cursor.id)
            object.__setattr__(self, "cursor", utc)
        if self.cursor is not None and self.offset_rows:
            raise InvalidFilter(_BOTH.format("after"))

    def _with(self, **changes: Any) -> TaskFilter:
        return dataclasses.replace(self, **changes)

    def statuses(self, *statuses: str | TaskStatus) -> TaskFilter:
        """Only tasks with one of these statuses: a `TaskStatus` (or its value), or one of
        the views of pending tasks, ``"scheduled"`` (``run_at`` in the future) and
        ``"retry"`` (pending after a failed attempt)."""
        return self._with(state_names=statuses)

    def states(self, *states: str | TaskStatus) -> TaskFilter:
        """Deprecated: `statuses` (the column, the field and the type say status)."""
        warnings.warn(
            "TaskFilter.states() is deprecated: use TaskFilter.statuses()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._with(state_names=states)

    def types(self, *types: str) -> TaskFilter:
        """Only tasks of one of these types (none given: any type)."""
        return self._with(type_names=types)

    def queues(self, *queues: str) -> TaskFilter:
        """Only tasks in one of these queues (none given: any queue)."""
        return self._with(queue_names=queues)

    def ids(self, *ids: int) -> TaskFilter:
        """Only the tasks with these ids (none given: any id)."""
        return self._with(task_ids=ids)

    def created_after(self, when: datetime) -> TaskFilter:
        """Only tasks created at or after ``when`` (timezone-aware)."""
        return self._with(created_from=when)

    def created_before(self, when: datetime) -> TaskFilter:
        """Only tasks created before ``when`` (timezone-aware)."""
        return self._with(created_until=when)

    def order_by(self, field: str, direction: Direction = "asc") -> TaskFilter:
        """Order by ``field`` (one of `ORDER_FIELDS`; ties by id), ``"asc"`` or ``"desc"``;
        drops a cursor set by `after`, which belongs to the former order."""
        return self._with(order_field=field, order_direction=direction, cursor=None)

    def limit(self, n: int) -> TaskFilter:
        """At most ``n`` tasks per page, 1 to 10 000 (outside that range: InvalidFilter)."""
        return self._with(limit_rows=n)

    def offset(self, n: int) -> TaskFilter:
        """Skip ``n`` tasks (0 to 1 000 000); prefer `after` on large tables."""
        _offset(n)
        if n and self.cursor is not None:
            raise InvalidFilter(_BOTH.format("offset"))
        return self._with(offset_rows=n)

    def after(self, cursor: Cursor | None) -> TaskFilter:
        """Continue after ``cursor`` (a page's ``next_cursor``): keyset pagination.

        Call it after `order_by` (which drops the cursor): the cursor's value must fit the
        order field, an integer for id/priority/attempts, an aware datetime otherwise.
        """
        return self._with(cursor=cursor)
