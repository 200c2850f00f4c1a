"""The ``pgtasq`` command explains instead of crashing: global options before or after the
command, one ``error:`` line for every user mistake, and never a password in a message."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgtasq import Producer, _dsn
from tests.acceptance.test_worker_faults import _pg_ctl, own_server, wait_for  # noqa: F401
from tests.conftest import REPO, count_tasks


def pgtasq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    return subprocess.run(
        [sys.executable, "-m", "pgtasq.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def one_error_line(out: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert out.returncode == code, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_global_options_after_the_command(pg_dsn: str, fresh_schema: str) -> None:
    """``pgtasq migrate --dsn URL`` (README) and the same for nested commands; given on
    both sides, the value after the command wins."""
    out = pgtasq("migrate", "--dsn", pg_dsn, "--schema", fresh_schema)
    assert out.returncode == 0, out.stderr
    assert f"schema {fresh_schema}: at revision" in out.stdout
    Producer(pg_dsn, schema=fresh_schema).enqueue("job")
    listed = pgtasq(
        "--schema", "nosuch", "tasks", "list", "--dsn", pg_dsn, "--schema", fresh_schema
    )
    assert listed.returncode == 0, listed.stderr
    assert "(1 of 1 tasks)" in listed.stdout
    nested = pgtasq("queues", "--dsn", pg_dsn, "--schema", fresh_schema, "list", "--json")
    assert nested.returncode == 0, nested.stderr


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql+psycopg://u:s3cret@127.0.0.1:1/db",  # a SQLAlchemy URL: now accepted
        "postgresql://u:s3c%ret@127.0.0.1:1/db",  # '%' not followed by hex
        "host=127.0.0.1 port=1 user=u password=s3c ret",  # a space in a key=value password
        "postgres://u:s3cret@127.0.0.1:1/db with space",
    ],
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_no_password_in_any_message(dsn: str, where: str) -> None:
    args = ("--dsn", dsn, "stats") if where == "before" else ("stats", "--dsn", dsn)
    out = pgtasq(*args)
    assert out.returncode in (1, 2), out.stderr
    line = one_error_line(out, out.returncode)
    assert "s3c" not in out.stderr + out.stdout, line


def test_pool_log_records_carry_no_password(caplog: pytest.LogCaptureFixture) -> None:
    """Once pgtasq has seen a DSN, psycopg_pool's records that quote its password (libpq
    echoes the text it cannot parse) are logged with the password blanked."""
    _dsn.normalize("postgresql://u:hunter2x@127.0.0.1:1/db")
    with caplog.at_level(logging.WARNING, logger="psycopg.pool"):
        logging.getLogger("psycopg.pool").warning(
            "discarding broken connection: %s", 'invalid token "hunter2x" and password=other'
        )
    [record] = caplog.records
    assert "hunter2x" not in record.getMessage() and "other" not in record.getMessage()
    assert "***" in record.getMessage()


@pytest.mark.parametrize(("level", "kept"), [(logging.INFO, False), (logging.DEBUG, True)])
def test_pool_retry_lines_show_only_at_debug(
    caplog: pytest.LogCaptureFixture, level: int, kept: bool
) -> None:
    """psycopg_pool's line per failed connection attempt (every second of an outage) is
    dropped unless pgtasq logs at DEBUG; pgtasq says "database unavailable" once itself.
    Its other records still pass, with passwords blanked."""
    _dsn.normalize("postgresql://u:hunter3x@127.0.0.1:1/db")
    pgtasq_logger = logging.getLogger("pgtasq")
    before = pgtasq_logger.level
    pgtasq_logger.setLevel(level)
    try:
        with caplog.at_level(logging.DEBUG, logger="psycopg.pool"):
            pool_logger = logging.getLogger("psycopg.pool")
            pool_logger.warning("error connecting in %r: %s", "pool-1", "hunter3x refused")
            pool_logger.warning("discarding closed connection: %s", "<conn>")
    finally:
        pgtasq_logger.setLevel(before)
    messages = [record.getMessage() for record in caplog.records]
    assert ("error connecting in 'pool-1': *** refused" in messages) is kept, messages
    assert "discarding closed connection: <conn>" in messages


def test_an_invalid_dsn_is_refused_before_psycopg_sees_it() -> None:
    from pgtasq import Client, ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        Client("postgresql://u:s3c%ret@127.0.0.1:1/db")
    assert "s3c" not in str(raised.value)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("scheduler", "tests.acceptance.bad_scheduler_app:scheduler"), 1, "61 * * * *"),
        (("worker", "tests.acceptance.bad_scheduler_app:scheduler"), 1, "cron"),
        (("migrate", "--revision", "nosuch"), 1, "Can't locate revision"),
        (("migrate", "--no-such-option"), 2, "No such option"),
        (("queues", "pause", "no_such_queue"), 1, "does not exist"),
        (("tasks", "get", "not-a-number"), 2, "not a valid integer"),
    ],
)
def test_user_mistakes_are_one_error_line(
    pg_dsn: str, schema: str, args: tuple[str, ...], code: int, says: str
) -> None:
    out = pgtasq("--dsn", pg_dsn, "--schema", schema, *args)
    assert says in one_error_line(out, code)
    assert "Traceback" not in out.stderr


def test_queues_pause_creates_only_when_asked(pg_dsn: str, schema: str) -> None:
    common = ("--dsn", pg_dsn, "--schema", schema)
    one_error_line(pgtasq(*common, "queues", "pause", "fresh"))
    out = pgtasq(*common, "queues", "pause", "fresh", "--create")
    assert out.returncode == 0 and out.stdout.strip() == "queue fresh: paused", out.stderr
    assert pgtasq(*common, "queues", "resume", "fresh").returncode == 0  # it exists now
    Producer(pg_dsn, schema=schema).enqueue("job", queue="used")
    assert pgtasq(*common, "queues", "pause", "used").returncode == 0  # a task makes it exist
    assert count_tasks(pg_dsn, schema) == 1


def test_shell_completion_script() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    out = subprocess.run(
        [sys.executable, "-m", "pgtasq.cli"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**env, "_PGTASQ_COMPLETE": "bash_source"},
    )
    assert out.returncode == 0, out.stderr
    assert "_PGTASQ_COMPLETE=bash_complete" in out.stdout


@pytest.mark.slow
def test_events_waits_out_a_server_restart_with_one_line_each_way(
    own_server: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A lost connection is an outage, not the end (issue 11: events waits and works as soon
    as the server is up): one line when it goes, one when it is back, no traceback."""
    dsn = str(own_server.get_uri())
    import pgtasq as lib

    lib.migrate(dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgtasq.cli", "events", "--dsn", dsn],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
    socket_dir = own_server.get_postmaster_info().socket_dir
    log = str(own_server.log)
    down = False
    try:
        wait_for(lambda: "listening for task events" in err_path.read_text(), 30, "the LISTEN")
        _pg_ctl(own_server, "-m", "fast", "stop")
        down = True
        wait_for(lambda: "database unavailable" in err_path.read_text(), 30, "the outage line")
        assert proc.poll() is None, err_path.read_text()
        _pg_ctl(own_server, "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", log, "start")
        down = False
        wait_for(lambda: "available again" in err_path.read_text(), 60, "the reconnection")
        Producer(dsn).enqueue("job")
        wait_for(lambda: "enqueued" in out_path.read_text(), 30, "an event after the restart")
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if down:  # running again, as the fixture expects to find it
            _pg_ctl(own_server, "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", log, "start")
    err_text = err_path.read_text()
    assert "Traceback" not in err_text and "error:" not in err_text, err_text
    assert err_text.count("database unavailable") == 1, err_text
    assert err_text.count("available again") == 1, err_text


def test_bulk_progress_on_a_terminal_is_one_line_rewritten(pg_dsn: str, schema: str) -> None:
    """stderr a terminal: each batch rewrites one line (carriage return), with the total;
    one newline at the end."""
    import pty

    from pgtasq import Task

    Producer(pg_dsn, schema=schema).enqueue_many([Task("job") for _ in range(25)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    controller, terminal = pty.openpty()
    command = [sys.executable, "-m", "pgtasq.cli", "tasks", "cancel", "--all-matching"]
    command += ["--batch-size", "10", "--dsn", pg_dsn, "--schema", schema]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=terminal, text=True
    )
    os.close(terminal)
    out, _ = proc.communicate(timeout=60)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    shown = b"".join(chunks).decode().replace("\r\n", "\n")
    assert proc.returncode == 0 and out.strip() == "cancelled 25 tasks"
    assert shown == "".join(f"\rcancel: {n} of 25 tasks ({n * 4}%)" for n in (10, 20, 25)) + "\n"
