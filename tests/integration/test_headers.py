"""Task headers on a real PostgreSQL: every enqueue path stores them, every read returns them,
and a producer with tracing on stores its span's context in them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pgtasq import AsyncProducer, Client, Producer, Task, TaskValidationError

HEADERS = {"tenant": "acme", "tab\there": 'back\\slash "quoted" é 🎉', "empty": ""}


def _stored(dsn: str, schema: str) -> list[Any]:
    with psycopg.connect(dsn) as c:
        return [r[0] for r in c.execute(f"SELECT headers FROM {schema}.tasks ORDER BY id")]


@pytest.mark.parametrize(
    "how", ["one", "one_keyed", "many_copy", "many_keyed_unnest", "sqlalchemy"]
)
def test_every_enqueue_path_stores_the_headers(pg_dsn: str, schema: str, how: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        if how == "one":
            infos = [producer.enqueue("t", headers=HEADERS)]
        elif how == "one_keyed":
            infos = [producer.enqueue("t", headers=HEADERS, idempotency_key="k")]
        elif how == "many_copy":
            infos = producer.enqueue_many([Task("t", headers=HEADERS), Task("t"), Task("t")])
        elif how == "many_keyed_unnest":
            infos = producer.enqueue_many(
                [Task("t", headers=HEADERS, idempotency_key="a"), Task("t", idempotency_key="b")]
            )
        else:
            engine = sa.create_engine(pg_dsn.replace("postgresql://", "postgresql+psycopg://"))
            with engine.begin() as sa_conn:
                infos = Producer(schema=schema).enqueue_many(
                    [Task("t", headers=HEADERS), Task("t")], conn=sa_conn
                )
            engine.dispose()
    stored = _stored(pg_dsn, schema)
    assert stored[0] == HEADERS
    assert all(h == {} for h in stored[1:])  # a task without headers gets the default {}
    assert infos[0].headers == HEADERS and all(i.headers == {} for i in infos[1:])
    with Client(pg_dsn, schema=schema) as client:
        assert client.get_task(infos[0].id).headers == HEADERS
        for full in (True, False):  # a listing's preview has the headers whole
            listed = sorted(client.list_tasks(full=full).tasks, key=lambda t: t.id)
            assert [t.headers for t in listed] == stored


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"a": 1}, "names and values must be strings"),
        ({1: "a"}, "names and values must be strings"),
        (["a"], "must be a mapping"),
        ({"": "a"}, "a name must be 1 to 255 characters"),
        ({"a": "nul\x00"}, "NUL"),
        ({"a": "\ud800"}, "lone surrogate"),
        ({"a": "x" * 20000}, "over the limit of 16384"),
    ],
)
def test_bad_headers_are_refused_before_any_sql(headers: Any, says: str) -> None:
    with pytest.raises(TaskValidationError, match=says) as caught:
        Task("t", headers=headers)
    assert caught.value.field == "headers"


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_a_traced_enqueue_stores_its_span_context(
    pg_dsn: str, schema: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    with Producer(pg_dsn, schema=schema, tracer_provider=provider) as producer:
        one = producer.enqueue("t", headers={"tenant": "acme"}, queue="emails")
        many = producer.enqueue_many([Task("t"), Task("t", queue="other")])
    first, bulk = spans.get_finished_spans()
    assert first.kind is SpanKind.PRODUCER and first.name == "send emails"
    assert (first.attributes or {})["messaging.message.id"] == str(one.id)
    assert (bulk.attributes or {})["messaging.batch.message_count"] == 2
    stored = _stored(pg_dsn, schema)
    ctx = first.get_span_context()
    assert stored[0]["tenant"] == "acme"
    assert stored[0]["traceparent"].split("-")[1:3] == [
        f"{ctx.trace_id:032x}",
        f"{ctx.span_id:016x}",
    ]
    bulk_ctx = bulk.get_span_context()
    for row in stored[1:]:
        assert row["traceparent"].split("-")[2] == f"{bulk_ctx.span_id:016x}"
    assert [i.headers for i in many] == stored[1:]


async def test_a_traced_async_enqueue_on_a_refused_call_records_the_error(
    pg_dsn: str, schema: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    async with AsyncProducer(pg_dsn, schema=schema, tracer_provider=provider) as producer:
        await producer.enqueue("t", idempotency_key="k")
        with pytest.raises(Exception, match="idempotency"):
            await producer.enqueue("t", idempotency_key="k", on_conflict="raise")
    ok, refused = spans.get_finished_spans()
    assert ok.status.is_ok and not refused.status.is_ok
    assert [e.name for e in refused.events] == ["exception"]
