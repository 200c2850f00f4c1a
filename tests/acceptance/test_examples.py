"""Every script in examples/ runs and exits 0 (each one asserts what it shows)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

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
