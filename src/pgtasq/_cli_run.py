"""The ``pgtasq`` commands that run an application's code: ``worker`` (its Consumer, in one
process or ``--processes N`` supervised ones) and ``scheduler`` (its Scheduler's cron
entries). APP names the object as ``module:attribute``; the current folder is importable.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
from typing import Protocol

import click

from pgtasq import _cli_boundary, _cli_observe, _supervisor
from pgtasq._cli_boundary import CommandSettings, command_errors, env_option, first_line
from pgtasq._teardown import TEARDOWN_MARGIN
from pgtasq.consumer import Consumer
from pgtasq.errors import ConfigurationError, PgtasqError
from pgtasq.scheduler import Scheduler


class RunSettings(CommandSettings, Protocol):
    """What the ``cli`` group hands these commands (`pgtasq.cli._Settings`): the global
    options, which a worker passes on to its children."""

    schema_given: bool
    log_level: str
    log_format: str


def _load_consumer(path: str) -> Consumer:
    """``module:attribute`` -> the Consumer it names (the current folder is importable)."""
    consumer = _load(path)
    if not isinstance(consumer, Consumer):
        raise click.BadParameter(f"{path} is not a pgtasq Consumer (got {type(consumer).__name__})")
    return consumer


def _load_scheduler(path: str) -> Scheduler:
    scheduler = _load(path)
    if not isinstance(scheduler, Scheduler):
        raise click.BadParameter(
            f"{path} is not a pgtasq Scheduler (got {type(scheduler).__name__})"
        )
    return scheduler


def _load(path: str) -> object:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise click.BadParameter("expected module:attribute, e.g. myapp.tasks:consumer")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    except PgtasqError:
        raise  # an invalid cron, queue, setting…: one line (`command_errors`)
    except Exception as exc:
        logging.getLogger("pgtasq.cli").debug("importing %s failed", module_name, exc_info=True)
        raise click.ClickException(
            f"importing {module_name!r} raised {type(exc).__name__}: {first_line(exc)} "
            "(--log-level DEBUG shows the traceback)"
        ) from exc
    return getattr(module, attr, None)


_prepare_option = env_option(
    "--prepare/--no-prepare",
    default=True,
    envvar="PGTASQ_PREPARE",
    help="Server-side prepared statements; --no-prepare for PgBouncer before 1.21 "
    "(or without max_prepared_statements).",
)


@click.command()
@click.argument("app", envvar="PGTASQ_SCHEDULER_APP")
@_prepare_option
@click.pass_obj
def scheduler(settings: RunSettings, app: str, prepare: bool) -> None:
    """Run the cron entries of APP (module:scheduler) until SIGINT/SIGTERM.

    Run as many as you like: each tick of each entry is enqueued once.
    """
    settings.setup_logging()
    with command_errors():
        sched = _load_scheduler(app)
    with command_errors(), settings.database(quiet=True) as dsn:
        sched.bind(dsn, schema=settings.schema if settings.schema_given else None, prepare=prepare)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: sched.stop(timeout=0))
        sched.run()
        sched.close()


@click.command()
@click.argument("app", envvar="PGTASQ_APP")
@env_option(
    "--processes",
    default=1,
    type=click.IntRange(1, 256),
    envvar="PGTASQ_PROCESSES",
    help="Worker processes (a dead one is restarted).",
)
@env_option(
    "--concurrency",
    type=int,
    envvar="PGTASQ_CONCURRENCY",
    help="Tasks run at once per process, 1 to 10000 [default: the consumer's].",
)
@env_option(
    "--batch-size",
    type=int,
    envvar="PGTASQ_BATCH_SIZE",
    help="Most tasks claimed by one statement, 1 to 10000 [default: the consumer's].",
)
@env_option(
    "--queues",
    envvar="PGTASQ_QUEUES",
    help="Queues and weights, e.g. critical=6,default=3,low=1 [default: the consumer's].",
)
@env_option(
    "--strict/--weighted",
    default=None,
    envvar="PGTASQ_STRICT",
    help="Strict priority between queues instead of weighted.",
)
@env_option(
    "--lease",
    type=float,
    envvar="PGTASQ_LEASE",
    help="Seconds a dead worker's tasks wait before they run elsewhere, >= 1 "
    "[default: the consumer's].",
)
@env_option(
    "--heartbeat-interval",
    type=float,
    envvar="PGTASQ_HEARTBEAT_INTERVAL",
    help="Seconds between heartbeats, under half the lease [default: the consumer's, "
    "else lease / 6, at most 1].",
)
@env_option(
    "--rescue-interval",
    type=float,
    envvar="PGTASQ_RESCUE_INTERVAL",
    help="Seconds between rescues of expired leases [default: the consumer's, "
    "else lease / 4, at most 1].",
)
@env_option(
    "--shutdown-timeout",
    type=float,
    envvar="PGTASQ_SHUTDOWN_TIMEOUT",
    help="Seconds running tasks get to finish after a signal, >= 0 [default: the consumer's].",
)
@env_option(
    "--burst",
    is_flag=True,
    envvar="PGTASQ_BURST",
    help="Run the ready tasks, then exit.",
)
@env_option(
    "--scheduler",
    "scheduler_app",
    envvar="PGTASQ_SCHEDULER_APP",
    help="Also run this module:scheduler's cron entries in the worker process.",
)
@env_option(
    "--listen-dsn",
    envvar="PGTASQ_LISTEN_DSN",
    help="A direct connection (not through PgBouncer) for LISTEN [default: --dsn; through a "
    "transaction-mode PgBouncer the worker then polls].",
)
@_prepare_option
@_cli_observe.metrics_port_options
@click.option("--metrics-child", is_flag=True, hidden=True)  # a child of --processes N
@click.pass_obj
def worker(
    settings: RunSettings,
    app: str,
    processes: int,
    concurrency: int | None,
    batch_size: int | None,
    queues: str | None,
    strict: bool | None,
    lease: float | None,
    heartbeat_interval: float | None,
    rescue_interval: float | None,
    shutdown_timeout: float | None,
    burst: bool,
    scheduler_app: str | None,
    listen_dsn: str | None,
    prepare: bool,
    metrics_port: int | None,
    metrics_host: str,
    metrics_child: bool,
) -> None:
    """Run the handlers of APP (module:consumer) until SIGINT/SIGTERM.

    The first signal stops claiming and waits for running tasks (then hands the rest
    back); a second one stops at once. Exit code 0 after a clean stop; 1 when a background
    loop of the worker (heartbeat, flush, …) stopped on an error and the worker with it; 2
    for an invalid option; 78 when the database cannot be used as configured (a wrong
    password, a schema not migrated, a missing privilege, a read-only server), which no
    restart fixes. A database that is down is waited for.
    """
    settings.setup_logging()
    _supervisor.while_starting()
    with command_errors():
        consumer = _load_consumer(app)
    options = {
        "concurrency": concurrency,
        "batch_size": batch_size,
        "queues": queues,
        "strict": strict,
        "lease": lease,
        "heartbeat_interval": heartbeat_interval,
        "rescue_interval": rescue_interval,
        "shutdown_timeout": shutdown_timeout,
    }
    try:
        consumer.configure(**options, listen_dsn=listen_dsn, prepare=None if prepare else False)
    except ConfigurationError as exc:
        click.echo(f"error: {first_line(exc)}", err=True)
        sys.exit(2)
    with command_errors():
        with settings.database(quiet=True) as dsn:
            if processes > 1:
                schema = settings.schema if settings.schema_given else consumer.schema
                _cli_boundary.check_database(dsn, schema)
                child = [sys.executable, "-m", "pgtasq.cli", "worker", app, "--processes", "1"]
                for name, value in options.items():
                    if name != "strict" and value is not None:
                        child += ["--" + name.replace("_", "-"), str(value)]
                if scheduler_app is not None:
                    child += ["--scheduler", scheduler_app]
                if strict is not None:
                    child.append("--strict" if strict else "--weighted")
                if not prepare:
                    child.append("--no-prepare")
                child += ["--log-level", settings.log_level, "--log-format", settings.log_format]
                child += ["--burst"] if burst else []
                child += ["--metrics-child"] if metrics_port is not None else []
                env = {**os.environ, "PGTASQ_DSN": dsn}
                if listen_dsn:  # in the environment, not on command lines others can read
                    env["PGTASQ_LISTEN_DSN"] = listen_dsn
                if settings.schema_given:
                    env["PGTASQ_SCHEMA"] = settings.schema
                with _cli_observe.supervisor_metrics(
                    dsn=dsn, schema=settings.schema, host=metrics_host, port=metrics_port, env=env
                ) as on_exit:
                    code = _supervisor.supervise(
                        child,
                        processes,
                        env,
                        burst=burst,
                        on_exit=on_exit,
                        shutdown_timeout=consumer.settings.shutdown_timeout,
                    )
                sys.exit(code)
            if settings.schema_given:
                consumer.schema = settings.schema
            sched = _load_scheduler(scheduler_app) if scheduler_app else None
            if sched is not None:
                # Checked first, so that what no retry fixes is one line, not a thread's too.
                _cli_boundary.check_database(dsn, consumer.schema)
                sched.bind(dsn, schema=consumer.schema, prepare=prepare)
                sched.start()
            try:
                with _cli_observe.worker_metrics(
                    consumer,
                    dsn=dsn,
                    schema=consumer.schema,
                    host=metrics_host,
                    port=metrics_port,
                    child=metrics_child,
                ):
                    counts = consumer.run(dsn, burst=burst)
            finally:
                if sched is not None:
                    # Bounded like the worker's own teardown: a pass stuck on the database
                    # must not keep the process alive (its thread is a daemon).
                    sched.stop(timeout=TEARDOWN_MARGIN)
                    sched.close()
        if burst:
            click.echo(json.dumps(dataclasses.asdict(counts)))


COMMANDS = (scheduler, worker)
