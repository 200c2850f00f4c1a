"""What the pages compute from plain values, with no I/O: durations as words, JSON shown
pretty and cut to a size, and the plain-language line on why a task is not running."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from pgtasq.models import TaskInfo, TaskStatus
from pgtasq.web._queries import AHEAD_COUNT_MAX, TaskFacts

JSON_SHOWN_MAX = 20_000  # characters of pretty JSON a page shows; the rest is a download


def ago(seconds: float) -> str:
    """A duration in the largest unit that fits: ``42s``, ``5m 3s``, ``3h 12m``, ``2d 4h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def duration(value: timedelta | None) -> str:
    return "" if value is None else ago(value.total_seconds())


def when(value: datetime | None) -> str:
    """A timestamp as UTC to the second (the pages say UTC once, in the footer)."""
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def pretty_json(value: Any, limit: int = JSON_SHOWN_MAX) -> tuple[str, bool]:
    """The value as indented JSON, cut to ``limit`` characters; and whether it was cut."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    if len(text) > limit:
        return text[:limit], True
    return text, False


def why_not_running(task: TaskInfo, facts: TaskFacts) -> list[str]:
    """Plain sentences on why the task is not running now (or what it is doing); the
    first is the main reason. Pure: the facts come from `_queries.task_facts`."""
    status = task.status
    if status is TaskStatus.RUNNING:
        holder = task.locked_by or "an unknown worker"
        running = [f"It is running: the lease is held by worker {holder}"]
        if task.locked_until is not None:
            left = (task.locked_until - facts.now).total_seconds()
            if left >= 0:
                running[0] += f" until {when(task.locked_until)} (in {ago(left)})."
            else:
                running[0] += f"; the lease expired {ago(-left)} ago."
        else:
            running[0] += "."
        if facts.lease_holder_alive is False:
            running.append(
                "That worker has no recent heartbeat: when the lease runs out, a rescuer puts "
                "the task back to pending (or failed, without attempts left)."
            )
        return running
    if status is TaskStatus.COMPLETED:
        return ["It completed; it will not run again."]
    if status is TaskStatus.FAILED:
        return [
            f"It failed after {task.attempts} of {task.max_attempts} attempts and will not run "
            "again unless retried."
        ]
    if status is TaskStatus.CANCELLED:
        return ["It was cancelled; it will not run again unless retried."]
    # pending
    lines: list[str] = []
    if facts.queue_paused:
        lines.append(f"Its queue {task.queue!r} is paused: no worker claims its tasks.")
    if task.run_at > facts.now:
        wait = ago((task.run_at - facts.now).total_seconds())
        if task.attempts > 0:
            lines.append(
                f"It is waiting to be retried (attempt {task.attempts + 1} of "
                f"{task.max_attempts}) at {when(task.run_at)}, in {wait}."
            )
        else:
            lines.append(f"It is scheduled for {when(task.run_at)}, in {wait}.")
    serving = [w for w in facts.live_workers if task.queue in w.queues]
    if not serving:
        lines.append(f"No live worker consumes queue {task.queue!r}.")
    else:
        typed = [w for w in serving if w.types is None or task.type in w.types]
        if not typed:
            lines.append(
                f"The {len(serving)} live worker(s) of queue {task.queue!r} have no handler for "
                f"type {task.type!r}."
            )
    if not lines:
        ahead = facts.ahead or 0
        more = "+" if facts.ahead is not None and ahead >= AHEAD_COUNT_MAX else ""
        lines.append(
            f"It is ready and waits for a free worker: {ahead}{more} ready task(s) of queue "
            f"{task.queue!r} go first."
        )
    return lines


def error_text(entry: Any) -> str:
    """One entry of ``TaskInfo.errors`` as one line: ``Kind: message``."""
    if not isinstance(entry, dict):
        return str(entry)
    kind, message = entry.get("error"), entry.get("message")
    if kind and message:
        return f"{kind}: {message}"
    return str(kind or message or "")


def _at(value: Any) -> datetime | None:
    """An error entry's ``at`` (ISO text in the jsonb) as a datetime, None if unreadable."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def timeline(task: TaskInfo) -> list[tuple[str, str]]:
    """What happened to the task, oldest first: (time as `when` shows it, what)."""
    events: list[tuple[datetime, int, str]] = [(task.created_at, 0, "enqueued")]
    for n, entry in enumerate(task.errors, start=1):
        attempt = entry.get("attempt", n) if isinstance(entry, dict) else n
        at = _at(entry.get("at")) if isinstance(entry, dict) else None
        if at is not None:
            events.append((at, 2, f"attempt {attempt} failed: {error_text(entry)}"))
    if task.attempted_at is not None:
        events.append((task.attempted_at, 1, f"attempt {task.attempts} started"))
    if task.finalized_at is not None:
        events.append((task.finalized_at, 3, task.status.value))
    events.sort(key=lambda e: (e[0], e[1]))
    return [(when(at), what) for at, _, what in events]
