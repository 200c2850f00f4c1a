"""``pgtasq worker --metrics-port``, ``pgtasq metrics`` and ``pgtasq health``: real
processes on a real PostgreSQL, metrics read back with prometheus-client's text parser."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgtasq import Producer, Task
from tests.conftest import REPO, count_tasks

pytestmark = pytest.mark.slow

APP = "tests.acceptance.metrics_app:consumer"
T = TypeVar("T")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def closed_port_dsn() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2"


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> Samples:
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def pgtasq(dsn: str, schema: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgtasq.cli", "--dsn", dsn, "--schema", schema, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        **kw,  # type: ignore[call-overload]
    )


@pytest.fixture
def start_worker(pg_dsn: str, schema: str, tmp_path: Path) -> Iterator[Callable[..., int]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> int:
        port = free_port()
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        cmd = [sys.executable, "-m", "pgtasq.cli", "--dsn", pg_dsn, "--schema", schema]
        cmd += ["worker", APP, "--metrics-port", str(port), *args]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env))
        wait_for(lambda: _answers(port), 30, "the metrics endpoint")
        return port

    yield start
    codes = []
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            codes.append(proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    assert codes == [0] * len(procs)


def _answers(port: int) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/healthz")[0] in (200, 503)
    except OSError:
        return False


def enqueue(dsn: str, schema: str, ok: int, boom: int) -> None:
    with Producer(dsn, schema=schema) as producer:
        producer.enqueue_many(
            [Task("ok", {}, queue="q1") for _ in range(ok)]
            + [Task("boom", {}, queue="q2", max_attempts=1) for _ in range(boom)]
        )


def finished(dsn: str, schema: str, n: int) -> bool:
    done = count_tasks(dsn, schema, status="completed") + count_tasks(dsn, schema, status="failed")
    return done == n


# -- the worker's own metrics -----------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_worker_metrics_count_what_ran(
    pg_dsn: str, schema: str, start_worker: Callable[..., int], processes: int, tmp_path: Path
) -> None:
    port = start_worker("--processes", str(processes), "--concurrency", "4")
    # every process up: the free slots add up over the children
    wait_for(
        lambda: total(scrape(port), "pgtasq_worker_slots_free") == 4 * processes,
        30,
        f"{processes} worker processes",
    )
    enqueue(pg_dsn, schema, ok=30, boom=5)
    wait_for(lambda: finished(pg_dsn, schema, 35), 60, "35 finished tasks")

    samples = wait_for(
        lambda: (s := scrape(port)) and total(s, "pgtasq_worker_tasks_finished_total") == 35 and s,
        10,
        "35 outcomes in the metrics",
    )
    finished_total = "pgtasq_worker_tasks_finished_total"
    assert total(samples, finished_total, queue="q1", type="ok", outcome="completed") == 30
    assert total(samples, finished_total, queue="q2", type="boom", outcome="failed") == 5
    assert total(samples, finished_total, outcome="retried") == 0
    assert total(samples, "pgtasq_worker_tasks_started_total", queue="q1", type="ok") == 30
    assert total(samples, "pgtasq_worker_tasks_started_total", queue="q2", type="boom") == 5
    assert total(samples, "pgtasq_worker_task_duration_seconds_count") == 35
    assert total(samples, "pgtasq_worker_task_wait_seconds_count", queue="q1") == 30
    assert total(samples, "pgtasq_worker_claim_batch_size_sum") >= 35
    assert total(samples, "pgtasq_worker_flush_seconds_count") >= 1
    assert total(samples, "pgtasq_worker_tasks_running") == 0
    assert total(samples, "pgtasq_worker_slots_free") == 4 * processes
    assert total(samples, "pgtasq_worker_database_up") == 1
    status, body = get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200
    assert json.loads(body)["ok"] is True


def test_running_gauge_sums_live_processes(
    pg_dsn: str, schema: str, start_worker: Callable[..., int], tmp_path: Path
) -> None:
    port = start_worker("--processes", "2", "--concurrency", "3")
    wait_for(lambda: total(scrape(port), "pgtasq_worker_slots_free") == 6, 30, "2 processes")
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("slow", {"sleep": 30}) for _ in range(2)])
    wait_for(lambda: total(scrape(port), "pgtasq_worker_tasks_running") == 2, 30, "2 running tasks")
    assert total(scrape(port), "pgtasq_worker_slots_free") == 4


def test_multiprocess_folder_removed_on_exit(pg_dsn: str, schema: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [sys.executable, "-m", "pgtasq.cli", "--dsn", pg_dsn, "--schema", schema, "worker"]
    proc = subprocess.Popen(
        [*cmd, APP, "--processes", "2", "--metrics-port", str(port)], cwd=REPO, env=env
    )
    try:
        wait_for(lambda: _answers(port), 30, "the metrics endpoint")
        assert len(list(tmp_path.glob("pgtasq-metrics-*"))) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert list(tmp_path.glob("pgtasq-metrics-*")) == []


def test_worker_metrics_port_taken_is_one_error_line(
    pg_dsn: str, schema: str, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = pgtasq(pg_dsn, schema, "worker", APP, "--burst", "--metrics-port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot serve metrics on")
    assert "Traceback" not in done.stderr


# -- the exporter -----------------------------------------------------------------------------


def test_metrics_command_serves_the_database_collector(pg_dsn: str, schema: str) -> None:
    enqueue(pg_dsn, schema, ok=3, boom=0)
    port = free_port()
    cmd = [sys.executable, "-m", "pgtasq.cli", "--dsn", pg_dsn, "--schema", schema]
    proc = subprocess.Popen([*cmd, "metrics", "--port", str(port)], cwd=REPO)
    try:
        wait_for(lambda: _answers(port), 30, "the exporter")
        samples = scrape(port)
        assert total(samples, "pgtasq_up") == 1
        assert total(samples, "pgtasq_queue_tasks", queue="q1", state="ready") == 3
        assert total(samples, "pgtasq_workers_alive") == 0
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


# -- health -----------------------------------------------------------------------------------


def test_health_ok(pg_dsn: str, schema: str) -> None:
    done = pgtasq(pg_dsn, schema, "health")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: ")


def test_health_database_down_exits_3(schema: str) -> None:
    done = pgtasq(closed_port_dsn(), schema, "health", "--timeout", "2")
    assert done.returncode == 3
    assert done.stderr.strip().startswith("unhealthy: database: cannot connect")
    assert len(done.stderr.strip().splitlines()) == 1


def test_health_schema_not_migrated_exits_4(pg_dsn: str, fresh_schema: str) -> None:
    done = pgtasq(pg_dsn, fresh_schema, "health", "--json")
    assert done.returncode == 4
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert [c["check"] for c in report["checks"]] == ["database", "schema"]
    assert "not migrated" in report["checks"][-1]["detail"]


def test_health_schema_behind_head_exits_4(pg_dsn: str, migrated_schema: str) -> None:
    schema = migrated_schema
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.alembic_version SET version_num = 'pgtasq_0001'")
    done = pgtasq(pg_dsn, schema, "health")
    assert done.returncode == 4
    assert "at revision pgtasq_0001" in done.stderr


def test_health_worker_alive(pg_dsn: str, schema: str) -> None:
    done = pgtasq(pg_dsn, schema, "health", "--worker-alive", "30")
    assert done.returncode == 5
    assert "unhealthy: worker: no worker registered" in done.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema}.workers (id, host, pid, queues, concurrency, heartbeat_at)"
            " VALUES ('w1', 'h', 1, '{}', 1, now() - interval '100 seconds')"
        )
    assert pgtasq(pg_dsn, schema, "health", "--worker-alive", "30").returncode == 5
    assert pgtasq(pg_dsn, schema, "health", "--worker-alive", "300").returncode == 0


def test_health_old_pending_task_exits_6(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue(Task("ok", {}, queue="q1"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.tasks SET run_at = now() - interval '120 seconds'")
    args = ("health", "--queue", "q1", "--max-pending-age")
    done = pgtasq(pg_dsn, schema, *args, "60")
    assert done.returncode == 6
    assert "unhealthy: queue: queue q1: oldest ready task waited 12" in done.stderr
    assert pgtasq(pg_dsn, schema, *args, "600").returncode == 0
    empty = pgtasq(pg_dsn, schema, "health", "--queue", "empty", "--max-pending-age", "1")
    assert empty.returncode == 0


def test_health_queue_needs_max_age(pg_dsn: str, schema: str) -> None:
    done = pgtasq(pg_dsn, schema, "health", "--queue", "q1")
    assert done.returncode == 2
    assert "--queue and --max-pending-age go together" in done.stderr


def test_health_refuses_a_queue_name_postgresql_cannot_hold(pg_dsn: str, schema: str) -> None:
    done = pgtasq(pg_dsn, schema, "health", "--queue", "a\udc80b", "--max-pending-age", "1")
    assert done.returncode == 2
    assert "--queue is not valid UTF-8" in done.stderr
    assert "Traceback" not in done.stderr
