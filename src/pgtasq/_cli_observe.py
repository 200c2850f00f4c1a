"""The ``pgtasq`` commands for operators' tooling: ``health`` and ``metrics``.

``health`` exits 0 when every check asked for passes, and otherwise with the failed check's
own code (`pgtasq._health`: 3 database, 4 schema, 5 worker, 6 queue), after one line saying
what failed. ``metrics`` serves the database collector (`pgtasq.metrics.DatabaseCollector`)
and ``/healthz`` over HTTP until SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from pgtasq import _health
from pgtasq._cli_boundary import CommandSettings, F, env_option, fail, failures, json_option
from pgtasq._limits import text_problem

if TYPE_CHECKING:
    from pgtasq.consumer import Consumer

METRICS_PORT_DEFAULT = 9808
METRICS_HOST_DEFAULT = "127.0.0.1"


@click.command()
@env_option(
    "--worker-alive",
    type=click.FloatRange(min=0, min_open=True),
    envvar="PGTASQ_HEALTH_WORKER_ALIVE",
    help="Also fail (exit 5) unless some worker heartbeat is at most this many seconds old.",
)
@env_option(
    "--queue",
    envvar="PGTASQ_HEALTH_QUEUE",
    help="The queue --max-pending-age looks at.",
)
@env_option(
    "--max-pending-age",
    type=click.FloatRange(min=0),
    envvar="PGTASQ_HEALTH_MAX_PENDING_AGE",
    help="Also fail (exit 6) when the queue's oldest ready task waited longer (seconds).",
)
@env_option(
    "--timeout",
    default=_health.CONNECT_TIMEOUT_DEFAULT,
    type=click.FloatRange(min=1),
    envvar="PGTASQ_HEALTH_TIMEOUT",
    help="Seconds to wait for a connection.",
)
@json_option
@click.pass_obj
def health(
    settings: CommandSettings,
    worker_alive: float | None,
    queue: str | None,
    max_pending_age: float | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Check that the database answers and the schema is at the newest revision; with
    options, that a worker is alive and a queue is not stuck.

    Exit codes: 0 healthy, 3 database unreachable, 4 schema missing or not at head,
    5 no live worker, 6 the queue's oldest ready task is too old, 2 bad usage.
    """
    if (queue is None) != (max_pending_age is None):
        raise click.UsageError("--queue and --max-pending-age go together")
    if queue is not None and (problem := text_problem(queue)):
        raise click.UsageError(f"--queue {problem}")
    with failures(settings.schema), settings.database(quiet=True) as dsn:
        checks = _health.run_checks(
            dsn,
            schema=settings.schema,
            worker_alive=worker_alive,
            queue=queue,
            max_pending_age=max_pending_age,
            connect_timeout=timeout,
        )
    failed = next((c for c in checks if not c.ok), None)
    if as_json:
        click.echo(json.dumps({"ok": failed is None, "checks": [c.as_dict() for c in checks]}))
    elif failed is None:
        click.echo("ok: " + "; ".join(c.detail for c in checks))
    if failed is not None:
        if not as_json:
            click.echo(f"unhealthy: {failed.name}: {failed.detail}", err=True)
        sys.exit(failed.exit_code)


def _endpoint_options(
    flag_prefix: str, envvar_prefix: str, *, port_default: int | None, port_help: str
) -> Callable[[F], F]:
    """Where an HTTP endpoint listens: ``--{flag_prefix}port`` and ``--{flag_prefix}host``
    (``{envvar_prefix}_PORT``, ``{envvar_prefix}_HOST``); the command receives them as
    ``{flag_prefix}port`` and ``{flag_prefix}host`` (dashes as underscores)."""
    port = env_option(
        f"--{flag_prefix}port",
        envvar=f"{envvar_prefix}_PORT",
        default=port_default,
        type=click.IntRange(1, 65535),
        help=port_help,
    )
    host = env_option(
        f"--{flag_prefix}host",
        envvar=f"{envvar_prefix}_HOST",
        default=METRICS_HOST_DEFAULT,
        help="Address to listen on (0.0.0.0: every interface).",
    )

    def decorate(f: F) -> F:
        return port(host(f))

    return decorate


# The worker's (`pgtasq worker --metrics-port`): off unless a port is given.
metrics_port_options = _endpoint_options(
    "metrics-",
    "PGTASQ_METRICS",
    port_default=None,
    port_help="Serve Prometheus metrics (any path) and /healthz on this port [default: off].",
)


@click.command("metrics")
@_endpoint_options(
    "", "PGTASQ_EXPORTER", port_default=METRICS_PORT_DEFAULT, port_help="Port to serve on."
)
@env_option(
    "--cache-seconds",
    default=10.0,
    type=click.FloatRange(min=0),
    envvar="PGTASQ_EXPORTER_CACHE_SECONDS",
    help="Query the database at most once per this many seconds, however often scraped.",
)
@env_option(
    "--worker-alive",
    default=60.0,
    type=click.FloatRange(min=0, min_open=True),
    envvar="PGTASQ_EXPORTER_WORKER_ALIVE",
    help="A worker counts as alive with a heartbeat at most this many seconds old.",
)
@click.pass_obj
def metrics_command(
    settings: CommandSettings, port: int, host: str, cache_seconds: float, worker_alive: float
) -> None:
    """Export what the database holds (queues, workers, schedules) for Prometheus, and
    /healthz, until SIGINT/SIGTERM. Run one per deployment."""
    settings.setup_logging()
    metrics = _import_metrics()
    with failures(settings.schema), settings.database(quiet=True) as dsn:
        registry = metrics.CollectorRegistry()
        registry.register(
            metrics.DatabaseCollector(
                dsn,
                schema=settings.schema,
                cache_seconds=cache_seconds,
                worker_alive_seconds=worker_alive,
            )
        )
        app = metrics.make_wsgi_app(registry, dsn=dsn, schema=settings.schema)
        server = _serve(app, host, port)
        click.echo(f"serving pgtasq metrics on http://{host}:{port}/metrics", err=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        server.shutdown()


COMMANDS = (health, metrics_command)


def _import_metrics() -> ModuleType:
    try:
        from pgtasq import metrics
    except ImportError as exc:
        fail(str(exc))
    return metrics


def _serve(app: Any, host: str, port: int) -> Any:
    metrics = _import_metrics()
    try:
        return metrics.serve(app, host, port)
    except OSError as exc:
        fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}")


# -- the worker's metrics -------------------------------------------------------------------


@contextlib.contextmanager
def worker_metrics(
    consumer: Consumer, *, dsn: str, schema: str, host: str, port: int | None, child: bool
) -> Iterator[None]:
    """Count what this worker process does; serve it on ``host:port`` unless ``child`` (a
    process of ``--processes N``, whose supervisor serves every child's metrics)."""
    if port is None and not child:
        yield
        return
    metrics = _import_metrics()
    recorder = consumer.metrics = metrics.WorkerMetrics()
    app = metrics.make_wsgi_app(dsn=dsn, schema=schema)
    server = None if child or port is None else _serve(app, host, port)
    try:
        yield
    finally:
        recorder.apply()  # the last events, for the supervisor's last scrapes
        if server is not None:
            server.shutdown()


@contextlib.contextmanager
def supervisor_metrics(
    *, dsn: str, schema: str, host: str, port: int | None, env: dict[str, str]
) -> Iterator[Callable[[int], None] | None]:
    """For ``--processes N``: the children write their metrics into a temporary folder
    (prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR`` in ``env``), and
    this process serves their sum. Yields the callback for a child that exited, whose live
    gauges then stop counting; the folder is removed at the end (unless it was given)."""
    if port is None:
        yield None
        return
    metrics = _import_metrics()
    given = env.get("PROMETHEUS_MULTIPROC_DIR")
    folder = given or tempfile.mkdtemp(prefix="pgtasq-metrics-")
    env["PROMETHEUS_MULTIPROC_DIR"] = folder
    registry = metrics.multiprocess_registry(folder)
    server = _serve(metrics.make_wsgi_app(registry, dsn=dsn, schema=schema), host, port)

    def child_exited(pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]

    try:
        yield child_exited
    finally:
        server.shutdown()
        if not given:
            shutil.rmtree(folder, ignore_errors=True)
