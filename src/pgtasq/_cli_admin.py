"""The ``pgtasq`` commands about the rest of the system: ``queues``, ``workers``,
``clean``, ``stats``, ``events`` and ``schedules``.

`COMMANDS` lists them with the task commands of `pgtasq._cli_tasks` (``tasks``,
``enqueue``); `pgtasq.cli` adds them all to the ``cli`` group. They hold no logic: each
turns its options into a call of `Client` on one connection (`pgtasq._cli_boundary`) and
prints the result (`pgtasq._cli_output`): aligned columns, or with ``--json`` JSON objects
or lists of them (ISO 8601 datetimes, durations in seconds).

Exit codes: 0 success, 1 the operation failed (one ``error:`` line on stderr), 2 bad usage.
"""

from __future__ import annotations

import dataclasses
import logging

import click

from pgtasq import _cli_output as output
from pgtasq import _cli_tasks
from pgtasq._cli_boundary import CommandSettings, connection, env_option, failures, json_option
from pgtasq.client import RETENTION_DEFAULT, Client, DailyStats

log = logging.getLogger("pgtasq.cli")

HISTORY_DAYS_DEFAULT = 7  # Client.queue_history's default


# -- queues ---------------------------------------------------------------------------------


@click.group()
def queues() -> None:
    """List queues, pause and resume them, and show their daily history."""


@queues.command("list")
@json_option
@click.pass_obj
def queues_list(settings: CommandSettings, as_json: bool) -> None:
    """Every queue with its counts by state, latency, and processed/failed counts.

    LATENCY: how long the oldest ready task has waited. TODAY and TOTAL: processed/failed.
    """
    with connection(settings) as conn:
        client = Client(schema=settings.schema)
        found = client.list_queues(conn=conn)
    if as_json:
        output.print_json(found)
        return
    output.queue_table(found)


def _pause_command(paused: bool) -> click.Command:
    verb = "pause" if paused else "resume"

    @click.argument("name")
    @env_option(
        "--create",
        is_flag=True,
        envvar=f"PGTASQ_QUEUES_{verb.upper()}_CREATE",
        help="Also for a queue that does not exist yet (no task, never paused).",
    )
    @json_option
    @click.pass_obj
    def command(settings: CommandSettings, name: str, create: bool, as_json: bool) -> None:
        with connection(settings) as conn:
            client = Client(schema=settings.schema)
            change = client.pause_queue if paused else client.resume_queue
            change(name, conn=conn, create=create)
        if as_json:
            output.print_json({"queue": name, "paused": paused})
        else:
            click.echo(output.printable(f"queue {name}: {'paused' if paused else 'resumed'}"))

    command.__doc__ = (
        "Stop workers from claiming NAME's tasks (running ones finish)."
        if paused
        else "Let workers claim NAME's tasks again."
    )
    return queues.command(verb)(command)


_pause_command(True)
_pause_command(False)


@queues.command("history")
@click.argument("name", required=False)
@env_option(
    "--days",
    default=HISTORY_DAYS_DEFAULT,
    type=click.IntRange(min=1),
    envvar="PGTASQ_QUEUES_HISTORY_DAYS",
    help="How many days back, today included.",
)
@json_option
@click.pass_obj
def queues_history(settings: CommandSettings, name: str | None, days: int, as_json: bool) -> None:
    """Finished attempts per day and outcome, for queue NAME or every queue."""
    with connection(settings) as conn:
        client = Client(schema=settings.schema)
        stats = client.queue_history(name, days=days, conn=conn)
    if as_json:
        output.print_json(stats)
    else:
        output.dataclass_table(DailyStats, stats)


# -- workers, clean, stats, events, schedules -----------------------------------------------


@click.command()
@json_option
@click.pass_obj
def workers(settings: CommandSettings, as_json: bool) -> None:
    """The registered workers and the ids of the tasks each is running."""
    with connection(settings) as conn:
        client = Client(schema=settings.schema)
        found = client.list_workers(conn=conn)
    if as_json:
        output.print_json(found)
        return
    output.worker_table(found)


@click.command()
@env_option(
    "--retention",
    type=click.FloatRange(min=0, min_open=True),
    default=RETENTION_DEFAULT,
    show_default=True,
    envvar="PGTASQ_CLEAN_RETENTION",
    help="Seconds to keep finished tasks that have no retention of their own.",
)
@env_option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=1000,
    show_default=True,
    envvar="PGTASQ_CLEAN_BATCH_SIZE",
    help="Tasks deleted per statement.",
)
@json_option
@click.pass_obj
def clean(settings: CommandSettings, retention: float, batch_size: int, as_json: bool) -> None:
    """Delete finished tasks past their retention (workers also do this every minute)."""
    progress = output.Progress("clean")
    with connection(settings) as conn:
        client = Client(schema=settings.schema)
        try:
            count = client.clean(
                retention=retention, batch_size=batch_size, conn=conn, progress=progress
            )
        finally:
            progress.done()
    if as_json:
        output.print_json({"action": "clean", "count": count})
    else:
        click.echo(f"deleted {count} finished task{'' if count == 1 else 's'}")


@click.command()
@json_option
@click.pass_obj
def stats(settings: CommandSettings, as_json: bool) -> None:
    """Totals since the schema was created, and the tasks per state now."""
    with connection(settings) as conn:
        snapshot = Client(schema=settings.schema).stats(conn=conn)
    if as_json:
        output.print_json({**dataclasses.asdict(snapshot), "started": snapshot.started})
        return
    rows = [(name, value) for name, value in dataclasses.asdict(snapshot).items()]
    rows.insert(1, ("started", snapshot.started))
    output.table("STAT VALUE", rows)


@click.command()
@env_option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    envvar="PGTASQ_EVENTS_TIMEOUT",
    help="Stop after this many seconds without an event [default: never].",
)
@json_option
@click.pass_obj
def events(settings: CommandSettings, timeout: float | None, as_json: bool) -> None:
    """Print task events as they happen (started/completed/… need workers with events on).

    Once listening, it says so on stderr ("listening for task events"). While the database
    is away it reconnects (stderr says when it goes and comes back). These are log lines:
    --log-level, --log-format. An error no retry fixes ends it with one line.
    """
    settings.setup_logging()  # the outage lines go to stderr; stdout carries only the events
    with (
        failures(settings.schema),
        settings.database(quiet=True) as dsn,
        Client(dsn, schema=settings.schema) as client,
        client.events(timeout=timeout) as stream,
    ):
        if stream.listening:  # (not when --timeout ran out with the database away)
            # From here on nothing committed is missed: scripts may wait for this line.
            log.info("listening for task events in schema %s", settings.schema)
        for event in stream:
            if as_json:
                output.print_json(dataclasses.asdict(event))
            else:
                what = ",".join(event.queues) if event.kind == "enqueued" else event.task_ids
                click.echo(output.printable(f"{event.kind:<10} {event.count:>5} {what}"))


@click.command()
@json_option
@click.pass_obj
def schedules(settings: CommandSettings, as_json: bool) -> None:
    """Scheduler entries: cron, time zone, last and next run, the tasks each enqueued."""
    with connection(settings) as conn:
        found = Client(schema=settings.schema).list_schedules(conn=conn)
    if as_json:
        output.print_json(found)
        return
    output.table(
        "ID CRON TIMEZONE TYPE LAST_RUN NEXT_RUN TASKS RECENT",
        [
            (
                s.id,
                s.cron,
                s.timezone,
                s.task_type,
                s.last_run_at.isoformat(timespec="seconds") if s.last_run_at else "-",
                s.next_run_at.isoformat(timespec="seconds") if s.next_run_at else "-",
                len(s.task_ids),
                ",".join(str(i) for i in s.task_ids[:5]) or "-",
            )
            for s in found
        ],
    )


COMMANDS: tuple[click.Command, ...] = (
    _cli_tasks.tasks,
    queues,
    workers,
    _cli_tasks.enqueue,
    clean,
    stats,
    events,
    schedules,
)
