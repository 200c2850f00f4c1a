"""Prometheus metrics for pgtasq (``pip install "pgtasq[metrics]"``). See docs/observability.md.

Two sources, never mixed in one exporter by default:

- `WorkerMetrics`: what one worker process does, counted on its own hot path without any
  SQL (``pgtasq_worker_*``). Pass it to ``Consumer(metrics=WorkerMetrics())``, or run
  ``pgtasq worker --metrics-port PORT``.
- `DatabaseCollector`: what the database holds (``pgtasq_queue_*``, ``pgtasq_workers_*``,
  ``pgtasq_schedule_*``), queried at most once per ``cache_seconds`` however often it is
  scraped. Run one per deployment (``pgtasq metrics``, or register it yourself): every
  worker exporting it would report the same numbers once per worker.

`make_wsgi_app` and `make_asgi_app` serve a registry (``/metrics``, or any path) and
``/healthz`` (200 or 503 with a small JSON body) for mounting in a web application.

Labels are the queue and the task type only, each capped (`LabelCap`): past
``label_values_max`` distinct values, new ones are reported as ``other``.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

try:
    import prometheus_client
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        'pgtasq.metrics needs prometheus-client: pip install "pgtasq[metrics]"'
    ) from exc

import psycopg
from psycopg.rows import dict_row

from pgtasq import _sql
from pgtasq._health import HealthCheck
from pgtasq._observe import LABEL_VALUES_MAX_DEFAULT, LabelCap, Recorder
from pgtasq.tables import SCHEMA_DEFAULT

__all__ = [
    "DatabaseCollector",
    "WorkerMetrics",
    "make_asgi_app",
    "make_wsgi_app",
    "multiprocess_registry",
    "serve",
]

log = logging.getLogger("pgtasq.metrics")

CACHE_SECONDS_DEFAULT = 10.0
WORKER_ALIVE_SECONDS_DEFAULT = 60.0
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600)
CLAIM_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
OUTCOMES = ("completed", "failed", "retried", "released", "cancelled")


class _TaskSeries:
    """The label children of one (queue, type): looked up once, not on every event."""

    __slots__ = ("duration", "outcomes", "started", "wait")

    def __init__(self, metrics: WorkerMetrics, queue: str, task_type: str) -> None:
        self.started = metrics.started.labels(queue, task_type)
        self.wait = metrics.wait.labels(queue, task_type)
        self.duration = metrics.duration.labels(queue, task_type)
        self.outcomes = {o: metrics.finished.labels(queue, task_type, o) for o in OUTCOMES}


class WorkerMetrics(Recorder):
    """The worker's own metrics (``pgtasq_worker_*``), registered in ``registry``.

    Under prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set, as
    ``pgtasq worker --processes N --metrics-port`` does) the gauges add up over the live
    processes and the counters over every process that ran.
    """

    enabled = True

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        label_values_max: int = LABEL_VALUES_MAX_DEFAULT,
    ) -> None:
        self._queue = LabelCap(label_values_max)
        self._type = LabelCap(label_values_max)
        self._series: dict[tuple[str, str], _TaskSeries] = {}
        self._events: collections.deque[tuple[int, str, str, Any, Any]] = collections.deque()
        self._apply_lock = threading.Lock()
        self._slots = self._slots_applied = (0, 0)
        self._db_up = True
        labels = ("queue", "type")
        r = registry
        if r is not None:
            r.register(_ApplyBeforeCollect(self))
        self.started = Counter(
            "pgtasq_worker_tasks_started", "Handlers started.", labels, registry=r
        )
        self.finished = Counter(
            "pgtasq_worker_tasks_finished",
            "Outcomes recorded: completed, failed, retried, released (handed back at "
            "shutdown), cancelled (cancelled or taken away while running).",
            (*labels, "outcome"),
            registry=r,
        )
        self.rescued = Counter(
            "pgtasq_worker_tasks_rescued",
            "Tasks with an expired lease that this worker's rescuer took back.",
            registry=r,
        )
        self.duration = Histogram(
            "pgtasq_worker_task_duration_seconds",
            "Handler run time.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.wait = Histogram(
            "pgtasq_worker_task_wait_seconds",
            "Time from a task's run_at to its claim (database clock).",
            labels,
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.running = Gauge(
            "pgtasq_worker_tasks_running",
            "Handlers running now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.free = Gauge(
            "pgtasq_worker_slots_free",
            "Free handler slots (concurrency less running).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.claim_size = Histogram(
            "pgtasq_worker_claim_batch_size",
            "Tasks returned by one claim.",
            buckets=CLAIM_BUCKETS,
            registry=r,
        )
        self.flush = Histogram(
            "pgtasq_worker_flush_seconds",
            "Time to write one batch of outcomes.",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.db_errors = Counter(
            "pgtasq_worker_database_errors",
            "Database unreachable (claim or flush failed and is retried).",
            ("operation",),
            registry=r,
        )
        self.db_up = Gauge(
            "pgtasq_worker_database_up",
            "1 while the last claim reached the database, 0 after a failed one.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.db_up.set(1)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # another process serves the files
            threading.Thread(
                target=self._apply_every_second, name="pgtasq-metrics-apply", daemon=True
            ).start()

    def _of(self, queue: str, task_type: str) -> _TaskSeries:
        series = self._series.get((queue, task_type))
        if series is None:  # new, or past the cap (then found again under "other")
            key = (self._queue(queue), self._type(task_type))
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _TaskSeries(self, *key)
        return series

    # The hot path only appends to a deque (thread-safe, a fraction of a microsecond);
    # `apply` moves the events into prometheus-client's objects, whose every update takes a
    # lock: before each scrape of this process, and once a second in multiprocess mode,
    # where another process serves the files.

    def task_started(self, queue: str, task_type: str, run_at: datetime, claimed: datetime) -> None:
        self._events.append((_STARTED, queue, task_type, run_at, claimed))

    def task_ended(self, queue: str, task_type: str, seconds: float) -> None:
        self._events.append((_ENDED, queue, task_type, seconds, None))

    def task_outcome(self, queue: str, task_type: str, outcome: str) -> None:
        self._events.append((_OUTCOME, queue, task_type, outcome, None))

    def tasks_rescued(self, count: int) -> None:
        self.rescued.inc(count)

    def claimed(self, count: int) -> None:
        self._events.append((_CLAIMED, "", "", count, None))

    def slots(self, running: int, free: int) -> None:
        self._slots = (running, free)

    def flushed(self, seconds: float, count: int) -> None:
        self._events.append((_FLUSHED, "", "", seconds, None))

    def database_error(self, operation: str) -> None:
        self.db_errors.labels(operation).inc()
        self._db_up = False
        self.db_up.set(0)

    def database_ok(self) -> None:
        if not self._db_up:
            self._db_up = True
            self.db_up.set(1)

    def apply(self) -> None:
        """Move the events recorded so far into the metrics, added up first: one update
        per series and bucket, not one per event."""
        with self._apply_lock:
            counts: dict[Any, float] = collections.defaultdict(float)
            observed: dict[Any, _Observed] = {}
            events = self._events
            while events:
                kind, queue, task_type, value, claimed = events.popleft()
                if kind == _STARTED:
                    series = self._of(queue, task_type)
                    counts[series.started] += 1
                    wait = max(0.0, (claimed - value).total_seconds())
                    _observe(observed, series.wait, WAIT_BUCKETS, wait)
                elif kind == _ENDED:
                    _observe(observed, self._of(queue, task_type).duration, DURATION_BUCKETS, value)
                elif kind == _OUTCOME:
                    counts[self._of(queue, task_type).outcomes[value]] += 1
                elif kind == _CLAIMED:
                    _observe(observed, self.claim_size, CLAIM_BUCKETS, value)
                else:
                    _observe(observed, self.flush, FLUSH_BUCKETS, value)
            for counter, amount in counts.items():
                counter.inc(amount)
            for histogram, batch in observed.items():
                batch.add_to(histogram)
            if self._slots != self._slots_applied:
                self._slots_applied = running_free = self._slots
                self.running.set(running_free[0])
                self.free.set(running_free[1])

    def _apply_every_second(self) -> None:
        while True:
            time.sleep(1.0)
            try:
                self.apply()
            except Exception:  # pragma: no cover - a bug: say so, keep counting
                log.exception("applying worker metrics failed")


_STARTED, _ENDED, _OUTCOME, _CLAIMED, _FLUSHED = range(5)


class _Observed:
    """Observations of one histogram, added up: the sum and the count per bucket."""

    __slots__ = ("buckets", "sum", "values")

    def __init__(self, size: int) -> None:
        self.sum = 0.0
        self.buckets = [0] * size
        self.values: list[float] = []

    def add_to(self, histogram: Any) -> None:
        # prometheus-client's Histogram has no "observe n values" call: add to its bucket
        # and sum values directly where they are as we know them, one observe each if not.
        buckets, total = getattr(histogram, "_buckets", None), getattr(histogram, "_sum", None)
        if buckets is None or total is None or len(buckets) != len(self.buckets):
            for value in self.values:
                histogram.observe(value)
            return
        total.inc(self.sum)
        for bucket, count in zip(buckets, self.buckets, strict=True):
            if count:
                bucket.inc(count)


def _observe(
    observed: dict[Any, _Observed], histogram: Any, bounds: tuple[float, ...], value: float
) -> None:
    batch = observed.get(histogram)
    if batch is None:
        batch = observed[histogram] = _Observed(len(bounds) + 1)  # + the +Inf bucket
    batch.sum += value
    batch.buckets[bisect.bisect_left(bounds, value)] += 1
    batch.values.append(value)


class _ApplyBeforeCollect(Collector):
    """Registered before the worker's metrics: a scrape first applies what is pending."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        """Bring the worker's metrics up to date before a scrape; adds none of its own."""
        self._metrics.apply()
        return []


# -- the database collector -----------------------------------------------------------------


class DatabaseCollector(Collector):
    """What the database holds, for Prometheus; one query set per ``cache_seconds`` at most.

    ``registry.register(DatabaseCollector(dsn))``. A scrape while the database is away
    reports ``pgtasq_up 0`` and nothing else.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = SCHEMA_DEFAULT,
        cache_seconds: float = CACHE_SECONDS_DEFAULT,
        worker_alive_seconds: float = WORKER_ALIVE_SECONDS_DEFAULT,
        label_values_max: int = LABEL_VALUES_MAX_DEFAULT,
        connect_timeout: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.stmts = _sql.observe_statements(schema)
        self.cache_seconds = cache_seconds
        self.worker_alive_seconds = worker_alive_seconds
        self.connect_timeout = connect_timeout
        self.queries = 0  # query sets run so far (the tests watch the cache with it)
        self._queue = LabelCap(label_values_max)
        self._schedule = LabelCap(label_values_max)
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._families: list[Metric] = []

    def describe(self) -> Iterable[Metric]:
        """Nothing: registering the collector does not query the database."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metrics of the database (queues, workers, schedules), queried at most once
        per ``cache_seconds`` however often scraped."""
        with self._lock:
            if time.monotonic() - self._at >= self.cache_seconds:
                self._families = self._query()
                self._at = time.monotonic()
            families = self._families
        yield from families

    def _query(self) -> list[Metric]:
        up = GaugeMetricFamily("pgtasq_up", "1 when the last query set reached the database.")
        began = time.perf_counter()
        try:
            with psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                row_factory=dict_row,
            ) as conn:
                tasks = conn.execute(self.stmts.metrics_queue_tasks.text).fetchall()
                queues = conn.execute(self.stmts.metrics_queues.text).fetchall()
                workers = conn.execute(
                    self.stmts.metrics_workers.text, {"alive": self.worker_alive_seconds}
                ).fetchone()
                schedules = conn.execute(self.stmts.metrics_schedules.text).fetchall()
        except psycopg.Error as exc:
            log.warning("metrics: the database did not answer: %s", str(exc).strip()[:200])
            up.add_metric([], 0)
            return [up]
        self.queries += 1
        up.add_metric([], 1)
        families = [up, *self._queue_families(tasks, queues)]
        families += _worker_families(workers or {})
        families += self._schedule_families(schedules)
        took = GaugeMetricFamily("pgtasq_collect_duration_seconds", "Time the last query set took.")
        took.add_metric([], time.perf_counter() - began)
        families.append(took)
        return families

    def _queue_families(
        self, tasks: list[dict[str, Any]], queues: list[dict[str, Any]]
    ) -> list[Metric]:
        counts: dict[tuple[str, str], float] = {}
        oldest: dict[str, float] = {}
        paused: dict[str, float] = {}
        processed: dict[tuple[str, str], float] = {}
        names = {row["queue"] for row in tasks} | {row["name"] for row in queues}
        for name in sorted(names):  # every known queue gets a 0, not a gap
            q = self._queue(name)
            for state in ("ready", "scheduled", "running"):
                counts.setdefault((q, state), 0)
            oldest.setdefault(q, 0.0)
        for row in tasks:
            q = self._queue(row["queue"])
            if row["state"] == "pending":
                counts[q, "ready"] += row["ready"]
                counts[q, "scheduled"] += row["scheduled"]
                oldest[q] = max(oldest[q], row["oldest_ready_age"])
            else:
                counts[q, "running"] += row["ready"]
        for row in queues:
            q = self._queue(row["name"])
            paused[q] = max(paused.get(q, 0), 1 if row["paused"] else 0)
            for outcome in ("completed", "failed", "retried"):
                processed[q, outcome] = processed.get((q, outcome), 0) + row[outcome]
        by_state = GaugeMetricFamily(
            "pgtasq_queue_tasks",
            "Tasks per queue and state: ready (pending, due), scheduled (pending, "
            "not due yet), running.",
            labels=["queue", "state"],
        )
        for (q, state), value in sorted(counts.items()):
            by_state.add_metric([q, state], value)
        age = GaugeMetricFamily(
            "pgtasq_queue_oldest_ready_age_seconds",
            "How long the oldest ready task of the queue has waited (0: none).",
            labels=["queue"],
        )
        for q, value in sorted(oldest.items()):
            age.add_metric([q], value)
        pause = GaugeMetricFamily(
            "pgtasq_queue_paused", "1 when the queue is paused.", labels=["queue"]
        )
        for q, value in sorted(paused.items()):
            pause.add_metric([q], value)
        done = CounterMetricFamily(
            "pgtasq_queue_processed",
            "Finished attempts per queue and outcome since the schema was created (from the "
            "daily counters).",
            labels=["queue", "outcome"],
        )
        for (q, outcome), value in sorted(processed.items()):
            done.add_metric([q, outcome], value)
        return [by_state, age, pause, done]

    def _schedule_families(self, schedules: list[dict[str, Any]]) -> list[Metric]:
        last = GaugeMetricFamily(
            "pgtasq_schedule_last_run_timestamp_seconds",
            "Unix time of the schedule's last tick (absent: never ran).",
            labels=["schedule"],
        )
        following = GaugeMetricFamily(
            "pgtasq_schedule_next_run_timestamp_seconds",
            "Unix time of the schedule's next tick.",
            labels=["schedule"],
        )
        seen: set[str] = set()
        for row in schedules:
            name = self._schedule(row["id"])
            if name in seen:  # several past the cap, all "other": report the first
                continue
            seen.add(name)
            if row["last_run"] is not None:
                last.add_metric([name], row["last_run"])
            if row["next_run"] is not None:
                following.add_metric([name], row["next_run"])
        return [last, following]


def _worker_families(row: dict[str, Any]) -> list[Metric]:
    alive = GaugeMetricFamily("pgtasq_workers_alive", "Registered workers with a recent heartbeat.")
    alive.add_metric([], row.get("alive") or 0)
    registered = GaugeMetricFamily("pgtasq_workers_registered", "Rows in the workers table.")
    registered.add_metric([], row.get("registered") or 0)
    concurrency = GaugeMetricFamily(
        "pgtasq_workers_concurrency", "Handler slots of the live workers, summed."
    )
    concurrency.add_metric([], row.get("concurrency") or 0)
    families: list[Metric] = [alive, registered, concurrency]
    if row.get("heartbeat_age") is not None:
        age = GaugeMetricFamily(
            "pgtasq_workers_heartbeat_age_seconds",
            "Seconds since the freshest worker heartbeat (absent: no worker registered).",
        )
        age.add_metric([], row["heartbeat_age"])
        families.append(age)
    return families


# -- serving --------------------------------------------------------------------------------

Health = Callable[[], tuple[bool, dict[str, Any]]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _health(dsn: str | None, schema: str) -> Health:
    if dsn is None:
        return lambda: (True, {"ok": True, "checks": []})
    return HealthCheck(dsn, schema=schema)


def _health_response(check: Health) -> tuple[str, bytes]:
    try:
        ok, body = check()
    except Exception as exc:  # a bug must not take the endpoint down with a traceback
        log.exception("health check failed")
        ok, body = False, {"ok": False, "error": type(exc).__name__}
    return ("200 OK" if ok else "503 Service Unavailable"), json.dumps(body).encode()


def make_wsgi_app(
    registry: CollectorRegistry | None = None,
    *,
    dsn: str | None = None,
    schema: str = SCHEMA_DEFAULT,
) -> WSGIApp:
    """A WSGI app: ``/healthz`` (the database and schema checks when ``dsn`` is given, cached
    5 s; 200 or 503 with JSON), and ``registry``'s metrics (the default registry if None) on
    every other path."""
    metrics_app = prometheus_client.make_wsgi_app(registry or REGISTRY)
    check = _health(dsn, schema)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").rstrip("/").endswith("/healthz"):
            status, body = _health_response(check)
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    return app


def make_asgi_app(
    registry: CollectorRegistry | None = None,
    *,
    dsn: str | None = None,
    schema: str = SCHEMA_DEFAULT,
) -> Callable[..., Any]:
    """The ASGI form of `make_wsgi_app` (the health check runs in a thread)."""
    metrics_app = prometheus_client.make_asgi_app(registry or REGISTRY)
    check = _health(dsn, schema)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "").rstrip("/").endswith("/healthz"):
            status, body = await asyncio.to_thread(_health_response, check)
            await send(
                {
                    "type": "http.response.start",
                    "status": int(status.split()[0]),
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await metrics_app(scope, receive, send)

    return app


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry reading the files of every process that wrote metrics into ``path``."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass


def serve(app: WSGIApp, host: str, port: int) -> WSGIServer:
    """Serve ``app`` on ``host:port`` from a daemon thread; ``shutdown()`` stops it."""
    server = make_server(host, port, app, _Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="pgtasq-metrics", daemon=True)
    thread.start()
    return server
