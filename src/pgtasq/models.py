"""What to run (`Task`), what the row says (`TaskInfo`), and the states a task moves through.

Validation lives here and runs before any SQL: a bad option raises `TaskValidationError`
naming the field, and nothing is sent to the database.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pgtasq.errors import TaskValidationError

QUEUE_DEFAULT = "default"
PRIORITY_DEFAULT = 0
PRIORITY_MIN = -100
PRIORITY_MAX = 100
MAX_ATTEMPTS_DEFAULT = 5
NAME_MAX_LENGTH = 128
IDEMPOTENCY_KEY_MAX_LENGTH = 255
PAYLOAD_MAX_BYTES_DEFAULT = 1024 * 1024

Seconds = float | int | timedelta
"""A duration: seconds as a number, or a `timedelta`."""


class TaskStatus(str, enum.Enum):
    """The states of a task; the database enum ``task_status`` has the same values.

    ``scheduled`` and ``retry`` are views of ``pending`` (``run_at`` in the future,
    ``attempts > 0``), not states of their own.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


def _seconds(field: str, value: Seconds | None) -> float | None:
    """A positive duration in seconds, or None; raises naming the field otherwise."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TaskValidationError(field, f"expected seconds or a timedelta, got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise TaskValidationError(field, f"must be a positive duration, got {value!r}")
    return seconds


def _aware(field: str, value: datetime | None) -> None:
    if value is None:
        return
    if not isinstance(value, datetime):
        raise TaskValidationError(field, f"expected a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise TaskValidationError(field, "must be timezone-aware (e.g. datetime.now(timezone.utc))")


def _name(field: str, value: object, max_length: int = NAME_MAX_LENGTH) -> None:
    if not isinstance(value, str):
        raise TaskValidationError(field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise TaskValidationError(field, "must not be empty")
    if len(value) > max_length:
        raise TaskValidationError(
            field, f"must be at most {max_length} characters, got {len(value)}"
        )


@dataclasses.dataclass(frozen=True)
class Task:
    """A task to enqueue: a type, a JSON payload and options.

    Options are keyword-only. ``run_at`` (an aware datetime) and ``delay`` (seconds or a
    timedelta) both say "not before"; give at most one. Validation runs at construction,
    except the payload, which is checked when it is serialized at enqueue time (its size
    limit is a producer setting).
    """

    type: str
    payload: Any = None
    _: dataclasses.KW_ONLY
    queue: str = QUEUE_DEFAULT
    priority: int = PRIORITY_DEFAULT
    run_at: datetime | None = None
    delay: Seconds | None = None
    max_attempts: int = MAX_ATTEMPTS_DEFAULT
    timeout: Seconds | None = None
    deadline: datetime | None = None
    idempotency_key: str | None = None
    retention: Seconds | None = None

    def __post_init__(self) -> None:
        _name("type", self.type)
        _name("queue", self.queue)
        if (
            not isinstance(self.priority, int)
            or isinstance(self.priority, bool)
            or not PRIORITY_MIN <= self.priority <= PRIORITY_MAX
        ):
            raise TaskValidationError(
                "priority",
                f"must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}, got {self.priority!r}",
            )
        if self.run_at is not None and self.delay is not None:
            raise TaskValidationError("delay", "give run_at or delay, not both")
        _aware("run_at", self.run_at)
        _seconds("delay", self.delay)
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or not 1 <= self.max_attempts <= 2**31 - 1
        ):
            raise TaskValidationError(
                "max_attempts", f"must be an integer >= 1, got {self.max_attempts!r}"
            )
        _seconds("timeout", self.timeout)
        _aware("deadline", self.deadline)
        _seconds("retention", self.retention)
        if self.idempotency_key is not None:
            _name("idempotency_key", self.idempotency_key, IDEMPOTENCY_KEY_MAX_LENGTH)

    def with_options(self, **options: Any) -> Task:
        """A copy of this task with some fields changed (validated again)."""
        return dataclasses.replace(self, **options)


def dump_payload(payload: Any, max_bytes: int) -> str:
    """The payload as compact JSON text, or TaskValidationError naming ``payload``."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TaskValidationError("payload", f"is not JSON-serializable: {exc}") from exc
    if "\\u0000" in text:
        raise TaskValidationError(
            "payload", "PostgreSQL jsonb cannot store the NUL character \\u0000"
        )
    if len(text) > max_bytes // 4 and len(text.encode()) > max_bytes:
        raise TaskValidationError(
            "payload", f"is {len(text.encode())} bytes of JSON, over the limit of {max_bytes}"
        )
    return text


def _interval(value: timedelta | float | None) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    return timedelta(seconds=value)


def _json(value: Any) -> Any:
    """jsonb arrives parsed (psycopg) or as text (asyncpg, or a ``::text`` column)."""
    return json.loads(value) if isinstance(value, str) else value


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What the row says about a task.

    ``created`` is False when `enqueue` found an existing task with the same idempotency key
    and returned it instead of inserting a new one.
    """

    id: int
    queue: str
    type: str
    payload: Any
    priority: int
    status: TaskStatus
    run_at: datetime
    attempts: int
    max_attempts: int
    timeout: timedelta | None
    deadline: datetime | None
    idempotency_key: str | None
    errors: list[dict[str, Any]]
    result: Any
    locked_by: str | None
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime
    attempted_at: datetime | None
    finalized_at: datetime | None
    retention: timedelta | None
    created: bool = True

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, created: bool = True) -> TaskInfo:
        """Build from a row selected with ``_sql.TASK_COLUMNS`` (jsonb columns as text)."""
        return cls(
            id=row["id"],
            queue=row["queue"],
            type=row["type"],
            payload=_json(row["payload"]),
            priority=row["priority"],
            status=TaskStatus(row["status"]),
            run_at=row["run_at"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            timeout=_interval(row["timeout"]),
            deadline=row["deadline"],
            idempotency_key=row["idempotency_key"],
            errors=_json(row["errors"]),
            result=None if row["result"] is None else _json(row["result"]),
            locked_by=row["locked_by"],
            locked_until=row["locked_until"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            attempted_at=row["attempted_at"],
            finalized_at=row["finalized_at"],
            retention=_interval(row["retention"]),
            created=created,
        )
