"""Server time of each dashboard page on a table of N tasks (default 1 000 000).

    python bench/web_pages.py --dsn DSN [-n N] [--backlog K] [--rounds R] [--keep]

Loads N tasks with one INSERT … SELECT into a schema of its own (``web_bench``, dropped
first): one every 80 ms of the last N times 80 ms, 5 queues, 20 types; 1 % failed (with an error
and a 500-character traceback), K pending (default 5 000, the newest ones), the rest
completed; 14 days of daily counters; then VACUUM ANALYZE. Each page is fetched once to
warm up, then R times (default 5) through Starlette's in-process test client: the time is
the app's and the database's, without a network or a browser. Prints the median and the
maximum per page. ``--keep`` leaves the schema for another run (``--reuse`` skips the load).
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from starlette.testclient import TestClient

import pgtasq
from pgtasq.web import create_app

SCHEMA = "web_bench"


def load(dsn: str, n: int, backlog: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    pgtasq.migrate(dsn, schema=SCHEMA)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"""
INSERT INTO {SCHEMA}.tasks (queue, type, payload, status, max_attempts, attempts, run_at,
    created_at, updated_at, attempted_at, finalized_at, errors)
SELECT 'q' || (i %% 5), 'type' || (i %% 20), jsonb_build_object('i', i, 'to', 'u' || i || '@x.org'),
    st::{SCHEMA}.task_status, 3, CASE st WHEN 'pending' THEN 0 WHEN 'failed' THEN 3 ELSE 1 END,
    ts, ts, ts, CASE WHEN st <> 'pending' THEN ts END,
    CASE WHEN st <> 'pending' THEN ts + interval '50 ms' END,
    CASE WHEN st = 'failed' THEN jsonb_build_array(jsonb_build_object('attempt', 3,
        'at', ts, 'error', 'RuntimeError', 'message', 'boom', 'traceback', repeat('x', 500)))
    ELSE '[]' END
FROM (SELECT i, now() - (%(n)s - i) * interval '80 ms' AS ts,
        CASE WHEN i > %(n)s - %(backlog)s THEN 'pending' WHEN i %% 100 = 0 THEN 'failed'
             ELSE 'completed' END AS st
      FROM generate_series(1, %(n)s) i) AS g
""",
            {"n": n, "backlog": backlog},
        )
        conn.execute(
            f"INSERT INTO {SCHEMA}.queue_daily_stats (queue, day, completed, failed, retried) "
            "SELECT 'q' || q, (now() AT TIME ZONE 'UTC')::date - d, 180000, 2000, 500 "
            "FROM generate_series(0, 4) q, generate_series(0, 13) d"
        )
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.tasks")


def pages(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:

        def one(query: str) -> int:
            row = conn.execute(query).fetchone()
            assert row is not None, query
            return int(row[0])

        failed = one(f"SELECT max(id) FROM {SCHEMA}.tasks WHERE status = 'failed'")
        pending = one(f"SELECT max(id) FROM {SCHEMA}.tasks WHERE status = 'pending'")
        middle = one(f"SELECT (max(id) + min(id)) / 2 FROM {SCHEMA}.tasks")
    return [
        "/",
        "/live/overview",
        "/queues",
        "/tasks",
        "/tasks?state=failed",
        "/tasks?state=pending&queue=q1",
        f"/tasks?after={middle},{middle}",
        "/tasks?type=type0&state=failed",
        "/tasks?type=type3&state=failed",  # matches nothing: the Client scans every row
        f"/tasks/{failed}",
        f"/tasks/{pending}",
        "/workers",
        "/schedules",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("-n", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    if not args.reuse:
        started = time.perf_counter()
        load(args.dsn, args.n, args.backlog)
        print(f"loaded {args.n} tasks in {time.perf_counter() - started:.1f} s")
    try:
        with TestClient(create_app(args.dsn, schema=SCHEMA)) as web:
            for path in pages(args.dsn):
                assert web.get(path).status_code == 200, path
                times = []
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    web.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                print(
                    f"{path:40s} median {statistics.median(times):7.1f} ms  "
                    f"max {max(times):7.1f} ms"
                )
    finally:
        if not args.keep:
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


if __name__ == "__main__":
    main()
