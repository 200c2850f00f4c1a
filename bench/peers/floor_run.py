"""The raw-SQL floor: a bare SKIP LOCKED queue table and no library, for every workload.

One table (id, queue, kind, payload, state 0 ready / 1 taken / 2 done, run_at, attempts,
locked_until) and a partial index on the ready rows in claim order. The drain runs
--conns connections, each claiming --batch rows per UPDATE … FOR UPDATE SKIP LOCKED and then
deleting them in one statement: the least work a PostgreSQL queue can do per task. There is
no worker to wake, so no latency workload. History rows stay in the table, done (state 2).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from _common import emit, parser, throughput

TABLE = """
DROP TABLE IF EXISTS floor_jobs;
CREATE TABLE floor_jobs (
    id bigserial PRIMARY KEY,
    queue text NOT NULL DEFAULT 'default',
    kind text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    state smallint NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now(),
    attempts int NOT NULL DEFAULT 0,
    locked_until timestamptz
);
CREATE INDEX floor_jobs_ready ON floor_jobs (queue, run_at, id) WHERE state = 0;
"""
INSERT_ONE = "INSERT INTO floor_jobs (kind, payload) VALUES (%s, %s)"
COPY = "COPY floor_jobs (kind, payload) FROM STDIN"
CLAIM = """
UPDATE floor_jobs SET state = 1, attempts = attempts + 1, locked_until = now() + interval '30 s'
WHERE id IN (SELECT id FROM floor_jobs
             WHERE state = 0 AND queue = 'default' AND run_at <= now()
             ORDER BY run_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, kind, payload"""
FINISH = "DELETE FROM floor_jobs WHERE id = ANY(%s)"
HISTORY = """
INSERT INTO floor_jobs (kind, payload, state, run_at, attempts)
SELECT 'noop', '{}', 2, now() - (h.n - i) * interval '10 ms', 1
FROM (SELECT CAST(%(h)s AS int) AS n) AS h, generate_series(1, h.n) AS i"""


async def enqueue1(dsn: str, n: int) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        began = time.perf_counter()
        for _ in range(n):
            await conn.execute(INSERT_ONE, ("noop", "{}"))
        return time.perf_counter() - began


async def copy_rows(conn: psycopg.AsyncConnection[Any], k: int) -> None:
    async with conn.cursor() as cur, cur.copy(COPY) as copy:
        for _ in range(k):
            await copy.write_row(("noop", "{}"))


async def enqueue_batches(dsn: str, n: int, batch: int) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        began = time.perf_counter()
        for first in range(0, n, batch):
            await copy_rows(conn, min(batch, n - first))
        return time.perf_counter() - began


async def drain(dsn: str, n: int, history: int, batch: int, conns: int) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        if history:
            await conn.execute(HISTORY, {"h": history})
            await conn.execute("VACUUM ANALYZE floor_jobs")
        await copy_rows(conn, n)
    done = 0

    async def worker() -> None:
        nonlocal done
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while True:
                cur = await conn.execute(CLAIM, (batch,), prepare=True)
                rows = await cur.fetchall()
                if not rows:
                    return
                await conn.execute(FINISH, ([r[0] for r in rows],), prepare=True)
                done += len(rows)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    seconds = time.perf_counter() - began
    return throughput(
        "drain",
        n,
        seconds,
        done=done,
        jobs_per_s=done / seconds,
        history=history,
        settings={"batch": batch, "conns": conns},
    )


async def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--batch", type=int, default=100, help="rows per claim in the drain")
    ap.add_argument("--conns", type=int, default=2, help="connections draining at once")
    a = ap.parse_args()
    with psycopg.connect(a.dsn, autocommit=True) as conn:
        conn.execute(TABLE)
    if a.workload == "enqueue1":
        result = throughput("enqueue1", a.n, await enqueue1(a.dsn, a.n))
    elif a.workload == "enqueueB":
        seconds = await enqueue_batches(a.dsn, a.n, a.b)
        result = throughput("enqueueB", a.n, seconds, batch=a.b)
    elif a.workload == "drain":
        result = await drain(a.dsn, a.n, a.history, a.batch, a.conns)
    else:
        result = {"workload": a.workload, "error": "the floor has no worker to wake"}
    emit(result, "raw-sql-floor")


if __name__ == "__main__":
    asyncio.run(main())
