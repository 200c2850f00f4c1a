"""How the ``pgtasq`` admin commands print: aligned columns, JSON, and progress on stderr.

JSON: objects (dataclasses as dicts), ISO 8601 datetimes and dates, durations in seconds.

Task data (types, queue names, payloads, error messages, anything a producer, a handler or a
NOTIFY wrote) never reaches the terminal raw: every character a terminal could act on
instead of showing (C0 controls including newline and tab, DEL, C1 controls such as the
8-bit CSI, the bidirectional overrides and isolates, the line and paragraph separators) is
printed as an escape, ``\\x1b`` or ``\\u202e`` (`printable`). JSON output writes the same
characters as ``\\u`` escapes, which JSON readers decode to the same strings.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import sys
import time
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import click

from pgtasq._client_ops import Preview, QueueInfo, WorkerInfo
from pgtasq.models import Progress as TaskProgress
from pgtasq.models import TaskInfo

PAYLOAD_COLUMN_WIDTH = 40
PROGRESS_COLUMN_WIDTH = 24

# What a terminal may act on rather than show (see the module docstring).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: str) -> str:
    """``value`` with every character a terminal could act on written as an escape."""
    return _UNSAFE.sub(_escape, value)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _json_default(value: object) -> object:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _plain(value: object) -> object:
    if isinstance(value, TaskInfo):
        return _task_plain(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _task_plain(task: TaskInfo) -> dict[str, Any]:
    """A task as JSON: a value not loaded (a `Preview`) is ``<name>_preview`` (its text) and
    ``<name>_truncated`` instead of ``<name>``, so it is never taken for the value."""
    plain = dataclasses.asdict(dataclasses.replace(task, payload=None, result=None))
    for name in ("payload", "result"):
        value = getattr(task, name)
        if isinstance(value, Preview):
            del plain[name]
            plain[f"{name}_preview"] = value.text
            plain[f"{name}_truncated"] = value.truncated
        else:
            plain[name] = value
    return plain


def print_json(value: object) -> None:
    dumped = json.dumps(_plain(value), default=_json_default, ensure_ascii=False)
    # json escapes C0 itself; DEL, C1 and the rest can only stand inside strings, where a
    # \u escape is the same character to a reader.
    click.echo(_UNSAFE.sub(_json_escape, dumped))


def text(value: object) -> str:
    """A value as one table cell."""
    if value is None:
        return "-"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"{value.total_seconds():.1f}s"
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, Preview):
        return printable(str(value))
    return printable(json.dumps(value, default=_json_default, ensure_ascii=False))


def _clip(cell: str, width: int) -> str:
    return cell if len(cell) <= width else cell[: width - 1] + "…"


def table(header: str, rows: Sequence[Sequence[object]], empty: str = "(none)") -> None:
    """Plain aligned columns under the space-separated ``header``; integers aligned right."""
    titles = header.split()
    cells = [[text(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(titles)]
    right = [
        bool(rows) and all(isinstance(row[i], int) and not isinstance(row[i], bool) for row in rows)
        for i in range(len(titles))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    click.echo(line(titles))
    for row in cells:
        click.echo(line(row))
    if not rows and empty:
        click.echo(empty)


def dataclass_table(kind: type[Any], items: Sequence[Any]) -> None:
    """One column per field of the dataclass ``kind``, named after it."""
    names = [field.name for field in dataclasses.fields(kind)]
    table(" ".join(names).upper(), [[getattr(item, name) for name in names] for item in items])


def progress_cell(progress: TaskProgress | None) -> str:
    """A task's progress in a few characters: ``25%`` (a fraction) or its JSON object, then
    its note; ``-`` for none."""
    if progress is None:
        return "-"
    value = progress.value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        shown = f"{value * 100:.0f}%"
    else:
        shown = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return printable(shown if progress.note is None else f"{shown} {progress.note}")


def task_table(tasks: Sequence[TaskInfo]) -> None:
    table(
        "ID QUEUE TYPE STATUS PRIORITY ATTEMPTS PROGRESS RUN_AT CREATED_AT PAYLOAD",
        [
            (
                t.id,
                t.queue,
                t.type,
                t.status,
                t.priority,
                f"{t.attempts}/{t.max_attempts}",
                _clip(progress_cell(t.progress), PROGRESS_COLUMN_WIDTH),
                t.run_at,
                t.created_at,
                _clip(text(t.payload), PAYLOAD_COLUMN_WIDTH),
            )
            for t in tasks
        ],
        empty="",  # the caller prints how many match
    )


def queue_table(queues: Sequence[QueueInfo]) -> None:
    """LATENCY: the oldest ready task's wait. TODAY, TOTAL: processed/failed."""
    table(
        "QUEUE STATE PENDING SCHEDULED RETRY RUNNING COMPLETED FAILED CANCELLED LATENCY "
        "TODAY TOTAL",
        [
            (
                q.name,
                "paused" if q.paused else "active",
                q.pending,
                q.scheduled,
                q.retry,
                q.running,
                q.completed,
                q.failed,
                q.cancelled,
                q.latency,
                f"{q.processed_today}/{q.failed_today}",
                f"{q.processed_total}/{q.failed_total}",
            )
            for q in queues
        ],
    )


def worker_table(workers: Sequence[WorkerInfo]) -> None:
    table(
        "ID HOST PID CONCURRENCY QUEUES STARTED_AT HEARTBEAT_AT RUNNING",
        [
            (
                w.id,
                w.host,
                w.pid,
                w.concurrency,
                ",".join(f"{queue}={weight}" for queue, weight in w.queues.items()) or "-",
                w.started_at,
                w.heartbeat_at,
                " ".join(str(task_id) for task_id in w.running) or "-",
            )
            for w in workers
        ],
    )


def task_details(task: TaskInfo) -> None:
    """One ``field: value`` line per field, then one line per recorded error."""
    for field in dataclasses.fields(task):
        if field.name == "progress":
            updated = "" if task.progress is None else f" (at {text(task.progress.updated_at)})"
            click.echo(f"{'progress:':<17}{progress_cell(task.progress)}{updated}")
        elif field.name not in ("created", "errors"):
            click.echo(f"{field.name + ':':<17}{text(getattr(task, field.name))}")
    click.echo(f"{'errors:':<17}{len(task.errors) or '-'}")
    for error in task.errors:
        if not isinstance(error, dict):  # a row written by other means: show it as it is
            click.echo(printable(f"  {error!r}"))
            continue
        dropped = error.get("dropped_before")
        if dropped:  # the history keeps the first entry and the latest ones
            click.echo(printable(f"  … {dropped} earlier entries dropped"))
        message = (str(error.get("message") or "").strip().splitlines() or [""])[0]
        click.echo(
            printable(
                f"  attempt {error.get('attempt', '?')} at {error.get('at', '?')}: "
                f"{error.get('error', '?')}: {message}"
            )
        )


class Progress:
    """The running count of a bulk operation on stderr, with the total when it is known.

    On a terminal one line is rewritten in place (``delete: 3000 of 20000 tasks (15%)``);
    piped, one plain line at most every `PIPED_EVERY` seconds, and the last count at the end.
    """

    PIPED_EVERY = 1.0

    def __init__(self, action: str, total: int | None = None) -> None:
        self.action = action
        self.total = total
        self.tty = sys.stderr.isatty()
        self.shown: int | None = None
        self.count: int | None = None
        self._last = 0.0

    def line(self, count: int) -> str:
        if self.total:
            percent = min(100, count * 100 // self.total)
            return f"{self.action}: {count} of {self.total} tasks ({percent}%)"
        return f"{self.action}: {count} tasks so far"

    def __call__(self, count: int) -> None:
        self.count = count
        now = time.monotonic()
        if not self.tty and now - self._last < self.PIPED_EVERY:
            return
        self._last = now
        self._show(count)

    def _show(self, count: int) -> None:
        line = self.line(count)
        click.echo("\r" + line if self.tty else line, err=True, nl=not self.tty)
        self.shown = count

    def done(self) -> None:
        if self.count is not None and self.shown != self.count:
            self._show(self.count)
        if self.tty and self.shown is not None:
            click.echo(err=True)
