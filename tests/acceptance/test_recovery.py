"""A dead worker's tasks run again within about a lease, and the worker's timing settings are
options of ``pgtasq worker`` (and variables): real processes, SIGKILL, a real PostgreSQL.

The workers run `tests.acceptance.worker_app` with ``WORKER_APP_DEFAULTS`` set, so the
consumer keeps the library's defaults and only the command line (or environment) sets the
lease: the heartbeat and rescue intervals follow from it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.acceptance.test_worker_faults import (  # noqa: F401 - fixtures
    APP,
    Spawn,
    app_schema,
    count_status,
    enqueue,
    query,
    runs,
    runs_by_task,
    spawn,
    tasks,
    wait_for,
)
from tests.conftest import REPO

pytestmark = pytest.mark.slow

DEFAULTS = {"WORKER_APP_DEFAULTS": "1"}
# The rescue runs every min(1 s, lease / 4) (+ 25 % jitter): a task is pending again well
# within this many seconds of its lease's end, with room for a loaded machine.
RESCUED_WITHIN = 2.5


@pytest.mark.parametrize("lease", [2, 4])
def test_a_killed_workers_tasks_run_again_within_the_lease(
    pg_dsn: str,
    app_schema: str,  # noqa: F811
    spawn: Spawn,  # noqa: F811
    lease: int,
) -> None:
    """The lease by variable for one worker and by option for the other, and no other
    setting: the first is SIGKILLed holding 4 tasks; the second rescues them within about a
    second of their leases' end (main rescued every 10 s ± 25 %, and refused --lease 2)."""
    schema = app_schema
    env = {**DEFAULTS, "PGTASQ_LEASE": str(lease)}
    first = spawn(pg_dsn, schema, "--concurrency", "4", env=env)
    ids = enqueue(pg_dsn, schema, 4, sleep=60, first_attempt_only=True)
    wait_for(lambda: len(runs(pg_dsn, schema)) == 4, 15, "the first worker to start 4 runs")
    second = spawn(pg_dsn, schema, "--concurrency", "4", "--lease", str(lease), env=DEFAULTS)
    # Leases are kept at most a lease ahead: the variable was applied.
    [ahead] = query(
        pg_dsn,
        f"SELECT max(locked_until - now()) AS ahead FROM {schema}.tasks WHERE locked_by LIKE %s",
        [f"%:{first.pid}:%"],
    )
    assert ahead["ahead"].total_seconds() <= lease

    first.send(signal.SIGKILL)
    assert first.wait(5) == -signal.SIGKILL
    leases = {row["id"]: row["locked_until"] for row in tasks(pg_dsn, schema)}
    wait_for(
        lambda: count_status(pg_dsn, schema, "completed") == 4,
        lease + 3 * RESCUED_WITHIN,
        "the second worker to complete the 4 tasks",
    )
    assert runs_by_task(pg_dsn, schema) == {
        task_id: [(1, first.pid), (2, second.pid)] for task_id in ids
    }
    rescued_at = {
        row["id"]: row["at"]
        for row in query(
            pg_dsn, f"SELECT id, (errors->0->>'at')::timestamptz AS at FROM {schema}.tasks"
        )
    }
    for task_id, lease_end in leases.items():
        late = (rescued_at[task_id] - lease_end).total_seconds()
        assert 0 <= late <= RESCUED_WITHIN, (task_id, late)
    second.send(signal.SIGTERM)
    assert second.wait(15) == 0, second.log()


def test_processes_get_the_timing_options(
    pg_dsn: str,
    app_schema: str,  # noqa: F811
    spawn: Spawn,  # noqa: F811
) -> None:
    """--processes 2 hands --lease, --heartbeat-interval and --batch-size to its children."""
    schema = app_schema
    parent = spawn(
        pg_dsn,
        schema,
        "--processes",
        "2",
        "--concurrency",
        "2",
        "--batch-size",
        "1",
        "--lease",
        "1.5",
        "--heartbeat-interval",
        "0.2",
        "--rescue-interval",
        "0.3",
        "--shutdown-timeout",
        "1",
        env=DEFAULTS,
        ready=False,
    )
    enqueue(pg_dsn, schema, 4, sleep=2)
    wait_for(lambda: len(runs(pg_dsn, schema)) == 4, 20, "4 runs in 2 processes")
    rows = query(
        pg_dsn,
        f"SELECT locked_by, locked_until - now() AS ahead FROM {schema}.tasks "
        "WHERE status = 'running'",
    )
    assert rows and all(r["ahead"].total_seconds() <= 1.5 for r in rows), rows
    assert len({r["pid"] for r in runs(pg_dsn, schema)}) == 2
    parent.send(signal.SIGTERM)
    assert parent.wait(20) == 0, parent.log()
    assert "error:" not in parent.log() and "Traceback" not in parent.log(), parent.log()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--lease", "2", "--heartbeat-interval", "1"], {}, "must be under half the lease (2 s)"),
        (["--lease", "0.5"], {}, "lease must be a number of seconds >= 1, got 0.5"),
        ([], {"PGTASQ_LEASE": "nan"}, "lease must be a number of seconds >= 1, got nan"),
        (["--rescue-interval", "0"], {}, "rescue_interval must be a number of seconds > 0"),
        (["--shutdown-timeout", "-1"], {}, "shutdown_timeout must be a number of seconds >= 0"),
        (["--concurrency", "0"], {}, "concurrency must be an integer from 1 to 10000, got 0"),
        (["--batch-size", "0", "--processes", "2"], {}, "batch_size must be an integer from 1"),
    ],
)
def test_invalid_timing_options_are_one_error_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    out = subprocess.run(
        [sys.executable, "-m", "pgtasq.cli", "--dsn", "host=/nonexistent", "worker", APP, *args],
        cwd=REPO,
        env={**base, **DEFAULTS, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert message in lines[0]
