"""Every script in examples/ runs and exits 0 (each one asserts what it shows)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from pgtasq import _embedded
from tests.conftest import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.py"))


@pytest.fixture(scope="module")
def example_dsn(pg_dsn: str) -> Iterator[str]:
    """A database of their own: the examples use the default schema and tables of theirs."""
    name = "examples_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    url = urlsplit(pg_dsn)
    yield urlunsplit((url.scheme, url.netloc, "/" + name, url.query, url.fragment))
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, example_dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    env["PGTASQ_DSN"] = example_dsn
    out = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout


def _readme_python() -> str:
    """The README's Python snippets, in order, as one script (they build on each other)."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert len(blocks) >= 4
    return "\n".join(blocks) + '\nprint("OK")\n'


def _run_readme(env: dict[str, str], cwd: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", _readme_python()],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **env},
        cwd=cwd,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.rstrip().endswith("OK")


def test_readme_snippets_run_as_written(example_dsn: str) -> None:
    _run_readme({"PGTASQ_DSN": example_dsn}, REPO)


def test_readme_snippets_run_without_a_server(tmp_path: Path) -> None:
    """A fresh machine: no PGTASQ_DSN, so `pgtasq.dev_dsn()` starts the embedded server."""
    home = tmp_path / "home"
    try:
        _run_readme({"PGTASQ_HOME": str(home)}, tmp_path)
        assert _embedded.status(home).running  # dev_dsn leaves it running
    finally:
        _embedded.stop(home)
