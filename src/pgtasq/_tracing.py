"""OpenTelemetry traces: a producer span per enqueue call, a consumer span per attempt.

Only ``opentelemetry-api`` is used (``pip install 'pgtasq[tracing]'``); which SDK, exporter
and propagator record the spans is the application's choice. Tracing is off, and costs a
clock read per call, when the API is not installed or no tracer provider is set (the API's
default, a proxy to nothing, counts as none).

The producer span (kind PRODUCER, named ``send <queue>``) is current while the tasks are
inserted; its context is injected, by the globally configured propagator (W3C
``traceparent``/``tracestate`` by default), into each task's ``headers``, so it is stored
with the row in the enqueuer's own transaction. A bulk call has one span for all its tasks,
with their count. The worker extracts that context and runs each attempt in a consumer span
(kind CONSUMER, ``process <queue>``) that is its child, so one trace follows a request from
the web handler that enqueued a task into the handler that ran it, across processes and
hosts. A retried task's attempts are siblings under the same producer span.

Attributes follow OpenTelemetry's semantic conventions for messaging: ``messaging.system``
(``pgtasq``), ``messaging.operation.type`` and ``.name``, ``messaging.destination.name`` (the
queue), ``messaging.message.id`` (the task id), ``messaging.batch.message_count``; and
pgtasq's own ``pgtasq.task.type``, ``pgtasq.task.attempt`` and ``pgtasq.task.outcome``. A
handler's exception is recorded on its span, whose status is then ERROR.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

try:
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # tracing off: the API is not installed
    _trace = None  # type: ignore[assignment]
    _propagate = None  # type: ignore[assignment]
    _context = None  # type: ignore[assignment]

TRACING = _trace is not None  # the API is installed: tracing can be on
SYSTEM = "pgtasq"
INSTRUMENTATION = "pgtasq"


def _version() -> str:
    from pgtasq import __version__

    return __version__


class Sending:
    """The producer span of one enqueue call, while its tasks are inserted."""

    __slots__ = ("carrier", "span")

    def __init__(self, span: Any, carrier: dict[str, str]) -> None:
        self.span = span
        self.carrier = carrier
        """The trace context to store in each task's headers."""

    def headers(self, given: Mapping[str, str] | None) -> dict[str, str]:
        """A task's headers with the trace context added (it replaces the same keys)."""
        return {**given, **self.carrier} if given else dict(self.carrier)

    def sent(self, task_ids: Sequence[int]) -> None:
        """The tasks are inserted (or found by their idempotency key): ``task_ids``."""
        if len(task_ids) == 1:
            self.span.set_attribute("messaging.message.id", str(task_ids[0]))


class Tracing:
    """pgtasq's spans, made with ``tracer_provider`` (default: the global one, looked up
    at most once a second, so a provider set after the producer or worker was made is used
    from then on: the API's lookup reads the environment each time, which would cost a
    worker about 10 % of a no-op task's time with tracing off)."""

    LOOKUP_EVERY = 1.0  # seconds

    def __init__(self, tracer_provider: Any = None) -> None:
        self._given = tracer_provider
        self._provider: Any = None
        self._tracer: Any = None
        self._next_lookup = 0.0

    def tracer(self) -> Any:
        """The tracer to use now, or None when tracing is off."""
        if _trace is None:
            return None
        if self._given is not None:
            provider = self._given
        else:
            now = time.monotonic()
            if now < self._next_lookup:
                return self._tracer
            self._next_lookup = now + self.LOOKUP_EVERY
            provider = _trace.get_tracer_provider()
        if provider is not self._provider:
            self._provider = provider
            off = isinstance(provider, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider))
            self._tracer = None if off else provider.get_tracer(INSTRUMENTATION, _version())
        return self._tracer

    @contextlib.contextmanager
    def sending(self, queues: Sequence[str]) -> Iterator[Sending | None]:
        """The producer span around one enqueue call of tasks for ``queues`` (one entry a
        task); yields None when tracing is off. An exception is recorded on the span."""
        tracer = self.tracer()
        if tracer is None:
            yield None
            return
        distinct = set(queues)
        queue = next(iter(distinct)) if len(distinct) == 1 else None
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        if queue is not None:
            attributes["messaging.destination.name"] = queue
        if len(queues) != 1:
            attributes["messaging.batch.message_count"] = len(queues)
        name = f"send {queue}" if queue is not None else "send"
        with tracer.start_as_current_span(
            name, kind=_trace.SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            _propagate.inject(carrier)
            yield Sending(span, carrier)

    def start_processing(
        self,
        tracer: Any,
        *,
        task_id: int,
        queue: str,
        task_type: str,
        attempt: int,
        headers: Any,
    ) -> tuple[Any, Any]:
        """Start the consumer span of one attempt, a child of the context stored in
        ``headers`` (a root span when they hold none), and make it current; returns the
        span and the token `end_processing` needs. (Not a context manager: this runs once
        per task, and the SDK's own span costs enough.)"""
        parent = None
        if headers and isinstance(headers, Mapping):
            try:
                parent = _propagate.extract(headers)
            except Exception:  # headers written by other means: no usable context
                parent = None
        span = tracer.start_span(
            f"process {queue}",
            context=parent,
            kind=_trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": queue,
                "messaging.message.id": str(task_id),
                "pgtasq.task.type": task_type,
                "pgtasq.task.attempt": attempt,
            },
        )
        return span, _context.attach(_trace.set_span_in_context(span))

    @staticmethod
    def end_processing(
        span: Any, token: Any, value: str, error: BaseException | None = None
    ) -> None:
        """Set the attempt's outcome (and its error) on ``span``, end it, and make the
        context current before `start_processing` current again."""
        try:
            outcome(span, value, error)
        finally:
            _context.detach(token)
            span.end()

    @contextlib.contextmanager
    def processing(
        self,
        *,
        task_id: int,
        queue: str,
        task_type: str,
        attempt: int,
        headers: Mapping[str, Any] | None,
    ) -> Iterator[Any]:
        """`start_processing` .. `end_processing` as a context manager, which yields the span
        (None when tracing is off); the caller sets the outcome with `outcome` (default
        ``completed``, or ``failed`` with the exception that leaves the block)."""
        tracer = self.tracer()
        if tracer is None:
            yield None
            return
        span, token = self.start_processing(
            tracer,
            task_id=task_id,
            queue=queue,
            task_type=task_type,
            attempt=attempt,
            headers=headers,
        )
        try:
            yield span
        except BaseException as exc:
            _context.detach(token)
            outcome(span, "failed", exc)
            span.end()
            raise
        _context.detach(token)
        span.end()


def outcome(span: Any, value: str, error: BaseException | None = None) -> None:
    """Set what became of the attempt on its consumer ``span`` (None: tracing off)."""
    if span is None:
        return
    span.set_attribute("pgtasq.task.outcome", value)
    if error is not None:
        span.record_exception(error)
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, f"{type(error).__name__}"))
