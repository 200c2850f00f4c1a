"""pgqueuer's runner: the workloads of _common.py through pgqueuer's own API (asyncpg).

The drain is one PgQueuer in drain mode, --batch jobs per dequeue and at most --concurrency
at once (0: pgqueuer's default, no limit). A finished pgqueuer job is deleted from the queue
table and leaves three rows in pgqueuer_log (queued, picked, successful), which pgqueuer
folds into per-second rows of pgqueuer_statistics: that is what --history writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
from _common import emit, latencies, parser, throughput
from pgqueuer import PgQueuer, Queries
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode

# Finished jobs as pgqueuer leaves them: their log rows, already aggregated into statistics.
HISTORY_LOG = """
INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated)
SELECT now() - ($1::int - job) * interval '10 ms', job, step, 0, 'noop', true
FROM generate_series(1, $1::int) AS job,
     unnest(ARRAY['queued', 'picked', 'successful']::pgqueuer_status[]) AS step"""
HISTORY_STATISTICS = """
INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint)
SELECT date_trunc('sec', created), count(*), priority, status, entrypoint FROM pgqueuer_log
GROUP BY date_trunc('sec', created), priority, status, entrypoint"""
TABLES = "pgqueuer, pgqueuer_log, pgqueuer_statistics, pgqueuer_schedules"


async def reinstall(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        with contextlib.suppress(asyncpg.PostgresError):  # nothing installed yet
            await queries.uninstall()
        await queries.install()
    finally:
        await conn.close()


async def enqueue1(dsn: str, n: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        began = time.perf_counter()
        for _ in range(n):
            await queries.enqueue("noop", b"{}", 0)
        return time.perf_counter() - began
    finally:
        await conn.close()


async def enqueue_many(queries: Queries, k: int) -> None:
    await queries.enqueue(["noop"] * k, [b"{}"] * k, [0] * k)


async def enqueue_batches(dsn: str, n: int, batch: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        began = time.perf_counter()
        for first in range(0, n, batch):
            await enqueue_many(queries, min(batch, n - first))
        return time.perf_counter() - began
    finally:
        await conn.close()


async def add_history(conn: asyncpg.Connection, history: int) -> int:
    await conn.execute(HISTORY_LOG, history)
    await conn.execute(HISTORY_STATISTICS)
    # The queue's ids continue after the finished jobs', as they would.
    await conn.execute("SELECT setval(pg_get_serial_sequence('pgqueuer', 'id'), $1)", history)
    await conn.execute(f"VACUUM ANALYZE {TABLES}")
    return int(await conn.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"))


async def drain(dsn: str, n: int, history: int, batch: int, concurrency: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        finished = await add_history(conn, history) if history else 0
        queries = Queries(AsyncpgDriver(conn))
        for first in range(0, n, 1000):
            await enqueue_many(queries, min(1000, n - first))
    finally:
        await conn.close()
    conn = await asyncpg.connect(dsn)
    done = 0
    try:
        pgq = PgQueuer(AsyncpgDriver(conn))

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal done
            done += 1

        began = time.perf_counter()
        await pgq.run(
            batch_size=batch,
            mode=QueueExecutionMode.drain,
            max_concurrent_tasks=concurrency or None,
        )
        seconds = time.perf_counter() - began
    finally:
        await conn.close()
    return throughput(
        "drain",
        n,
        seconds,
        done=done,
        jobs_per_s=done / seconds,
        history=finished,
        settings={"batch_size": batch, "max_concurrent_tasks": concurrency or None},
    )


async def latency(dsn: str, n: int, rate: float) -> dict[str, Any]:
    worker_conn = await asyncpg.connect(dsn)
    producer_conn = await asyncpg.connect(dsn)
    seen: list[float] = []
    try:
        pgq = PgQueuer(AsyncpgDriver(worker_conn))

        @pgq.entrypoint("lat")
        async def lat(job: Job) -> None:
            seen.append(time.perf_counter() - float((job.payload or b"0").decode()))
            if len(seen) >= n:
                pgq.shutdown.set()

        async def produce() -> None:
            queries = Queries(AsyncpgDriver(producer_conn))
            await asyncio.sleep(1.0)  # the worker is up and listening
            for _ in range(n):
                await queries.enqueue("lat", str(time.perf_counter()).encode(), 0)
                await asyncio.sleep(1.0 / rate)

        producer = asyncio.create_task(produce())
        await asyncio.wait_for(pgq.run(batch_size=10), 120)
        await producer
    finally:
        await worker_conn.close()
        await producer_conn.close()
    return latencies(rate, seen)


async def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--batch", type=int, default=10, help="jobs per dequeue in the drain")
    ap.add_argument("--concurrency", type=int, default=0, help="jobs at once (0: no limit)")
    a = ap.parse_args()
    await reinstall(a.dsn)
    if a.workload == "enqueue1":
        result = throughput("enqueue1", a.n, await enqueue1(a.dsn, a.n))
    elif a.workload == "enqueueB":
        seconds = await enqueue_batches(a.dsn, a.n, a.b)
        result = throughput("enqueueB", a.n, seconds, batch=a.b)
    elif a.workload == "drain":
        result = await drain(a.dsn, a.n, a.history, a.batch, a.concurrency)
    else:
        result = await latency(a.dsn, a.n, a.rate)
    emit(result, "pgqueuer")


if __name__ == "__main__":
    asyncio.run(main())
