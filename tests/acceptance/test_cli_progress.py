"""``pgtasq tasks get`` and ``pgtasq tasks list`` show a running task's progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from pgtasq import Producer, Task, _sql


def _cli(dsn: str, schema: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    command = [sys.executable, "-m", "pgtasq.cli", "--dsn", dsn, "--schema", schema, *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _report(dsn: str, schema: str, task_id: int, progress: str) -> None:
    """What a worker's progress writer does for a task it holds (`task_progress_many`)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            f"UPDATE {schema}.tasks SET status = 'running', attempts = 1, attempted_at = now(), "
            "locked_by = 'w', locked_until = now() + interval '1 h' WHERE id = %s "
            "RETURNING attempted_at",
            [task_id],
        ).fetchone()
        assert row is not None
        params = {"worker": "w", "id": [task_id], "claimed_at": [row[0]], "progress": [progress]}
        c.execute(_sql.statements(schema).task_progress_many.text, params)


def test_get_and_list_show_progress(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        fraction, counted, silent = (
            i.id for i in producer.enqueue_many([Task("a"), Task("b"), Task("c")])
        )
    _report(pg_dsn, schema, fraction, '{"value":0.25,"note":"page 1\\u001b[31m of 4"}')
    _report(pg_dsn, schema, counted, '{"value":{"done":3,"total":10},"note":null}')

    got = _cli(pg_dsn, schema, "tasks", "get", str(fraction))
    (line,) = [line for line in got.splitlines() if line.startswith("progress:")]
    assert "25% page 1\\x1b[31m of 4 (at 20" in line  # escaped, with when it was written
    assert "progress:        -" in _cli(pg_dsn, schema, "tasks", "get", str(silent))

    listed = _cli(pg_dsn, schema, "tasks", "list").splitlines()
    header = listed[0].split()
    assert header[header.index("ATTEMPTS") + 1] == "PROGRESS"
    rows = {line.split()[0]: line for line in listed[1:] if line.strip()}
    assert " 25% page 1" in rows[str(fraction)]
    assert '{"done":3,"total":10}' in rows[str(counted)]

    data = json.loads(_cli(pg_dsn, schema, "tasks", "get", str(counted), "--json"))
    assert data["progress"]["value"] == {"done": 3, "total": 10}
    assert data["progress"]["note"] is None and data["progress"]["updated_at"].startswith("20")
    assert (
        json.loads(_cli(pg_dsn, schema, "tasks", "get", str(silent), "--json"))["progress"] is None
    )
