"""procrastinate's runner: the workloads of _common.py through procrastinate's API (psycopg).

The drain is one worker, run_worker_async(wait=False), --concurrency jobs at once. A finished
procrastinate job stays in procrastinate_jobs as 'succeeded', and its status changes left
three rows in procrastinate_events (deferred, started, succeeded): that is what --history
writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import procrastinate
import psycopg
from _common import emit, latencies, parser, throughput

HISTORY = """
WITH finished AS (
    INSERT INTO procrastinate_jobs (queue_name, task_name, status, attempts)
    SELECT 'default', 'noop', 'succeeded', 1 FROM generate_series(1, CAST(%(h)s AS int))
    RETURNING id
)
INSERT INTO procrastinate_events (job_id, type, at)
SELECT id, step, now() - (CAST(%(h)s AS int) - id) * interval '10 ms'
FROM finished,
     unnest(ARRAY['deferred', 'started', 'succeeded']::procrastinate_job_event_type[]) AS step"""
TABLES = (
    "procrastinate_jobs, procrastinate_events, procrastinate_workers, procrastinate_periodic_defers"
)


def make_app(dsn: str) -> procrastinate.App:
    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))


async def reinstall(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("DROP SCHEMA public CASCADE")
        await conn.execute("CREATE SCHEMA public")
    app = make_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def add_history(dsn: str, history: int) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(HISTORY, {"h": history})
        await conn.execute(f"VACUUM ANALYZE {TABLES}")
        cur = await conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = parser(__doc__)
    ap.add_argument("--concurrency", type=int, default=100, help="jobs at once in the drain")
    a = ap.parse_args()
    await reinstall(a.dsn)
    app = make_app(a.dsn)
    done = 0
    seen: list[float] = []
    all_seen = asyncio.Event()

    @app.task(name="noop")
    async def noop() -> None:
        nonlocal done
        done += 1

    @app.task(name="lat")
    async def lat(began: float) -> None:
        seen.append(time.perf_counter() - began)
        if len(seen) >= a.n:
            all_seen.set()

    result: dict[str, Any]
    async with app.open_async():
        if a.workload == "enqueue1":
            began = time.perf_counter()
            for _ in range(a.n):
                await noop.defer_async()
            result = throughput("enqueue1", a.n, time.perf_counter() - began)
        elif a.workload == "enqueueB":
            began = time.perf_counter()
            for first in range(0, a.n, a.b):
                await noop.batch_defer_async(*([{}] * min(a.b, a.n - first)))
            result = throughput("enqueueB", a.n, time.perf_counter() - began, batch=a.b)
        elif a.workload == "drain":
            finished = await add_history(a.dsn, a.history) if a.history else 0
            for first in range(0, a.n, 1000):
                await noop.batch_defer_async(*([{}] * min(1000, a.n - first)))
            began = time.perf_counter()
            await app.run_worker_async(
                concurrency=a.concurrency, wait=False, install_signal_handlers=False
            )
            seconds = time.perf_counter() - began
            result = throughput(
                "drain",
                a.n,
                seconds,
                done=done,
                jobs_per_s=done / seconds,
                history=finished,
                settings={"concurrency": a.concurrency},
            )
        else:
            worker = asyncio.create_task(
                app.run_worker_async(concurrency=10, install_signal_handlers=False)
            )
            await asyncio.sleep(1.0)  # the worker is up and listening
            for _ in range(a.n):
                await lat.defer_async(began=time.perf_counter())
                await asyncio.sleep(1.0 / a.rate)
            await asyncio.wait_for(all_seen.wait(), 60)
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            result = latencies(a.rate, seen)
    emit(result, "procrastinate")


if __name__ == "__main__":
    asyncio.run(main())
