"""The database collector, the worker's recorder in process, and the WSGI/ASGI apps."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pgtasq import Consumer, Producer, Task, TaskContext
from pgtasq.metrics import DatabaseCollector, WorkerMetrics, make_asgi_app, make_wsgi_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def closed_port_dsn() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=2"


def test_database_collector_on_a_known_table(pg_dsn: str, schema: str) -> None:
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many(
            [Task("a", {}, queue="q1") for _ in range(3)]
            + [Task("a", {}, queue="q1", run_at=future) for _ in range(2)]
            + [Task("b", {}, queue="q2")]
            + [Task("c", {}, queue="q3") for _ in range(4)]
        )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {schema}.tasks SET run_at = now() - interval '100 seconds' WHERE queue = 'q2'"
        )
        # two of q3's tasks running, one done: running counted, finished not per state
        conn.execute(
            f"UPDATE {schema}.tasks SET status = 'running', attempts = 1, attempted_at = now(),"
            f" locked_by = 'w', locked_until = now() + interval '1 minute'"
            f" WHERE id IN (SELECT id FROM {schema}.tasks WHERE queue = 'q3' ORDER BY id LIMIT 2)"
        )
        conn.execute(f"INSERT INTO {schema}.queues (name, paused) VALUES ('q3', true)")
        conn.execute(
            f"INSERT INTO {schema}.queue_daily_stats (queue, day, completed, failed, retried)"
            " VALUES ('q1', current_date, 7, 2, 1), ('q1', current_date - 1, 3, 0, 0)"
        )
        conn.execute(
            f"INSERT INTO {schema}.workers (id, host, pid, queues, concurrency, heartbeat_at)"
            " VALUES ('w1', 'h', 1, '{}', 8, now() - interval '5 seconds'),"
            " ('w2', 'h', 2, '{}', 4, now() - interval '500 seconds')"
        )
        conn.execute(
            f"INSERT INTO {schema}.schedules (id, cron, timezone, task_type, payload, options,"
            " last_run_at, next_run_at) VALUES ('nightly', '0 3 * * *', 'UTC', 'a', 'null',"
            " '{}', '2026-01-01T03:00:00Z', '2026-01-02T03:00:00Z')"
        )
    collector = DatabaseCollector(pg_dsn, schema=schema, cache_seconds=60)
    registry = CollectorRegistry()
    registry.register(collector)
    samples = parse(registry)

    assert value(samples, "pgtasq_up") == 1
    assert value(samples, "pgtasq_queue_tasks", queue="q1", state="ready") == 3
    assert value(samples, "pgtasq_queue_tasks", queue="q1", state="scheduled") == 2
    assert value(samples, "pgtasq_queue_tasks", queue="q1", state="running") == 0
    assert value(samples, "pgtasq_queue_tasks", queue="q3", state="running") == 2
    assert value(samples, "pgtasq_queue_tasks", queue="q3", state="ready") == 2
    assert 100 <= value(samples, "pgtasq_queue_oldest_ready_age_seconds", queue="q2") < 200
    assert value(samples, "pgtasq_queue_oldest_ready_age_seconds", queue="q1") < 60
    assert value(samples, "pgtasq_queue_paused", queue="q3") == 1
    assert value(samples, "pgtasq_queue_paused", queue="q1") == 0
    assert value(samples, "pgtasq_queue_processed_total", queue="q1", outcome="completed") == 10
    assert value(samples, "pgtasq_queue_processed_total", queue="q1", outcome="failed") == 2
    assert value(samples, "pgtasq_queue_processed_total", queue="q1", outcome="retried") == 1
    assert value(samples, "pgtasq_workers_alive") == 1
    assert value(samples, "pgtasq_workers_registered") == 2
    assert value(samples, "pgtasq_workers_concurrency") == 8
    assert 5 <= value(samples, "pgtasq_workers_heartbeat_age_seconds") < 60
    jan1 = datetime(2026, 1, 1, 3, tzinfo=timezone.utc).timestamp()
    last = "pgtasq_schedule_last_run_timestamp_seconds"
    assert value(samples, last, schedule="nightly") == jan1
    following = "pgtasq_schedule_next_run_timestamp_seconds"
    assert value(samples, following, schedule="nightly") == jan1 + 86400

    # cached: a second scrape within cache_seconds runs no query
    assert collector.queries == 1
    parse(registry)
    assert collector.queries == 1
    collector.cache_seconds = 0
    parse(registry)
    assert collector.queries == 2


def test_database_collector_caps_queue_labels(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("a", {}, queue=f"q{i}") for i in range(5)])
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(pg_dsn, schema=schema, label_values_max=3))
    samples = parse(registry)
    queues = {dict(labels)["queue"] for name, labels in samples if name == "pgtasq_queue_tasks"}
    assert queues == {"q0", "q1", "q2", "other"}
    assert value(samples, "pgtasq_queue_tasks", queue="other", state="ready") == 2


def test_database_collector_reports_down(schema: str) -> None:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(closed_port_dsn(), schema=schema))
    samples = parse(registry)
    assert samples == {("pgtasq_up", ()): 0.0}


def test_database_collector_reads_pending_through_the_index(pg_dsn: str, schema: str) -> None:
    """On a history of finished rows, the collector's statement never reads the table whole."""
    columns = "queue, type, payload, status, finalized_at, attempts, max_attempts"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema}.tasks ({columns})"
            " SELECT 'q' || (i % 5), 't', '{}', 'completed', now(), 1, 3"
            " FROM generate_series(1, 50000) i"
        )
        conn.execute(
            f"INSERT INTO {schema}.tasks (queue, type, payload, max_attempts)"
            " SELECT 'q1', 't', '{}', 3 FROM generate_series(1, 20)"
        )
        conn.execute(f"ANALYZE {schema}.tasks")
        from pgtasq import _sql

        stmt = _sql.observe_statements(schema).metrics_queue_tasks
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + stmt.text).fetchall())
        health = _sql.observe_statements(schema).queue_oldest_ready_age
        plan += "\n".join(
            r[0]
            for r in conn.execute("EXPLAIN " + health.text.replace("%(queue)s", "'q1'")).fetchall()
        )
    assert "Seq Scan" not in plan, plan
    assert "tasks_claim_idx" in plan, plan


async def test_worker_metrics_in_process(pg_dsn: str, schema: str) -> None:
    registry = CollectorRegistry()
    consumer = Consumer(
        schema=schema,
        metrics=WorkerMetrics(registry),
        concurrency=3,
        retry_delay=lambda info, exc: 0.0,
    )

    @consumer.task("ok")
    async def ok(ctx: TaskContext) -> None:
        return None

    @consumer.task("flaky")
    async def flaky(ctx: TaskContext) -> None:
        if ctx.info.attempts == 1:
            raise ValueError("first attempt fails")

    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("ok", {}) for _ in range(4)] + [Task("flaky", {})])
    counts = await consumer.arun(pg_dsn, burst=True)
    assert counts.completed == 5
    samples = parse(registry)
    finished = "pgtasq_worker_tasks_finished_total"
    assert value(samples, finished, queue="default", type="ok", outcome="completed") == 4
    assert value(samples, finished, queue="default", type="flaky", outcome="retried") == 1
    assert value(samples, finished, queue="default", type="flaky", outcome="completed") == 1
    started = "pgtasq_worker_tasks_started_total"
    assert value(samples, started, queue="default", type="flaky") == 2
    assert value(samples, "pgtasq_worker_tasks_running") == 0
    assert value(samples, "pgtasq_worker_slots_free") == 3


async def test_worker_metrics_count_a_cancelled_task(pg_dsn: str, schema: str) -> None:
    registry = CollectorRegistry()
    consumer = Consumer(
        schema=schema, metrics=WorkerMetrics(registry), heartbeat_interval=0.2, lease=2.0
    )
    started = asyncio.Event()

    @consumer.task("wait")
    async def wait(ctx: TaskContext) -> None:
        started.set()
        await asyncio.sleep(30)

    with Producer(pg_dsn, schema=schema) as producer:
        task_id = producer.enqueue(Task("wait", {})).id
    run = asyncio.create_task(consumer.arun(pg_dsn))
    await asyncio.wait_for(started.wait(), 30)
    from pgtasq import AsyncClient

    async with AsyncClient(pg_dsn, schema=schema) as client:
        await client.cancel_task(task_id)
    finished = "pgtasq_worker_tasks_finished_total"
    for _ in range(100):
        samples = parse(registry)
        if samples.get(
            (finished, (("outcome", "cancelled"), ("queue", "default"), ("type", "wait")))
        ):
            break
        await asyncio.sleep(0.1)
    consumer.stop()
    await run
    assert value(samples, finished, queue="default", type="wait", outcome="cancelled") == 1


def _call_wsgi(app: Any, path: str) -> tuple[str, bytes]:
    status: list[str] = []
    body = b"".join(
        app(
            {"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""},
            lambda s, h: status.append(s),
        )
    )
    return status[0], body


def test_wsgi_app_health_and_metrics(pg_dsn: str, schema: str) -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    status, body = _call_wsgi(make_wsgi_app(registry, dsn=pg_dsn, schema=schema), "/healthz")
    assert status.startswith("200")
    assert json.loads(body)["ok"] is True
    status, body = _call_wsgi(make_wsgi_app(registry), "/metrics")
    assert status.startswith("200")
    assert b"pgtasq_worker_tasks_running 0.0" in body
    status, body = _call_wsgi(make_wsgi_app(registry, dsn=closed_port_dsn()), "/healthz")
    assert status.startswith("503")
    assert json.loads(body)["checks"][0]["check"] == "database"
    unmigrated = make_wsgi_app(registry, dsn=pg_dsn, schema="t_never_migrated")
    status, body = _call_wsgi(unmigrated, "/healthz")
    assert status.startswith("503")
    assert json.loads(body)["checks"][-1]["check"] == "schema"


async def test_asgi_app_health_and_metrics(pg_dsn: str, schema: str) -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)

    async def call(app: Any, path: str) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = await call(make_asgi_app(registry, dsn=pg_dsn, schema=schema), "/healthz")
    assert status == 200
    assert json.loads(body)["ok"] is True
    status, body = await call(make_asgi_app(registry), "/metrics")
    assert status == 200
    assert b"pgtasq_worker_slots_free" in body
    status, _ = await call(make_asgi_app(registry, dsn=closed_port_dsn()), "/healthz")
    assert status == 503


@pytest.mark.parametrize("limit", [1, 2])
def test_worker_metrics_cap_label_values(limit: int) -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, label_values_max=limit)
    for i in range(4):
        now = datetime.now(timezone.utc)
        metrics.task_started(f"q{i}", "t", now, now)
        metrics.task_outcome(f"q{i}", "t", "completed")
    samples = parse(registry)
    queues = {
        dict(labels)["queue"]
        for name, labels in samples
        if name == "pgtasq_worker_tasks_started_total"
    }
    assert queues == {f"q{i}" for i in range(limit)} | {"other"}
    assert value(samples, "pgtasq_worker_tasks_started_total", queue="other", type="t") == 4 - limit


def test_grafana_dashboard_uses_only_our_metrics(pg_dsn: str, schema: str) -> None:
    from tests.conftest import REPO

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)  # one event of each kind: every labelled series present
    now = datetime.now(timezone.utc)
    metrics.task_started("q", "t", now, now)
    metrics.task_ended("q", "t", 0.1)
    metrics.task_outcome("q", "t", "completed")
    metrics.database_error("claim")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema}.workers (id, host, pid, queues, concurrency)"
            " VALUES ('w1', 'h', 1, '{}', 1)"
        )
        conn.execute(
            f"INSERT INTO {schema}.schedules (id, cron, timezone, task_type, payload, options,"
            " last_run_at, next_run_at) VALUES ('s', '* * * * *', 'UTC', 'a', 'null', '{}',"
            " now(), now())"
        )
        conn.execute(f"INSERT INTO {schema}.queues (name, paused) VALUES ('q', false)")
    registry.register(DatabaseCollector(pg_dsn, schema=schema))
    ours = set(parse(registry).keys())
    names = {name for name, _ in ours}
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bpgtasq_[a-z_]+", e)}
    assert len(used) >= 15
    assert used <= names, used - names
    doc = (REPO / "docs" / "observability.md").read_text()
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names if not n.endswith("_created")}
    missing = {f for f in families if f"`{f}`" not in doc}
    assert not missing, f"not documented in docs/observability.md: {missing}"


def test_worker_metrics_batches_match_plain_observations() -> None:
    """`apply` adds events up before updating the histograms: same result as one observe
    per value (bucket edges included)."""
    from prometheus_client import Histogram

    from pgtasq.metrics import DURATION_BUCKETS

    registry, plain_registry = CollectorRegistry(), CollectorRegistry()
    metrics = WorkerMetrics(registry)
    plain = Histogram(
        "pgtasq_worker_task_duration_seconds",
        "same",
        ("queue", "type"),
        buckets=DURATION_BUCKETS,
        registry=plain_registry,
    )
    values = [0.0, 0.005, 0.0051, 0.3, 1.0, 59.0, 60.0, 7200.0, 0.004]
    for v in values:
        metrics.task_ended("q", "t", v)
        plain.labels("q", "t").observe(v)
    metrics.apply()
    metrics.task_ended("q", "t", 0.5)  # a second batch adds to the first
    plain.labels("q", "t").observe(0.5)
    ours = {
        k: v for k, v in parse(registry).items() if "duration" in k[0] and "created" not in k[0]
    }
    theirs = {k: v for k, v in parse(plain_registry).items() if "created" not in k[0]}
    assert ours == theirs
