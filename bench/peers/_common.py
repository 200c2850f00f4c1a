"""What every peer runner shares: the command line, the clock, the JSON line.

The runners run in the peers' own venv (see ../compare.py), without pgtasq, so this module
needs nothing but the standard library.

Workloads (the same definitions as ../run.py):
  enqueue1  N tasks, one API call (one transaction) each, one connection
  enqueueB  N tasks through the library's bulk API, batches of B
  drain     a backlog of N no-op tasks, one worker, timed until all are done; with
            --history H first H finished tasks as the library leaves them, then VACUUM ANALYZE
  latency   an idle worker; N tasks enqueued at R/s from the worker's own event loop; time
            from just before the enqueue call to the handler's start
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

WORKLOADS = ("enqueue1", "enqueueB", "drain", "latency")


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--workload", required=True, choices=WORKLOADS)
    ap.add_argument("-n", type=int, default=5000, help="number of tasks")
    ap.add_argument("-b", type=int, default=1000, help="batch size for enqueueB")
    ap.add_argument("--rate", type=float, default=100.0, help="tasks per second for latency")
    ap.add_argument("--history", type=int, default=0, help="finished tasks before the drain")
    return ap


def throughput(workload: str, n: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"workload": workload, "n": n, "seconds": seconds, "jobs_per_s": n / seconds, **extra}


def latencies(rate: float, seconds: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "workload": "latency",
        "n": len(ms),
        "rate": rate,
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[max(0, int(0.95 * len(ms)) - 1)],
        "p99_ms": ms[max(0, int(0.99 * len(ms)) - 1)],
        "max_ms": ms[-1],
        "jobs_per_s": rate,
    }


def emit(result: dict[str, Any], peer: str) -> None:
    print(json.dumps({**result, "peer": peer}))
    sys.stdout.flush()
