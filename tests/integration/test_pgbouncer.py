"""pgtasq through a real PgBouncer in transaction mode (the Debian package, 1.18: no
prepared-statement support), started by these tests in front of the test server.

The bouncer has 2 server connections for many clients, so every client's transactions run
on connections other clients used before: session state would leak, and a statement
prepared on one server connection would be missing on the next.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgtasq import (
    AsyncClient,
    AsyncProducer,
    Client,
    Consumer,
    Producer,
    Scheduler,
    Task,
    TaskContext,
    TaskFilter,
    _sql,
)
from tests.conftest import REPO, count_tasks

POOL_SIZE = 2


def _pgbouncer() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def bouncer(pg_dsn: str) -> Iterator[str]:
    """A DSN through a PgBouncer in transaction mode with POOL_SIZE server connections."""
    binary = _pgbouncer()
    upstream = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    host = str(upstream.get("host") or "/tmp")
    user = str(upstream.get("user") or "postgres")
    target = " ".join(
        f"{k}={v}"
        for k, v in {
            "host": host,  # a directory: the server's Unix socket (the embedded server)
            "port": upstream.get("port") or 5432,
            "dbname": upstream.get("dbname") or "postgres",
            "user": user,
        }.items()
    )
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="pgtasq-bouncer-"))
    folder.chmod(0o755)
    (folder / "userlist.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
bounced = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "userlist.txt"}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
"""
    )
    for name in ("userlist.txt", "pgbouncer.ini"):
        (folder / name).chmod(0o644)
    command = [binary]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root: run as the socket's owner
        command += ["-u", _run_as(host)]
    log_file = (folder / "pgbouncer.log").open("w")
    proc = subprocess.Popen(
        [*command, str(folder / "pgbouncer.ini")], stdout=log_file, stderr=subprocess.STDOUT
    )
    dsn = f"postgresql://{user}@127.0.0.1:{port}/bounced"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(dsn, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "pgbouncer did not start:\n" + (folder / "pgbouncer.log").read_text()
                    ) from None
                time.sleep(0.1)
        yield dsn
    finally:
        proc.terminate()
        proc.wait(10)
        log_file.close()
        shutil.rmtree(folder, ignore_errors=True)


def _run_as(host: str) -> str:
    """A user that can reach the server: the owner of its socket directory (the embedded
    server's data directory is private to the user that runs it), else postgres or nobody."""
    if host.startswith("/"):
        owner = pwd.getpwuid(Path(host).stat().st_uid).pw_name
        if owner != "root":
            return owner
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    pytest.skip("no unprivileged user to run pgbouncer as")


def _settings_of_every_server_connection(dsn: str) -> list[str]:
    """``synchronous_commit`` as each of the bouncer's server connections has it: as many
    clients as it has connections, each in an open transaction, so each holds one."""
    conns = [psycopg.connect(dsn, prepare_threshold=None) for _ in range(POOL_SIZE)]
    try:
        seen = []
        for conn in conns:  # BEGIN …: the transaction keeps its server connection
            row = conn.execute("SHOW synchronous_commit").fetchone()
            assert row is not None
            seen.append(str(row[0]))
        pids = {c.execute("SELECT pg_backend_pid()").fetchone() for c in conns}
        assert len(pids) == POOL_SIZE  # every server connection was looked at
        return seen
    finally:
        for conn in conns:
            conn.close()


def _consumer(schema: str, **options: Any) -> Consumer:
    settings: dict[str, Any] = {
        "prepare": False,
        "batch_size": 5,
        "concurrency": 4,
        "poll_interval": 0.2,
        "retry_delay": lambda info, exc: 0.0,
    }
    consumer = Consumer(schema=schema, **{**settings, **options})

    @consumer.task("ok")
    def ok(ctx: TaskContext) -> int:
        return int(ctx.payload or 0)

    @consumer.task("flaky")
    def flaky(ctx: TaskContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")

    return consumer


def test_worker_settings_never_reach_other_clients(pg_dsn: str, schema: str, bouncer: str) -> None:
    """The worker's bookkeeping runs with synchronous_commit off: scoped to each of its
    transactions, so the application's own transactions through the same bouncer keep the
    server's durability."""
    with Producer(bouncer, schema=schema, prepare=False) as producer:
        producer.enqueue_many([Task("ok", i) for i in range(150)] + [Task("flaky")] * 20)
    counts = _consumer(schema).run(bouncer, burst=True)
    assert (counts.completed, counts.retried) == (170, 20)
    assert count_tasks(pg_dsn, schema, status="completed") == 170
    assert _settings_of_every_server_connection(bouncer) == ["on"] * POOL_SIZE


def test_producer_client_scheduler_and_worker_through_the_bouncer(
    pg_dsn: str, schema: str, bouncer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Many clients on 2 server connections, every statement run many times (psycopg would
    prepare it), and LISTEN, which does not work here: the worker notices, says so once and
    polls."""
    errors: list[BaseException] = []

    def produce(n: int) -> None:
        try:
            with Producer(bouncer, schema=schema, prepare=False, pool_max_size=2) as producer:
                for i in range(15):
                    producer.enqueue("ok", i, queue="many")
                producer.enqueue_many([Task("ok", queue="many")] * 30)  # COPY
                producer.enqueue_many([Task("ok", idempotency_key=f"{n}-{i}") for i in range(5)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert count_tasks(pg_dsn, schema) == 12 * 50

    tick = datetime(2026, 1, 1, tzinfo=timezone.utc)
    scheduler = Scheduler(bouncer, schema=schema, prepare=False)
    scheduler.register("* * * * *", Task("ok", 7), name="every-minute")
    for minute in range(8):  # the first takes the entry up, each next one enqueues a tick
        scheduler.run_once(tick + timedelta(minutes=minute, seconds=1))
    scheduler.close()
    assert count_tasks(pg_dsn, schema, type="ok", queue="default") == 12 * 5 + 7

    with Client(bouncer, schema=schema, prepare=False) as client:
        page = client.list_tasks(TaskFilter().queues("many").limit(10))
        assert page.total == 12 * 45
        for info in page.tasks[:6]:
            client.cancel_task(info.id)
        assert client.retry_tasks(TaskFilter().statuses("cancelled"), batch_size=1) == 6
        assert client.cancel_tasks(TaskFilter().queues("many"), batch_size=7) == 12 * 45
        assert client.delete_tasks(TaskFilter().queues("many"), batch_size=7) == 12 * 45
        assert sum(q.pending for q in client.list_queues()) == 12 * 5 + 7

    consumer = _consumer(schema, poll_interval=0.3)
    with caplog.at_level(logging.WARNING, logger="pgtasq.consumer"):
        consumer.start(bouncer)
        try:
            _wait(lambda: count_tasks(pg_dsn, schema, status="completed") == 12 * 5 + 7)
            with Producer(bouncer, schema=schema, prepare=False) as producer:
                late = producer.enqueue("ok", 1)
            _wait(lambda: count_tasks(pg_dsn, schema, id=late.id, status="completed") == 1)
            _wait(lambda: any("LISTEN gets no notif" in r.message for r in caplog.records))
        finally:
            consumer.stop(timeout=30)
    fallback = [r for r in caplog.records if "LISTEN gets no notif" in r.getMessage()]
    assert len(fallback) == 1 and "--listen-dsn" in fallback[0].getMessage()
    assert _settings_of_every_server_connection(bouncer) == ["on"] * POOL_SIZE


def test_listen_dsn_wakes_the_worker_at_once(pg_dsn: str, schema: str, bouncer: str) -> None:
    """Everything through the bouncer but LISTEN, on a direct connection: a new task starts
    long before the next poll."""
    started: list[float] = []
    consumer = _consumer(schema, poll_interval=30.0, listen_dsn=pg_dsn)

    @consumer.task("timed")
    def timed(ctx: TaskContext) -> None:
        started.append(time.monotonic())

    consumer.start(bouncer)
    try:
        _wait(lambda: _listening(pg_dsn, schema))
        with Producer(bouncer, schema=schema, prepare=False) as producer:
            sent = time.monotonic()
            producer.enqueue("timed")
        _wait(lambda: bool(started), timeout=10)
    finally:
        consumer.stop(timeout=30)
    assert started[0] - sent < 10  # the poll would take 30 s


def _listening(dsn: str, schema: str) -> bool:
    """Whether a direct connection has run the worker's LISTEN (and its probe came back)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
            (_sql.statements(schema).listen.text,),
        ).fetchone()
    assert row is not None
    return int(row[0]) > 0


def _wait(check: object, timeout: float = 20.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


# The worker the CLI tests run: polls every 30 s, so a quick start proves a wake-up.
cli_consumer = Consumer(poll_interval=30.0)


@cli_consumer.task("ok")
def _cli_ok(ctx: TaskContext) -> None: ...


def _cli(
    bouncer: str, schema: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}, **(env or {})}
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "pgtasq.cli", "--dsn", bouncer, "--schema", schema),
            *("worker", "tests.integration.test_pgbouncer:cli_consumer", *args),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_worker_through_the_bouncer(pg_dsn: str, schema: str, bouncer: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("ok")] * 100)
    burst = _cli(bouncer, schema, "--burst", env={"PGTASQ_PREPARE": "false"})
    out, err = burst.communicate(timeout=60)
    assert burst.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["completed"] == 100

    worker = _cli(bouncer, schema, "--no-prepare", "--listen-dsn", pg_dsn)
    try:
        _wait(lambda: _listening(pg_dsn, schema))
        with Producer(bouncer, schema=schema, prepare=False) as producer:
            late = producer.enqueue("ok")
        _wait(lambda: count_tasks(pg_dsn, schema, id=late.id, status="completed") == 1, 10)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "LISTEN gets no notif" not in err


async def test_async_producer_and_client_through_the_bouncer(
    pg_dsn: str, schema: str, bouncer: str
) -> None:
    async def produce(n: int) -> None:
        async with AsyncProducer(bouncer, schema=schema, prepare=False) as producer:
            for i in range(10):
                await producer.enqueue("ok", i, queue=f"a{n}")
            await producer.enqueue_many([Task("ok", queue=f"a{n}")] * 10)

    await asyncio.gather(*(produce(n) for n in range(8)))
    async with AsyncClient(bouncer, schema=schema, prepare=False) as client:
        for n in range(8):
            page = await client.list_tasks(TaskFilter().queues(f"a{n}"))
            assert page.total == 20
            assert await client.cancel_tasks(TaskFilter().queues(f"a{n}"), batch_size=3) == 20
    assert count_tasks(pg_dsn, schema, status="cancelled") == 160
