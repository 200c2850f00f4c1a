"""pgtasq's runner for compare.py (beside it): one workload, one JSON line on stdout.

    python bench/run.py --dsn DSN --workload enqueue1|enqueueB|drain|drainH|latency -n N
                        [-b B] [--schema S] [--processes P] [--rate R] [--metrics]
                        [--tracing]
                        [--history H] [--backlog K [--backlog-kind KIND]]
                        [--plan-cache-mode auto|generic|custom]

The workloads mirror the peers' (peers/):
  enqueue1  N tasks, one API call (one autocommit statement) each, on the producer's pool
  enqueueB  N tasks through ``enqueue_many`` in batches of B; building the Tasks is timed
  drain     a backlog of N no-op tasks, P worker processes (default 1) with default
            settings, timed from the start signal until every task is completed
  latency   an idle worker; N tasks enqueued at R/s (default 100) from the same event loop;
            time from just before the enqueue call to the handler's start (p50/p95/p99)
  drainH    the drain with --history 1000000 unless --history is given (compare.py sends
            ``--workload drain --history H``; both spellings work)
Each run drops and re-migrates its own schema, so every run starts from an empty table;
then, before anything is timed (see realtable.py):
  --history H   H finished rows (completed, failed, cancelled; 4 queues, 5 types, 7 days)
  --backlog K   K pending rows that are not part of the measured work: ready in a queue the
                worker does not serve, or due in a day in the drained queue (--backlog-kind
                queue|scheduled|mixed, default mixed: half each)
and, when either is given, VACUUM ANALYZE, so the planner has statistics as autovacuum would
have given it. The measured tasks are enqueued after that, as in the peers' runners.
--metrics turns the worker's Prometheus metrics on (drain), --tracing OpenTelemetry tracing
(drain: the enqueue and the worker, with the SDK, spans batched to an exporter that drops
them, so the cost measured is pgtasq's and the SDK's, not an exporter's network).
--plan-cache-mode generic|custom sets plan_cache_mode (force_generic_plan/force_custom_plan)
for every session the runner opens after the setup (PGOPTIONS), so both plan kinds can be
measured; auto (the default) leaves the server's setting.
The JSON line reports history, backlog, the plan cache mode, and for the drain the tasks by
status afterwards (every measured task must end completed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import sys
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

import pgtasq
from pgtasq import AsyncProducer, Consumer, Producer, Task, TaskContext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import realtable  # beside this script

WORKLOADS = ("enqueue1", "enqueueB", "drain", "drainH", "latency")
DRAINH_HISTORY_DEFAULT = 1_000_000
PLAN_CACHE_MODES = {
    "auto": "auto",
    "generic": "force_generic_plan",
    "custom": "force_custom_plan",
}


def reset_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    pgtasq.migrate(dsn, schema=schema)


def enqueue1(producer: Producer, n: int) -> float:
    producer.enqueue("noop", {})  # warm up: open the pool, plan the statement
    start = time.perf_counter()
    for _ in range(n):
        producer.enqueue("noop", {})
    return time.perf_counter() - start


def enqueue_batches(producer: Producer, n: int, batch: int) -> float:
    producer.enqueue("noop", {})  # warm up, as the floor connects before its clock starts
    start = time.perf_counter()
    for first in range(0, n, batch):
        producer.enqueue_many([Task("noop", {}) for _ in range(min(batch, n - first))])
    return time.perf_counter() - start


def _scrape_every_second(recorder: Any) -> None:
    """What a scrape costs the worker (metrics applied), far more often than Prometheus does."""
    while True:
        time.sleep(1.0)
        recorder.apply()


def _install_tracing() -> Any:
    """An OpenTelemetry SDK provider, set globally, whose spans are batched and dropped."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    return provider


def _drain_process(
    dsn: str, schema: str, start: Any, done: Any, metrics: bool = False, tracing: bool = False
) -> None:
    recorder = None
    provider = _install_tracing() if tracing else None
    if metrics:  # --metrics: the worker's Prometheus metrics on (in a registry of its own)
        from prometheus_client import CollectorRegistry

        from pgtasq.metrics import WorkerMetrics

        recorder = WorkerMetrics(CollectorRegistry())
        scrape = threading.Thread(target=_scrape_every_second, args=(recorder,), daemon=True)
        scrape.start()
    consumer = Consumer(schema=schema, metrics=recorder)  # default settings

    @consumer.task("noop")
    async def noop(ctx: TaskContext) -> None:
        return None

    start.wait()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_began = usage.ru_utime + usage.ru_stime
    counts = consumer.run(dsn, burst=True, handle_signals=False)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_began
    if provider is not None:
        provider.shutdown()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    done.put((counts.completed, rss_mb, cpu))


def drain(
    dsn: str, schema: str, n: int, processes: int, metrics: bool = False, tracing: bool = False
) -> dict[str, Any]:
    # (tracer_provider only when tracing: so this runner also drives older pgtasq versions)
    options = {"tracer_provider": _install_tracing()} if tracing else {}
    with Producer(dsn, schema=schema, **options) as producer:
        for first in range(0, n, 5000):
            producer.enqueue_many([Task("noop", {}) for _ in range(min(5000, n - first))])
    ctx = multiprocessing.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_drain_process, args=(dsn, schema, start, done, metrics, tracing))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # let every process import and build its consumer
    began = time.perf_counter()
    start.set()
    results = [done.get(timeout=600) for _ in procs]
    seconds = time.perf_counter() - began
    for proc in procs:
        proc.join()
    completed = sum(c for c, _, _ in results)
    cpu = sum(c for _, _, c in results)
    with psycopg.connect(dsn, autocommit=True) as conn:
        table_after = realtable.counts_by_status(conn, schema)
    return {
        "done": completed,
        "seconds": seconds,
        "jobs_per_s": completed / seconds,
        "settings": {
            "processes": processes,
            "defaults": True,
            "metrics": metrics,
            "tracing": tracing,
        },
        "rss_mb_max": round(max(r for _, r, _ in results), 1),
        # The workers' own CPU time (user + sys) per task: steadier than wall time on a
        # shared machine, and what an optimisation of the worker changes.
        "worker_cpu_us_per_task": round(cpu / max(completed, 1) * 1e6, 1),
        "table_after": table_after,
    }


async def latency(dsn: str, schema: str, n: int, rate: float) -> dict[str, Any]:
    consumer = Consumer(schema=schema)
    lat_ms: list[float] = []
    finished = asyncio.Event()

    @consumer.task("lat")
    async def lat(ctx: TaskContext) -> None:
        lat_ms.append((time.perf_counter() - ctx.payload) * 1000)
        if len(lat_ms) >= n:
            finished.set()

    worker = asyncio.create_task(consumer.arun(dsn))
    async with AsyncProducer(dsn, schema=schema) as producer:
        await producer.enqueue("warmup-not-handled", queue="warmup")  # open the pool
        await asyncio.sleep(1.0)  # the worker is idle and listening
        for _ in range(n):
            await producer.enqueue("lat", time.perf_counter())
            await asyncio.sleep(1.0 / rate)
        await asyncio.wait_for(finished.wait(), 60)
    consumer.stop()
    await worker
    lat_ms.sort()
    return {
        "rate": rate,
        "p50_ms": statistics.median(lat_ms),
        "p95_ms": lat_ms[int(0.95 * len(lat_ms)) - 1],
        "p99_ms": lat_ms[int(0.99 * len(lat_ms)) - 1],
        "max_ms": lat_ms[-1],
        "jobs_per_s": rate,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--workload", required=True, choices=WORKLOADS)
    ap.add_argument("-n", type=int, default=5000, help="number of tasks")
    ap.add_argument("-b", "--batch", type=int, default=1000, help="batch size for enqueueB")
    ap.add_argument("--schema", default="pgtasq_bench", help="dropped and re-created each run")
    ap.add_argument("--processes", type=int, default=1, help="worker processes for drain")
    ap.add_argument("--rate", type=float, default=100.0, help="tasks per second for latency")
    ap.add_argument("--metrics", action="store_true", help="drain with worker metrics on")
    ap.add_argument("--tracing", action="store_true", help="drain with OpenTelemetry tracing on")
    ap.add_argument(
        "--history",
        type=int,
        default=None,
        help="finished rows written (then VACUUM ANALYZE) before timing; default 0, "
        f"{DRAINH_HISTORY_DEFAULT} for drainH",
    )
    ap.add_argument(
        "--backlog", type=int, default=0, help="pending rows that are not part of the work"
    )
    ap.add_argument("--backlog-kind", choices=realtable.BACKLOG_KINDS, default="mixed")
    ap.add_argument(
        "--plan-cache-mode",
        choices=tuple(PLAN_CACHE_MODES),
        default="auto",
        help="plan_cache_mode of the timed sessions (generic: force_generic_plan, ...)",
    )
    a = ap.parse_args(argv)

    workload = "drain" if a.workload == "drainH" else a.workload
    history = a.history
    if history is None:
        history = DRAINH_HISTORY_DEFAULT if a.workload == "drainH" else 0
    result: dict[str, Any] = {"workload": workload, "n": a.n}
    if a.n < 1 or a.batch < 1 or a.processes < 1 or a.rate <= 0:
        result["error"] = "-n, -b and --processes must be >= 1, --rate > 0"
        print(json.dumps(result))
        return 2
    if history < 0 or a.backlog < 0:
        result["error"] = "--history and --backlog must be >= 0"
        print(json.dumps(result))
        return 2

    reset_schema(a.dsn, a.schema)
    setup_began = time.perf_counter()
    result.update(
        realtable.prepare(
            a.dsn, a.schema, history=history, backlog=a.backlog, backlog_kind=a.backlog_kind
        )
    )
    result["setup_s"] = round(time.perf_counter() - setup_began, 2)
    mode = PLAN_CACHE_MODES[a.plan_cache_mode]
    if a.plan_cache_mode != "auto":
        # libpq reads PGOPTIONS on every connect: the pools and the spawned workers inherit it.
        os.environ["PGOPTIONS"] = os.environ.get("PGOPTIONS", "") + f" -c plan_cache_mode={mode}"
    with psycopg.connect(a.dsn) as conn:
        shown = conn.execute("SHOW plan_cache_mode").fetchone()
    result["plan_cache_mode"] = shown[0] if shown else None
    if workload == "drain":
        result.update(drain(a.dsn, a.schema, a.n, a.processes, a.metrics, a.tracing))
        print(json.dumps(result))
        return 0
    if a.workload == "latency":
        result.update(asyncio.run(latency(a.dsn, a.schema, a.n, a.rate)))
        print(json.dumps(result))
        return 0
    with Producer(a.dsn, schema=a.schema) as producer:
        before = resource.getrusage(resource.RUSAGE_SELF)
        if a.workload == "enqueue1":
            seconds = enqueue1(producer, a.n)
        else:
            seconds = enqueue_batches(producer, a.n, a.batch)
            result["batch"] = a.batch
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    # This process's CPU per task (the warm-up call included): steadier than wall time.
    result["client_cpu_us_per_task"] = round(cpu / a.n * 1e6, 1)
    result.update(seconds=seconds, jobs_per_s=a.n / seconds)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
