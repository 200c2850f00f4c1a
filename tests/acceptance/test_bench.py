"""The benchmark scripts in bench/ run and keep their JSON-line contract (tiny sizes: these
check what the scripts do, never how fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from tests.conftest import REPO

BENCH = REPO / "bench"


def bench(script: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_run_help_offers_history_for_the_comparison() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for option in ("--history", "--backlog", "--plan-cache-mode", "drainH"):
        assert option in out.stdout


@pytest.mark.slow
def test_drain_on_a_table_with_history_and_backlog(pg_dsn: str, fresh_schema: str) -> None:
    result = bench(
        "run.py",
        *("--dsn", pg_dsn, "--schema", fresh_schema, "--workload", "drain", "-n", "300"),
        *("--history", "2000", "--backlog", "100", "--plan-cache-mode", "generic"),
    )
    assert (result["workload"], result["history"], result["backlog"]) == ("drain", 2000, 100)
    assert result["plan_cache_mode"] == "force_generic_plan"
    before, after = result["table_before"], result["table_after"]
    assert sum(before.values()) == 2100 and before["pending"] == 100
    assert before["completed"] > before["failed"] > before["cancelled"] > 0
    assert result["done"] == 300
    assert after["completed"] == before["completed"] + 300  # every measured task completed
    assert after["failed"] == before["failed"] and after["pending"] == 100  # backlog untouched
    with psycopg.connect(pg_dsn) as c:
        queues = c.execute(
            f"SELECT count(DISTINCT queue), count(DISTINCT type), "
            f"max(created_at) - min(created_at) > interval '6 days' "
            f"FROM {fresh_schema}.tasks WHERE status <> 'pending'"
        ).fetchone()
        analyzed = c.execute(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relid = %s::regclass",
            (f"{fresh_schema}.tasks",),
        ).fetchone()
    assert queues == (4, 5, True)
    assert analyzed == (True,)


def test_drainh_defaults_to_a_million_rows_of_history() -> None:
    """Checked without running it: the argument parsing alone."""
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))
    assert run.DRAINH_HISTORY_DEFAULT == 1_000_000
    assert "drainH" in run.WORKLOADS


@pytest.mark.slow
def test_churn_reports_dead_rows_and_the_claim(pg_dsn: str, fresh_schema: str) -> None:
    result = bench(
        "churn.py",
        *("--dsn", pg_dsn, "--schema", fresh_schema, "-n", "300", "--history", "1000"),
        *("--vacuum", "--server-defaults"),
    )
    stages = {s["stage"].split(" (")[0]: s for s in result["stages"]}
    assert list(stages) == ["before", "after drain", "after VACUUM"]
    assert [d["done"] for d in result["drains"]] == [300]
    assert stages["before"]["probe"]["rows"] == 100  # the claim's search found a batch
    assert stages["after drain"]["n_tup_upd"] >= 600  # a claim and an outcome per task
    assert stages["after drain"]["probe"]["rows"] == 0
    assert stages["after VACUUM"]["n_dead_tup"] == 0
    assert result["server"]["reloptions"] is None  # --server-defaults took pgtasq_0002's away
