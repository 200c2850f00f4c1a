"""``pgtasq tasks list`` reads what it prints: its memory does not grow with the payloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pgtasq import Producer, Task

# Runs the command given as its arguments and prints the child's peak RSS in kB (Linux):
# a process of its own, so no other child of the test run counts.
_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(done.stderr)\n"
    "print(json.dumps([done.returncode, done.stdout, "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n"
)


def _list(dsn: str, schema: str, *args: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    command = [sys.executable, "-m", "pgtasq.cli", "--dsn", dsn, "--schema", schema]
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + _PEAK_RSS, *command, "tasks", "list", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    code, stdout, peak_kb = json.loads(out.stdout)
    assert code == 0, out.stderr
    return stdout, peak_kb // 1024


def test_listing_big_tasks_stays_small(pg_dsn: str, schema: str) -> None:
    """100 tasks of 1 MB each: the table and the JSON list read previews (about 40 MB of
    RSS, as much as `pgtasq --help`); before, the table took 231 MB and --json 420 MB.
    ``--json --full`` still prints whole payloads."""
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("big", {"blob": "x" * 1_000_000}) for _ in range(100)])
    table, peak_mb = _list(pg_dsn, schema)
    assert "(100 of 100 tasks)" in table and '{"blob": "' + "x" * 29 + "…" in table
    assert peak_mb < 100, f"{peak_mb} MB"
    listed, peak_mb = _list(pg_dsn, schema, "--json")
    assert peak_mb < 100, f"{peak_mb} MB"
    tasks = json.loads(listed)
    assert len(tasks) == 100 and "payload" not in tasks[0]
    assert tasks[0]["payload_preview"] == '{"blob": "' + "x" * 190 and tasks[0]["payload_truncated"]
    full, _ = _list(pg_dsn, schema, "--json", "--full", "--limit", "2")
    assert [t["payload"] for t in json.loads(full)] == [{"blob": "x" * 1_000_000}] * 2
