"""Stopping ``pgtasq worker`` the way each supervisor does: real processes, real signals.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group; systemd's default
``KillMode=control-group`` sends SIGTERM to every process of the unit; ``docker stop`` and
``kill PID`` signal the main process only. Whichever way, and with one worker process or a
supervisor and its children (``--processes 2``), one signal is a graceful stop (running
tasks finish within the shutdown timeout) and a second one a fast stop (running tasks are
handed back at once). Each worker runs in a process group of its own (`spawn`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psutil
import pytest

from tests.acceptance import test_worker_faults as faults
from tests.acceptance.test_worker_faults import (
    Spawn,
    Worker,
    enqueue,
    runs,
    tasks,
    wait_for,
    worker_pids,
)

# The fault tests' fixtures: workers in process groups of their own, and a schema.
spawn = faults.spawn
app_schema = faults.app_schema

pytestmark = pytest.mark.slow

SHUTDOWN_TIMEOUT = "30"  # far longer than any wait below: a graceful stop never reaches it


def _ctrl_c(worker: Worker, sig: signal.Signals) -> None:
    os.killpg(worker.pid, signal.SIGINT)  # what a terminal does on Ctrl-C


def _control_group(worker: Worker, sig: signal.Signals) -> None:
    """systemd's KillMode=control-group: the signal to every process of the unit."""
    for process in [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(True)]:
        os.kill(process.pid, sig)


def _main_process(worker: Worker, sig: signal.Signals) -> None:
    worker.send(sig)  # docker stop (SIGTERM to pid 1), kill PID


WAYS: dict[str, tuple[Callable[[Worker, signal.Signals], None], signal.Signals]] = {
    "ctrl-c": (_ctrl_c, signal.SIGINT),
    "systemd": (_control_group, signal.SIGTERM),
    "docker-stop": (_main_process, signal.SIGTERM),
    "parent-sigint": (_main_process, signal.SIGINT),
}


def _start(pg_dsn: str, schema: str, spawn: Spawn, processes: int, **payload: object) -> Worker:
    """``processes`` worker processes running 2 tasks each (all started when this returns)."""
    total = 2 * processes
    enqueue(pg_dsn, schema, total, **payload)
    worker = spawn(
        pg_dsn,
        schema,
        "--processes",
        str(processes),
        "--concurrency",
        "2",
        env={"WORKER_APP_SHUTDOWN_TIMEOUT": SHUTDOWN_TIMEOUT},
        ready=False,
    )
    wait_for(lambda: len(runs(pg_dsn, schema)) == total, 20, f"{total} tasks to start")
    assert len(worker_pids(pg_dsn, schema)) == processes
    return worker


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("way", list(WAYS))
def test_one_signal_lets_running_tasks_finish(
    pg_dsn: str, app_schema: str, spawn: Spawn, way: str, processes: int
) -> None:
    """One signal, however sent: the running tasks (3 s) complete, nothing is handed back,
    every process exits 0 and unregisters, and no traceback is printed."""
    schema = app_schema
    worker = _start(pg_dsn, schema, spawn, processes, sleep=3.0)
    send, sig = WAYS[way]
    send(worker, sig)
    assert worker.wait(25) == 0, worker.log()
    rows = tasks(pg_dsn, schema)
    assert [row["status"] for row in rows] == ["completed"] * len(rows), worker.log()
    assert all(row["attempts"] == 1 for row in rows)
    assert worker_pids(pg_dsn, schema) == set()
    assert "Traceback" not in worker.log()


SECOND_WAYS = ["ctrl-c", "systemd", "docker-stop"]


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("way", SECOND_WAYS)
def test_a_second_signal_hands_running_tasks_back_at_once(
    pg_dsn: str, app_schema: str, spawn: Spawn, way: str, processes: int
) -> None:
    """The same signal sent the same way twice: the graceful wait (30 s) is cut short, the
    running tasks (60 s) are handed back (pending, attempt not counted) within seconds."""
    schema = app_schema
    worker = _start(pg_dsn, schema, spawn, processes, sleep=60)
    send, sig = WAYS[way]
    send(worker, sig)
    wait_for(lambda: worker.log().count("waiting up to") == processes, 10, "the graceful wait")
    time.sleep(0.5)  # a later action: the first signal has been handled everywhere
    assert worker.alive(), worker.log()
    signalled = time.monotonic()
    send(worker, sig)
    assert worker.wait(15) == 0, worker.log()
    # Not the 30 s graceful wait; a bound loose enough for a loaded machine.
    assert time.monotonic() - signalled < 10
    rows = tasks(pg_dsn, schema)
    assert [row["status"] for row in rows] == ["pending"] * len(rows)
    assert all(row["attempts"] == 0 and row["locked_by"] is None for row in rows)
    assert worker_pids(pg_dsn, schema) == set()
    assert "Traceback" not in worker.log()


@pytest.mark.parametrize("moment", ["interpreter", "app-import"])
def test_ctrl_c_while_children_start_prints_no_traceback(
    pg_dsn: str, app_schema: str, spawn: Spawn, moment: str
) -> None:
    """Ctrl-C while the children of ``--processes 2`` start: right after they are forked
    (Python is importing pgtasq), or while they import an application that takes 3 s to
    import. Every process ends quietly, without a traceback; nothing is left registered."""
    schema = app_schema
    delay = "3" if moment == "app-import" else "0"
    worker = spawn(
        pg_dsn,
        schema,
        "--processes",
        "2",
        env={"WORKER_APP_IMPORT_DELAY": delay},
        ready=False,
    )
    # The parent imports the app, then starts the children.
    wait_for(lambda: len(psutil.Process(worker.pid).children()) == 2, 20, "the children", 0.005)
    time.sleep(1.0 if moment == "app-import" else 0.15)
    os.killpg(worker.pid, signal.SIGINT)
    code = worker.wait(15)
    log = worker.log()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert "Aborted" not in log, log  # a child asked to stop while starting just exits
    assert code == 0, log
    assert worker_pids(pg_dsn, schema) == set()


def test_a_worker_that_cannot_stop_exits_at_the_teardown_deadline(
    pg_dsn: str, app_schema: str, spawn: Spawn
) -> None:
    """A handler blocks the event loop for 60 s (time.sleep in an async handler), so no
    graceful stop can happen: the process still exits, with code 1 and one ERROR line, at
    the overall deadline (shutdown timeout 2 s + the 5 s teardown margin + 1 s)."""
    schema = app_schema
    enqueue(pg_dsn, schema, 1, sleep=60, block=True)
    worker = spawn(pg_dsn, schema, "--concurrency", "1")
    wait_for(lambda: runs(pg_dsn, schema), 10, "the task to start")
    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(30) == 1, worker.log()
    took = time.monotonic() - signalled
    assert 7.5 <= took < 25, f"exited after {took:.1f} s"
    assert worker.log().count("did not finish stopping in time") == 1, worker.log()


def test_ctrl_c_while_a_single_worker_starts(pg_dsn: str, app_schema: str, spawn: Spawn) -> None:
    """One process, Ctrl-C while its application is imported: exit 130 (interrupted), no
    traceback and no "Aborted!"."""
    worker = spawn(pg_dsn, app_schema, env={"WORKER_APP_IMPORT_DELAY": "3"}, ready=False)
    time.sleep(1.5)
    os.killpg(worker.pid, signal.SIGINT)
    assert worker.wait(15) == 130, worker.log()
    assert "Traceback" not in worker.log() and "Aborted" not in worker.log(), worker.log()
    assert worker_pids(pg_dsn, app_schema) == set()
