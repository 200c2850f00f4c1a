"""The generated sync modules are current: what tools/gen_sync.py makes from the async
sources today is what is committed (CI runs this with the rest of the suite)."""

from __future__ import annotations

import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "pgtasq"
GENERATED = ["_client_sync.py", "_events_sync.py", "_pool_sync.py", "_producer_sync.py"]


def test_generated_sync_modules_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_sync.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, (
        "a generated sync module is not current; run: python tools/gen_sync.py\n"
        + proc.stderr
        + proc.stdout[-4000:]
    )


@pytest.mark.parametrize("name", GENERATED)
def test_generated_modules_say_so_and_have_no_async_left(name: str) -> None:
    path = PACKAGE / name
    source = name.replace("_sync", "_async")
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == (
        f"# Generated from src/pgtasq/{source} by `python tools/gen_sync.py`: do not edit."
    )
    with path.open("rb") as f:
        names = {t.string for t in tokenize.tokenize(f.readline) if t.type == tokenize.NAME}
    assert not names & {"async", "await", "asyncio", "AsyncConn", "async_runner"}, name
