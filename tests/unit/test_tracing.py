"""The spans of `pgtasq._tracing`, recorded by the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pgtasq._tracing import Tracing, outcome


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[Tracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider)
    provider.shutdown()


def test_off_without_a_tracer_provider() -> None:
    assert Tracing(trace.NoOpTracerProvider()).tracer() is None
    with Tracing(trace.NoOpTracerProvider()).sending(["q"]) as sending:
        assert sending is None
    with Tracing(trace.NoOpTracerProvider()).processing(
        task_id=1, queue="q", task_type="t", attempt=1, headers={}
    ) as span:
        assert span is None
    outcome(None, "completed")  # nothing to set, and no error


def test_one_task_sent(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    with tracing.sending(["emails"]) as sending:
        assert sending is not None
        headers = sending.headers({"tenant": "acme", "traceparent": "stale"})
        sending.sent([42])
    (span,) = exporter.get_finished_spans()
    assert span.name == "send emails"
    assert span.kind is SpanKind.PRODUCER
    assert dict(span.attributes or {}) == {
        "messaging.system": "pgtasq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "emails",
        "messaging.message.id": "42",
    }
    ctx = span.get_span_context()
    assert headers["tenant"] == "acme"  # the user's own headers stay
    assert (
        headers["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    )


def test_a_bulk_call_is_one_span_with_the_count(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    with tracing.sending(["a", "b", "a"]) as sending:
        assert sending is not None
        sending.sent([1, 2, 3])
        first, second = sending.headers(None), sending.headers({})
    (span,) = exporter.get_finished_spans()
    assert span.name == "send"
    attributes = dict(span.attributes or {})
    assert attributes["messaging.batch.message_count"] == 3
    assert "messaging.destination.name" not in attributes  # two queues: no one destination
    assert "messaging.message.id" not in attributes
    assert first == second and "traceparent" in first


def test_an_attempt_is_a_child_of_the_enqueue(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    with tracing.sending(["q"]) as sending:
        assert sending is not None
        headers = sending.headers(None)
    # Later, elsewhere: no span is current.
    assert not trace.get_current_span().get_span_context().is_valid
    with tracing.processing(
        task_id=7, queue="q", task_type="send_mail", attempt=2, headers=headers
    ) as span:
        assert trace.get_current_span() is span  # a handler's own spans are its children
        outcome(span, "retried", ValueError("smtp down"))
    producer, consumer = exporter.get_finished_spans()
    assert consumer.name == "process q" and consumer.kind is SpanKind.CONSUMER
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.get_span_context().span_id
    assert consumer.context.trace_id == producer.context.trace_id
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "pgtasq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "q",
        "messaging.message.id": "7",
        "pgtasq.task.type": "send_mail",
        "pgtasq.task.attempt": 2,
        "pgtasq.task.outcome": "retried",
    }
    assert consumer.status.status_code is StatusCode.ERROR
    (event,) = consumer.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.message"] == "smtp down"


@pytest.mark.parametrize(
    "headers", [None, {}, {"traceparent": "not a trace context"}, {"traceparent": 5}]
)
def test_an_attempt_without_a_usable_context_is_a_root_span(
    tracing: Tracing, exporter: InMemorySpanExporter, headers: dict[str, object] | None
) -> None:
    with tracing.processing(task_id=1, queue="q", task_type="t", attempt=1, headers=headers) as s:
        outcome(s, "completed")
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert span.status.status_code is StatusCode.UNSET


def test_an_enqueue_that_fails_is_recorded(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(RuntimeError), tracing.sending(["q"]):
        raise RuntimeError("insert refused")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


_GLOBAL = """
import time
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pgtasq._tracing import Tracing

Tracing.LOOKUP_EVERY = 0.2
tracing = Tracing()  # made before the application configures tracing
with tracing.sending(["q"]) as before:
    pass
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with tracing.sending(["q"]) as at_once:  # the lookup of a moment ago still holds
    pass
time.sleep(0.2)
with tracing.sending(["q"]) as after:
    pass
names = [s.name for s in exporter.get_finished_spans()]
print(before is None, at_once is None, after is not None, names)
"""


def test_the_global_provider_is_looked_up_again_after_a_while() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _GLOBAL], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split("\n")[0] == "True True True ['send q']"
