"""One trace from the enqueue to the handler, across processes: a producer here, a worker in
a process of its own, each with the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pgtasq import Producer, Task
from tests.conftest import REPO

# A worker with tracing on (the global provider, as an application sets it), which prints
# the spans it made as JSON lines once its burst is over.
WORKER = """
import json, sys
import psycopg
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pgtasq import Consumer, RetryIn

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
consumer = Consumer(schema=sys.argv[2], poll_interval=0.2, retry_delay=lambda task, exc: 0.0)

@consumer.task("ok")
async def ok(ctx):
    with trace.get_tracer("app").start_as_current_span("inside the handler"):
        return "done"

@consumer.task("sync_ok")
def sync_ok(ctx):
    with trace.get_tracer("app").start_as_current_span("inside the sync handler"):
        return None

@consumer.task("boom")
async def boom(ctx):
    raise ValueError("boom " + str(ctx.info.attempts))

@consumer.task("complete_here")
def complete_here(ctx):
    with psycopg.connect(sys.argv[1]) as conn:
        ctx.complete(conn, "mine")

consumer.run(sys.argv[1], burst=True, handle_signals=False)
for s in exporter.get_finished_spans():
    print(json.dumps({
        "name": s.name,
        "kind": s.kind.name,
        "trace": f"{s.context.trace_id:032x}",
        "span": f"{s.context.span_id:016x}",
        "parent": f"{s.parent.span_id:016x}" if s.parent else None,
        "attributes": dict(s.attributes or {}),
        "status": s.status.status_code.name,
        "events": [e.name for e in s.events],
    }))
"""


def test_one_trace_from_the_enqueue_to_the_handler(pg_dsn: str, schema: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with Producer(pg_dsn, schema=schema, tracer_provider=provider) as producer:
        ok = producer.enqueue("ok", queue="default")
        bulk = producer.enqueue_many(
            [Task("sync_ok"), Task("boom", max_attempts=2), Task("complete_here")]
        )
    untraced = Producer(pg_dsn, schema=schema).enqueue("ok")  # no provider: no context
    sent = {s.get_span_context().span_id: s for s in exporter.get_finished_spans()}
    assert len(sent) == 2 and all(s.kind is SpanKind.PRODUCER for s in sent.values())
    trace_ids = {f"{s.context.trace_id:032x}" for s in sent.values()}

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    out = subprocess.run(
        [sys.executable, "-c", WORKER, pg_dsn, schema],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    spans = [json.loads(line) for line in out.stdout.splitlines()]
    consumer = {}
    for s in spans:
        if s["kind"] == "CONSUMER":
            consumer.setdefault(s["attributes"]["messaging.message.id"], []).append(s)

    # Each attempt is a child of the enqueue that made its task, in the same trace.
    producer_ids = {f"{i:016x}" for i in sent}
    for task_id in (ok.id, *(t.id for t in bulk)):
        for attempt in consumer[str(task_id)]:
            assert attempt["parent"] in producer_ids and attempt["trace"] in trace_ids
            assert attempt["name"] == "process default"
            assert attempt["attributes"]["messaging.system"] == "pgtasq"
            assert attempt["attributes"]["messaging.destination.name"] == "default"
    (first,) = consumer[str(ok.id)]
    assert first["attributes"]["pgtasq.task.outcome"] == "completed"
    assert first["attributes"]["pgtasq.task.attempt"] == 1 and first["status"] == "UNSET"
    # A handler's own spans are children of its attempt, async or sync (on a thread).
    inside: dict[str, list[str]] = {}
    for s in spans:
        if s["kind"] == "INTERNAL":
            inside.setdefault(s["name"], []).append(s["parent"])
    (alone,) = consumer[str(untraced.id)]
    assert sorted(inside["inside the handler"]) == sorted([first["span"], alone["span"]])
    (sync_attempt,) = consumer[str(bulk[0].id)]
    assert inside["inside the sync handler"] == [sync_attempt["span"]]
    # A failing task: two attempts, retried then failed, each recording its exception.
    boom = sorted(consumer[str(bulk[1].id)], key=lambda s: s["attributes"]["pgtasq.task.attempt"])
    assert [s["attributes"]["pgtasq.task.outcome"] for s in boom] == ["retried", "failed"]
    assert all(s["status"] == "ERROR" and s["events"] == ["exception"] for s in boom)
    (completed_here,) = consumer[str(bulk[2].id)]
    assert completed_here["attributes"]["pgtasq.task.outcome"] == "completed"
    # A task enqueued without tracing starts a trace of its own in the worker.
    assert alone["parent"] is None and alone["trace"] not in trace_ids
