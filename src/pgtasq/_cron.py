"""The scheduler's core, without I/O: cron expressions and time zones checked, `Schedule`
(one entry), the idempotency key of each tick, and which ticks are due at a given time
(`due`). `pgtasq.scheduler` (whose docstring describes the rules) runs it on a database.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import croniter

from pgtasq import _sql
from pgtasq._limits import text_problem
from pgtasq.errors import InvalidSchedule
from pgtasq.models import IDEMPOTENCY_KEY_MAX_LENGTH, Task

Missed = Literal["skip", "once"]

TIMEZONE_DEFAULT = "UTC"
MISSED_DEFAULT: Missed = "skip"
MAX_TICKS_PER_RUN_DEFAULT = 100
# The keys of ticks: in pgtasq's reserved namespace (no producer can take one), the entry id
# length-prefixed so that one entry's keys never start like another's (`rep` vs `rep:eu`).
KEY_PREFIX = _sql.SCHEDULE_KEY_PREFIX  # "pgtasq:schedule:", under models.RESERVED_KEY_PREFIX
ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
# The longest tick suffix of a key: ":" + "2026-03-29T01:00:00+00:00".
_TICK_SUFFIX_LENGTH = 26
# ... and the longest length prefix, "209:".
ENTRY_ID_MAX_LENGTH = IDEMPOTENCY_KEY_MAX_LENGTH - len(KEY_PREFIX) - 4 - _TICK_SUFFIX_LENGTH

_UTC = timezone.utc

# croniter's "R" (random) and "H" (hashed) fields, with an optional range and step: "R",
# "H(0-29)", "R/5". R draws a value per process, so schedulers would disagree on the ticks
# and "once per tick" would break; H needs a hash id, which pgtasq does not pass.
_DRAWN_FIELD = re.compile(r"^([hr])(\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)
_DRAWN_MESSAGE = {
    "r": "the R (random) field is not supported: every scheduler would draw its own value, "
    "so a tick would not be the same across schedulers; write the value out",
    "h": "the H (hashed) field is not supported; write the value out",
}


def _check_text(field: str, value: str) -> None:
    """What the schedules table stores must be text PostgreSQL accepts (no NUL, UTF-8)."""
    problem = text_problem(value)
    if problem is not None:
        raise InvalidSchedule(field, value, problem)


def check_cron(cron: str) -> bool:
    """Validate a cron expression; returns whether it has a seconds field (InvalidSchedule)."""
    if not isinstance(cron, str):
        raise InvalidSchedule("cron", repr(cron), "expected a string")
    _check_text("cron", cron)
    expr = cron.strip()
    if expr.startswith("@"):
        if expr.lower() not in ALIASES:
            raise InvalidSchedule("cron", cron, f"unknown alias; use one of {sorted(ALIASES)}")
        return False
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise InvalidSchedule("cron", cron, f"expected 5 or 6 fields, got {len(fields)}")
    seconds = len(fields) == 6
    for field in fields:
        drawn = _DRAWN_FIELD.match(field)
        if drawn:
            raise InvalidSchedule("cron", cron, _DRAWN_MESSAGE[drawn.group(1).lower()])
    try:
        it = croniter.croniter(expr, datetime(2000, 1, 1, tzinfo=_UTC), second_at_beginning=seconds)
        it.get_next(datetime)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise InvalidSchedule("cron", cron, str(exc) or type(exc).__name__) from exc
    return seconds


def entry_key_prefix(entry_id: str) -> str:
    """How the idempotency keys of an entry's ticks start (`_sql` matches the same text)."""
    return f"{KEY_PREFIX}{len(entry_id)}:{entry_id}:"


def check_timezone(name: str) -> ZoneInfo:
    """The zone of an IANA name; raises InvalidSchedule."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidSchedule("timezone", repr(name), "expected an IANA time zone name")
    _check_text("timezone", name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError: zoneinfo looks the name up as a file (a name too long for one, a folder)
        raise InvalidSchedule("timezone", name, "unknown time zone") from exc


def _duration(value: Any) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One scheduler entry: run ``task`` at every tick of ``cron`` in ``timezone``.

    Validated when built (InvalidSchedule). ``id`` defaults to a stable name derived from
    the task type and the expression (and the zone, when it is not UTC).
    """

    cron: str
    task: Task
    _: dataclasses.KW_ONLY
    id: str = ""
    timezone: str = TIMEZONE_DEFAULT

    def __post_init__(self) -> None:
        if not isinstance(self.task, Task):
            raise TypeError(f"task must be a pgtasq.Task, got {type(self.task).__name__}")
        check_cron(self.cron)
        check_timezone(self.timezone)
        for field in ("idempotency_key", "run_at", "deadline"):
            if getattr(self.task, field) is not None:
                raise InvalidSchedule(
                    "task", self.task.type, f"a scheduled task cannot set {field} (it is per tick)"
                )
        if self.task.unique_key is not None:
            raise InvalidSchedule(
                "task",
                self.task.type,
                "a scheduled task cannot set unique_key (each tick is enqueued exactly once by "
                "its own key; docs/unique.md)",
            )
        if not self.id:
            zone = "" if self.timezone == TIMEZONE_DEFAULT else f"@{self.timezone}"
            object.__setattr__(self, "id", f"{self.task.type}:{self.cron.strip()}{zone}")
        if not isinstance(self.id, str) or len(self.id) > ENTRY_ID_MAX_LENGTH:
            raise InvalidSchedule(
                "id", str(self.id), f"must be a string of at most {ENTRY_ID_MAX_LENGTH} characters"
            )
        _check_text("id", self.id)

    @property
    def zone(self) -> ZoneInfo:
        """The entry's time zone, whose wall clock the cron expression reads."""
        return ZoneInfo(self.timezone)

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``, in UTC."""
        seconds = len(self.cron.split()) == 6
        it = croniter.croniter(
            self.cron.strip(), after.astimezone(self.zone), second_at_beginning=seconds
        )
        result: datetime = it.get_next(datetime)
        return result.astimezone(_UTC)

    def latest_at(self, now: datetime) -> datetime:
        """The most recent tick at or before ``now``, in UTC."""
        seconds = len(self.cron.split()) == 6
        it = croniter.croniter(
            self.cron.strip(), now.astimezone(self.zone), second_at_beginning=seconds
        )
        prev: datetime = it.get_prev(datetime)
        prev = prev.astimezone(_UTC)
        following = self.next_after(prev)
        return following if following <= now else prev

    def key(self, tick: datetime) -> str:
        """The idempotency key of one tick (`entry_key_prefix` and the tick)."""
        return f"{entry_key_prefix(self.id)}{tick.astimezone(_UTC).isoformat()}"

    def options(self) -> dict[str, Any]:
        """The task's options, as the schedules table stores them (durations in seconds):
        those `_columns.SCHEDULE_OPTIONS` names (tests/unit/test_columns.py checks)."""
        t = self.task
        return {
            "queue": t.queue,
            "priority": t.priority,
            "max_attempts": t.max_attempts,
            "delay": _duration(t.delay),
            "timeout": _duration(t.timeout),
            "retention": _duration(t.retention),
            "headers": dict(t.headers) if t.headers else None,
        }


@dataclasses.dataclass(frozen=True)
class Due:
    """What one entry has to do at ``now``: these ticks, then wait for ``next_due``."""

    ticks: tuple[datetime, ...]
    next_due: datetime
    dropped: int = 0


def due(
    entry: Schedule,
    next_due: datetime | None,
    last_run_at: datetime | None,
    now: datetime,
    missed: Missed,
    max_ticks: int = MAX_TICKS_PER_RUN_DEFAULT,
) -> Due:
    """The ticks of ``entry`` to enqueue at ``now``.

    ``next_due`` None: the entry is being taken up; ``missed`` and ``last_run_at`` (from the
    schedules table) decide about the ticks before now. Otherwise every tick from
    ``next_due`` to ``now`` (inclusive), at most ``max_ticks`` of them.
    """
    if next_due is None:
        following = entry.next_after(now)
        if missed == "once" and last_run_at is not None:
            latest = entry.latest_at(now)
            if latest > last_run_at:
                return Due((latest,), following)
        return Due((), following)
    ticks: list[datetime] = []
    tick = next_due
    while tick <= now:
        if len(ticks) == max_ticks:
            return Due(tuple(ticks), entry.next_after(now), dropped=1)
        ticks.append(tick)
        tick = entry.next_after(tick)
    return Due(tuple(ticks), tick)


def upsert_params(
    entry: Schedule, payload: str, last_run_at: datetime | None, next_run_at: datetime
) -> dict[str, Any]:
    """The parameters of `schedule_upsert`."""
    return {
        "id": entry.id,
        "cron": entry.cron,
        "timezone": entry.timezone,
        "task_type": entry.task.type,
        "payload": payload,
        "options": json.dumps(entry.options(), sort_keys=True),
        "last_run_at": last_run_at,
        "next_run_at": next_run_at,
    }
