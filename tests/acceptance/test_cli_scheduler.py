"""`pgtasq scheduler`, `pgtasq worker --scheduler` and `pgtasq schedules` as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg

from tests.conftest import REPO


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}


def _cli(pg_dsn: str, schema: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "pgtasq.cli", "--dsn", pg_dsn, "--schema", schema, *args]


def _ticks(dsn: str, schema: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            f"SELECT idempotency_key, status::text FROM {schema}.tasks ORDER BY id"
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_two_schedulers_and_a_worker(pg_dsn: str, schema: str) -> None:
    """Two `pgtasq scheduler` processes: one task per second-tick; a worker with
    --scheduler runs them; `pgtasq schedules` shows the entry and its tasks."""
    procs = [
        subprocess.Popen(
            _cli(pg_dsn, schema, "scheduler", "tests.acceptance.scheduler_app:scheduler"),
            cwd=REPO,
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    worker = subprocess.Popen(
        _cli(
            pg_dsn,
            schema,
            "worker",
            "tests.acceptance.scheduler_app:consumer",
            "--scheduler",
            "tests.acceptance.scheduler_app:scheduler",
        ),
        cwd=REPO,
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(4.5)
    finally:
        for p in [*procs, worker]:
            p.send_signal(signal.SIGTERM)
        logs = [p.communicate(timeout=20)[1] for p in [*procs, worker]]
    assert [p.returncode for p in [*procs, worker]] == [0, 0, 0], logs
    ticks = _ticks(pg_dsn, schema)
    keys = [k for k, _ in ticks]
    assert len(keys) >= 3 and len(keys) == len(set(keys))  # one task per tick, three schedulers
    assert all(k.startswith("pgtasq:schedule:12:every-second:") for k in keys)
    assert any(status == "completed" for _, status in ticks)
    out = subprocess.run(
        _cli(pg_dsn, schema, "schedules", "--json"),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(out.stdout)
    assert entry["id"] == "every-second" and entry["cron"] == "* * * * * *"
    assert entry["last_run_at"] and entry["next_run_at"] and len(entry["task_ids"]) == len(keys)
    human = subprocess.run(
        _cli(pg_dsn, schema, "schedules"), cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert "every-second" in human.stdout


def test_scheduler_app_must_be_a_scheduler(pg_dsn: str, schema: str) -> None:
    out = subprocess.run(
        _cli(pg_dsn, schema, "scheduler", "tests.acceptance.scheduler_app:consumer"),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "is not a pgtasq Scheduler" in out.stderr
