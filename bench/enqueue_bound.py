"""Where enqueue_many's time goes: the API against the same SQL without Python objects.

    python bench/enqueue_bound.py --dsn DSN [-n N] [-b B] [--rounds R] [--floor FLOOR_RUNNER]

Prints one JSON line per variant (median of R interleaved rounds), each timed over N tasks
in batches of B on one connection of a fresh schema:

  api        ``producer.enqueue_many([Task("noop", {}) for _ in range(B)])``, Tasks built
             inside the timed loop, as bench/run.py's enqueueB does
  prebuilt   the same call, the Tasks built before the clock starts
  protocol   no Task, no TaskInfo: pgtasq's own statements only (``task_insert_copy_ids``,
             then COPY of rows formatted before the clock starts, then COMMIT), which is
             the least the server and the wire need for pgtasq's table
  floor      (with --floor PATH, the raw-SQL floor's runner, bench/peers/floor_run.py)
             COPY into the floor's own narrow table, as compare.py runs it

The difference api - protocol is the Python work per task (building and validating the
Tasks, formatting the COPY rows, building the TaskInfos); protocol - floor is what the wider
table and the id round trip cost the server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

import pgtasq
from pgtasq import Producer, Task, _sql

SCHEMA = "pgtasq_bound"


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
    pgtasq.migrate(dsn, schema=SCHEMA)


def api(producer: Producer, n: int, batch: int) -> float:
    start = time.perf_counter()
    for first in range(0, n, batch):
        producer.enqueue_many([Task("noop", {}) for _ in range(min(batch, n - first))])
    return time.perf_counter() - start


def prebuilt(producer: Producer, n: int, batch: int) -> float:
    batches = [
        [Task("noop", {}) for _ in range(min(batch, n - first))] for first in range(0, n, batch)
    ]
    start = time.perf_counter()
    for tasks in batches:
        producer.enqueue_many(tasks)
    return time.perf_counter() - start


def protocol(conn: psycopg.Connection[tuple[object, ...]], n: int, batch: int) -> float:
    stmts = _sql.statements(SCHEMA)
    copy = _sql.task_insert_copy(SCHEMA, _sql.COPY_COLUMNS).text
    # Rows with a placeholder for the id, formatted before the clock starts.
    sizes = [min(batch, n - first) for first in range(0, n, batch)]
    tails = ["\tdefault\tnoop\t{}\t0\t25\n"] * batch
    cur = conn.cursor()
    start = time.perf_counter()
    for size in sizes:
        with conn.transaction():
            row = cur.execute(
                stmts.task_insert_copy_ids.text, {"count": size, "queues": ["default"]}
            ).fetchone()
            assert row is not None
            first_id = int(row[1])  # type: ignore[call-overload]
            with cur.copy(copy) as out:
                out.write("".join(f"{first_id + i}{tails[i]}" for i in range(size)))
    return time.perf_counter() - start


def floor(runner: str, dsn: str, n: int) -> float:
    out = subprocess.run(
        [sys.executable, runner, "--dsn", dsn, "--workload", "enqueueB", "-n", str(n)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["seconds"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("-b", "--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--floor", default="", help="path of the floor's runner (peers/floor_run.py)")
    a = ap.parse_args(argv)

    reset(a.dsn)
    seconds: dict[str, list[float]] = {"api": [], "prebuilt": [], "protocol": []}
    if a.floor:
        seconds["floor"] = []
    with Producer(a.dsn, schema=SCHEMA, pool_min_size=1, pool_max_size=1) as producer:
        producer.enqueue("noop", {})  # open the pool, prepare the statements
        with psycopg.connect(a.dsn, autocommit=True) as conn:
            runs: dict[str, Callable[[], float]] = {
                "api": lambda: api(producer, a.n, a.batch),
                "prebuilt": lambda: prebuilt(producer, a.n, a.batch),
                "protocol": lambda: protocol(conn, a.n, a.batch),
            }
            if a.floor:
                runs["floor"] = lambda: floor(a.floor, a.dsn, a.n)
            for _ in range(a.rounds):
                for name, run in runs.items():
                    with psycopg.connect(a.dsn, autocommit=True) as admin:
                        admin.execute(f"TRUNCATE {SCHEMA}.tasks")
                    seconds[name].append(run())
    for name, values in seconds.items():
        median = statistics.median(values)
        print(
            json.dumps(
                {
                    "variant": name,
                    "n": a.n,
                    "batch": a.batch,
                    "seconds": median,
                    "us_per_task": round(median / a.n * 1e6, 2),
                    "jobs_per_s": round(a.n / median),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
