"""Task data never reaches the operator's terminal raw: every ``pgtasq`` command that prints
types, queue names, payloads, error messages, worker, schedule or event fields escapes the
characters a terminal would act on (clear the screen, set the title, colour, reorder text)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from pgtasq import Producer, Task, _sql
from tests.acceptance.test_cli import pgtasq

# Clear the screen, set the window title (OSC … BEL), an 8-bit CSI colour, a right-to-left
# override, DEL, a newline and a tab.
HOSTILE = "x\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eevil\x7f\n\t.\u2028"
FORBIDDEN = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if chr(c) != "\n"]
FORBIDDEN += ["\u202e", "\u2028"]


def _assert_escaped(out: subprocess.CompletedProcess[str], *, shown: str | None) -> None:
    assert out.returncode == 0, out.stderr
    for stream in (out.stdout, out.stderr):
        raw = sorted({f"U+{ord(c):04X}" for c in stream if c in FORBIDDEN})
        assert raw == [], f"raw control characters {raw} in {stream!r}"
    if shown is not None:  # the data was printed, escaped (not left out)
        assert shown in out.stdout, out.stdout


def _strings(value: Any) -> set[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return {k for k in value} | {s for v in value.values() for s in _strings(v)}
    if isinstance(value, list):
        return {s for v in value for s in _strings(v)}
    return set()


@pytest.fixture
def hostile(pg_dsn: str, schema: str) -> int:
    """A failed task whose type, queue, payload and error are hostile, plus a worker, a
    schedule entry and daily counters named with the same text."""
    with Producer(pg_dsn, schema=schema) as producer:
        info = producer.enqueue(Task(HOSTILE, {"k": HOSTILE}, queue=HOSTILE))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {schema}.tasks SET status = 'failed', finalized_at = now(), attempts = 1, "
            "errors = jsonb_build_array(jsonb_build_object("
            "'attempt', 1, 'at', now(), 'error', %(h)s::text, 'message', %(h)s::text))",
            {"h": HOSTILE},
        )
        conn.execute(
            f"INSERT INTO {schema}.workers (id, host, pid, queues, concurrency, metadata) "
            "VALUES (%(h)s, %(h)s, 1, jsonb_build_object(%(h)s::text, 1), 1, '{}')",
            {"h": HOSTILE},
        )
        conn.execute(
            f"INSERT INTO {schema}.schedules (id, cron, timezone, task_type, payload, options) "
            "VALUES (%(h)s, %(h)s, %(h)s, %(h)s, to_jsonb(%(h)s::text), '{}')",
            {"h": HOSTILE},
        )
        conn.execute(
            f"INSERT INTO {schema}.queue_daily_stats (queue, day, completed, failed, retried) "
            "VALUES (%(h)s, (now() AT TIME ZONE 'UTC')::date, 1, 1, 1)",
            {"h": HOSTILE},
        )
    return info.id


@pytest.mark.parametrize(
    "args",
    [
        ("tasks", "list"),
        ("tasks", "list", "--json"),
        ("tasks", "get", "{id}"),
        ("tasks", "get", "{id}", "--json"),
        ("queues", "list"),
        ("queues", "list", "--json"),
        ("queues", "history"),
        ("workers",),
        ("workers", "--json"),
        ("schedules",),
        ("schedules", "--json"),
    ],
)
def test_commands_escape_task_data(
    pg_dsn: str, schema: str, hostile: int, args: tuple[str, ...]
) -> None:
    out = pgtasq("--dsn", pg_dsn, "--schema", schema, *(a.format(id=hostile) for a in args))
    if "--json" in args:
        _assert_escaped(out, shown=None)
        assert HOSTILE in _strings(json.loads(out.stdout))  # the same data, decoded
    else:
        _assert_escaped(out, shown="x\\x1b[2J\\x1b]0;pwned\\x07")


@pytest.mark.parametrize("as_json", [False, True])
def test_events_are_escaped(pg_dsn: str, schema: str, as_json: bool) -> None:
    """Anyone may NOTIFY a schema's channels: what `pgtasq events` prints is escaped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    watcher = subprocess.Popen(
        [
            *(sys.executable, "-m", "pgtasq.cli", "--dsn", pg_dsn, "--schema", schema),
            *("events", "--timeout", "2", *(["--json"] if as_json else [])),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    first = threading.Event()

    def read() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.append(line)
            first.set()

    reader = threading.Thread(target=read)
    reader.start()
    event: dict[str, Any] = {"event": HOSTILE, "count": 1, "ids": [1]}
    wake = {"count": 1, "ids": [1]}  # a wake-up: also an `enqueued` event
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        while not first.wait(0.2) and watcher.poll() is None:  # until the watcher listens
            conn.execute(
                "SELECT pg_notify(%s, %s)",
                [_sql.notify_channel(schema), json.dumps({"queues": [HOSTILE], **wake})],
            )
            conn.execute(
                "SELECT pg_notify(%s, %s)", [_sql.events_channel(schema), json.dumps(event)]
            )
    stderr = watcher.communicate(timeout=30)[1]
    reader.join(10)
    out = subprocess.CompletedProcess(watcher.args, watcher.returncode, "".join(lines), stderr)
    _assert_escaped(out, shown=None if as_json else "x\\x1b[2J")
