"""The ``pgtasq`` command run as a subprocess: output and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import count_tasks


def pgtasq(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    return subprocess.run(
        [sys.executable, "-m", "pgtasq.cli", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd,
        env={**base, **(env or {})},
    )


def test_help_shows_environment_variables() -> None:
    out = pgtasq("--help")
    assert out.returncode == 0
    for var in ("PGTASQ_DSN", "PGTASQ_SCHEMA", "PGTASQ_DATA_DIR"):
        assert var in out.stdout
    assert "migrate" in out.stdout and "demo" in out.stdout


def test_migrate_sql_prints_without_a_database() -> None:
    out = pgtasq("--schema", "shop_jobs", "migrate", "--sql")
    assert out.returncode == 0, out.stderr
    assert "CREATE TABLE shop_jobs.tasks" in out.stdout
    assert out.stdout.rstrip().endswith("COMMIT;")


def test_migrate_and_downgrade(pg_dsn: str, fresh_schema: str) -> None:
    env = {"PGTASQ_DSN": pg_dsn, "PGTASQ_SCHEMA": fresh_schema}
    up = pgtasq("migrate", env=env)
    assert up.returncode == 0, up.stderr
    assert f"schema {fresh_schema}: at revision pgtasq_0005" in up.stdout
    down = pgtasq("migrate", "--downgrade", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert "base (no pgtasq tables)" in down.stdout


def test_demo_on_a_server(pg_dsn: str, fresh_schema: str) -> None:
    out = pgtasq("--dsn", pg_dsn, "--schema", fresh_schema, "demo", "--tasks", "3")
    assert out.returncode == 0, out.stderr
    assert "rolled-back task" in out.stdout and "present: no" in out.stdout
    assert "Summary: 4 of 4 tasks completed, 1 after a retry" in out.stdout
    assert count_tasks(pg_dsn, fresh_schema, status="completed") == 4
    assert count_tasks(pg_dsn, fresh_schema) == 4


def test_demo_with_embedded_postgres(tmp_path: Path) -> None:
    """No DSN: the CLI starts its own PostgreSQL with data in ./.pgtasq/."""
    first = pgtasq("demo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "embedded PostgreSQL" in first.stderr
    assert (tmp_path / ".pgtasq" / "pgdata" / "PG_VERSION").is_file()
    assert "Summary: 6 of 6 tasks completed" in first.stdout
    second = pgtasq("demo", cwd=tmp_path)  # the data persists between runs
    assert second.returncode == 0, second.stderr
    first_id = int(second.stdout.split("committed: tasks #")[1].split()[0])
    assert first_id > 6  # the first run's six tasks are still there


def test_unreachable_database_is_one_line_and_exit_1() -> None:
    out = pgtasq("--dsn", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", "migrate")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr


@pytest.mark.parametrize("schema", ["Bad-Name", "x; drop table y"])
def test_invalid_schema_is_refused(schema: str) -> None:
    out = pgtasq("--schema", schema, "migrate", "--sql")
    assert out.returncode == 1
    assert out.stderr.startswith("error: schema name must match")


def test_bad_usage_exits_2() -> None:
    out = pgtasq("migrate", "--no-such-flag")
    assert out.returncode == 2


@pytest.mark.parametrize(
    "schema",
    ["pgtasq\n", "user", "select", "int", "information_schema", "pg_catalog", "pg_temp_1"],
)
@pytest.mark.parametrize("command", [("migrate", "--sql"), ("tasks", "list"), ("worker", "x:y")])
def test_schemas_postgresql_keeps_for_itself_are_one_error_line(
    schema: str, command: tuple[str, ...]
) -> None:
    """A trailing newline, a keyword, a system schema: refused before anything runs, by every
    command (no table created in information_schema, no traceback)."""
    out = pgtasq(
        "--schema", schema, *command, env={"PGTASQ_DSN": "postgresql://nobody@127.0.0.1:1/x"}
    )
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: schema name "), out.stderr
    assert repr(schema) in lines[0] and not out.stdout


def test_a_payload_nested_past_pythons_limit_is_a_usage_error_not_a_traceback() -> None:
    deep = "[" * 5000 + "]" * 5000
    out = pgtasq(
        "enqueue", "t", "--payload", deep, env={"PGTASQ_DSN": "postgresql://x@127.0.0.1:1/x"}
    )
    assert out.returncode == 2, out.stderr
    assert "nested too deeply" in out.stderr and "Traceback" not in out.stderr
