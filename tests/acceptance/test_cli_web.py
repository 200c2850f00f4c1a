"""``pgtasq web`` as a subprocess: it serves the dashboard, guards it, stops on SIGTERM,
and says what is wrong in one ``error:`` line that never shows a password."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import REPO

pytest.importorskip("uvicorn", reason="the web extra is not installed")


def command(dsn: str, schema: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "pgtasq.cli", "--dsn", dsn, "--schema", schema, "web", *args]


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_web_serves_the_dashboard_behind_basic_auth_until_sigterm(pg_dsn: str, schema: str) -> None:
    env = {**os.environ, "PGTASQ_WEB_USER": "ops", "PGTASQ_WEB_PASSWORD": "pw-from-env"}
    proc = subprocess.Popen(
        command(pg_dsn, schema, "--port", "0"),
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # printed once the socket is bound
        assert line.startswith("serving the pgtasq dashboard on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].strip()
        assert get(url)[0] == 401
        status, page = get(url + "tasks", auth=("ops", "pw-from-env"))
        assert status == 200 and "<h1>Tasks</h1>" in page
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        rest = proc.stderr.read() if proc.stderr else ""
        if proc.stderr is not None:
            proc.stderr.close()
    assert code == 0, rest
    assert "pw-from-env" not in line + rest


def test_every_option_has_an_environment_variable_shown_in_help() -> None:
    import click

    from pgtasq._cli_web import web

    options = [p for p in web.params if isinstance(p, click.Option) and p.name != "help"]
    assert {o.name for o in options} >= {"host", "port", "read_only", "basic_auth"}
    for option in options:
        assert isinstance(option.envvar, str) and option.envvar.startswith("PGTASQ_WEB_")
        assert option.show_envvar, option.name


def test_a_malformed_basic_auth_is_a_usage_error(pg_dsn: str, schema: str) -> None:
    done = subprocess.run(
        command(pg_dsn, schema, "--basic-auth", "onlyauser"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "onlyauser" not in done.stderr


def test_a_schema_not_migrated_is_one_error_line_and_exit_78(
    pg_dsn: str, fresh_schema: str
) -> None:
    done = subprocess.run(
        command(pg_dsn, fresh_schema, "--basic-auth", "ops:topsecret"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "topsecret" not in done.stderr


def test_a_port_already_taken_is_one_error_line(pg_dsn: str, schema: str) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            command(pg_dsn, schema, "--port", str(port)),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot serve on 127.0.0.1:{port}")
