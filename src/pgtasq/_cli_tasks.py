"""The ``pgtasq`` commands about tasks: ``tasks list|get|cancel|retry|delete|run`` and
``enqueue``.

Added to the ``cli`` group by `pgtasq.cli` (through `pgtasq._cli_admin.COMMANDS`). They
hold no logic: each turns its options into a call of `Client` or `Producer` on one
connection (`pgtasq._cli_boundary`) and prints the result (`pgtasq._cli_output`): aligned
columns, or with ``--json`` JSON objects or lists of them (ISO 8601 datetimes, durations in
seconds).

Exit codes: 0 success, 1 the operation failed (one ``error:`` line on stderr per failure),
2 bad usage.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import click

from pgtasq import _cli_output as output
from pgtasq._cli_boundary import CommandSettings, F, connection, failures, first_line, json_option
from pgtasq._client_ops import BULK_BATCH_DEFAULT, TaskPage
from pgtasq.client import Client
from pgtasq.errors import PgtasqError
from pgtasq.filters import (
    COUNT_EXACT_MAX,
    LIMIT_DEFAULT,
    ORDER_FIELDS,
    STATUSES,
    Cursor,
    TaskFilter,
)
from pgtasq.models import MAX_ATTEMPTS_DEFAULT, PRIORITY_DEFAULT, QUEUE_DEFAULT, TaskInfo
from pgtasq.producer import Producer

# -- options --------------------------------------------------------------------------------


def _timestamp(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 option; without an offset, local time."""
    if value is None:
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):  # fromisoformat takes "Z" from Python 3.11 only
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
        # local time: year 1 east of UTC has no UTC time (OverflowError)
        return when if when.tzinfo is not None else when.astimezone()
    except (ValueError, OverflowError):
        raise click.BadParameter(
            f"{value!r} is not ISO 8601, e.g. 2025-05-01T12:00:00+00:00", ctx, param
        ) from None


def _json_value(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", ctx, param) from None
    except RecursionError:
        raise click.BadParameter("nested too deeply", ctx, param) from None


def _filter_options(envvar_prefix: str, *, page: bool) -> Callable[[F], F]:
    """The TaskFilter options; the command receives ``task_filter``, already built."""

    def env(name: str) -> dict[str, Any]:
        return {"envvar": f"{envvar_prefix}_{name}", "show_envvar": True}

    options = [
        click.option(
            "--status",
            "statuses",
            multiple=True,
            help=f"Only tasks with this status (repeatable): {', '.join(STATUSES)}.",
            **env("STATUS"),
        ),
        # Deprecated spelling of --status, kept working (with a warning) and out of --help.
        click.option("--state", "states", multiple=True, hidden=True, **env("STATE")),
        click.option("--type", "types", multiple=True, help="Only this task type.", **env("TYPE")),
        click.option("--queue", "queues", multiple=True, help="Only this queue.", **env("QUEUE")),
        click.option("--id", "ids", multiple=True, type=int, help="Only this id.", **env("ID")),
        click.option(
            "--created-after",
            metavar="ISO-8601",
            callback=_timestamp,
            help="Created at or after this time.",
            **env("CREATED_AFTER"),
        ),
        click.option(
            "--created-before",
            metavar="ISO-8601",
            callback=_timestamp,
            help="Created before this time.",
            **env("CREATED_BEFORE"),
        ),
    ]
    if page:
        options += [
            click.option(
                "--order",
                default="id",
                help=f"Order by: {', '.join(ORDER_FIELDS)}.",
                **env("ORDER"),
            ),
            click.option("--desc", is_flag=True, help="Descending order.", **env("DESC")),
            click.option(
                "--limit", default=LIMIT_DEFAULT, type=int, help="At most N tasks.", **env("LIMIT")
            ),
            click.option("--offset", default=0, type=int, help="Skip N tasks.", **env("OFFSET")),
            click.option(
                "--after",
                metavar="CURSOR",
                help="Start after this cursor (what the previous page printed as next).",
                **env("AFTER"),
            ),
        ]

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            with failures():
                if states := kwargs.pop("states"):
                    click.echo("warning: --state is deprecated: use --status", err=True)
                task_filter = (
                    TaskFilter()
                    .statuses(*kwargs.pop("statuses"), *states)
                    .types(*kwargs.pop("types"))
                    .queues(*kwargs.pop("queues"))
                    .ids(*kwargs.pop("ids"))
                )
                if (after := kwargs.pop("created_after")) is not None:
                    task_filter = task_filter.created_after(after)
                if (before := kwargs.pop("created_before")) is not None:
                    task_filter = task_filter.created_before(before)
                if page:
                    order = kwargs.pop("order")
                    task_filter = (
                        task_filter.order_by(order, "desc" if kwargs.pop("desc") else "asc")
                        .limit(kwargs.pop("limit"))
                        .offset(kwargs.pop("offset"))
                    )
                    if (cursor := kwargs.pop("after")) is not None:
                        task_filter = task_filter.after(Cursor.from_text(cursor, order))
            return f(*args, task_filter=task_filter, **kwargs)

        for option in reversed(options):
            command = option(command)
        return command  # type: ignore[return-value]

    return decorate


# -- tasks ----------------------------------------------------------------------------------


@click.group()
def tasks() -> None:
    """List, show, cancel, retry, delete and run tasks."""


def _total(page: TaskPage) -> str:
    return f"{page.total}" if page.total_exact else f"about {page.total}"


@tasks.command("list")
@_filter_options("PGTASQ_TASKS_LIST", page=True)
@click.option(
    "--count",
    "exact_count",
    is_flag=True,
    envvar="PGTASQ_TASKS_LIST_COUNT",
    show_envvar=True,
    help=f"Count every matching task (by default: exact up to {COUNT_EXACT_MAX}, "
    "then the planner's estimate).",
)
@click.option(
    "--full",
    is_flag=True,
    envvar="PGTASQ_TASKS_LIST_FULL",
    show_envvar=True,
    help="With --json: whole payloads, results and errors, instead of the first 200 "
    "characters of payload and result (payload_preview, result_preview) and the latest error.",
)
@json_option
@click.pass_obj
def tasks_list(
    settings: CommandSettings,
    task_filter: TaskFilter,
    exact_count: bool,
    full: bool,
    as_json: bool,
) -> None:
    """List the tasks the filters select (all of them without filters), a page at a time.

    Reads only what it prints: previews of payloads and results (`tasks get` shows a whole
    task), unless --json --full. The next page: --after the cursor the page ends with
    (--offset works too, slower on large tables). --json prints {"tasks": [...], "total",
    "total_exact", "next_cursor"}.
    """
    with connection(settings) as conn:
        client = Client(schema=settings.schema)
        page = client.list_tasks(
            task_filter,
            count="exact" if exact_count else "auto",
            conn=conn,
            full=full and as_json,
        )
    cursor = page.next_cursor.to_text() if page.next_cursor is not None else None
    if as_json:
        output.print_json(
            {
                "tasks": page.tasks,
                "total": page.total,
                "total_exact": page.total_exact,
                "next_cursor": cursor,
            }
        )
        return
    output.task_table(page.tasks)
    first = task_filter.offset_rows
    if cursor is None:
        more = ""
    elif first:
        more = f"; next page: --offset {first + len(page.tasks)}"
    else:
        more = f"; next page: --after {cursor}"
    click.echo(
        f"({len(page.tasks)} of {_total(page)} tasks"
        + ("" if page.total_exact else " (an estimate; --count counts them)")
        + (f", from offset {first}" if first else "")
        + more
        + ")"
    )


@tasks.command("get")
@click.argument("task_id", type=int)
@json_option
@click.pass_obj
def tasks_get(settings: CommandSettings, task_id: int, as_json: bool) -> None:
    """Show everything about one task."""
    with connection(settings) as conn:
        client = Client(schema=settings.schema)
        task = client.get_task(task_id, conn=conn)
    if as_json:
        output.print_json(task)
    else:
        output.task_details(task)


def _change_by_ids(
    settings: CommandSettings, action: str, done: str, task_ids: Sequence[int], as_json: bool
) -> None:
    """Each id on its own: a failure is reported and the others still run; then exit 1."""
    changed: list[TaskInfo] = []
    failed = False
    with connection(settings) as conn:
        change: Callable[..., TaskInfo] = getattr(Client(schema=settings.schema), f"{action}_task")
        for task_id in task_ids:
            try:
                info = change(task_id, conn=conn)
            except PgtasqError as exc:
                click.echo(f"error: {first_line(exc)}", err=True)
                failed = True
                continue
            changed.append(info)
            if not as_json:
                status = info.status.value
                after = {
                    "cancel": "",
                    "retry": f", now {status}",
                    "delete": f", was {status}",
                    "run": " now",
                }
                click.echo(f"task {info.id}: {done}{after[action]}")
    if as_json:
        output.print_json(changed)
    if failed:
        sys.exit(1)


def _change_all(
    settings: CommandSettings,
    action: str,
    done: str,
    task_filter: TaskFilter,
    batch_size: int,
    as_json: bool,
    confirmed: bool,
) -> None:
    """Every task the filter selects, in batches that each commit; progress on stderr."""
    progress = output.Progress(action)
    with connection(settings) as conn:
        client = Client(schema=settings.schema)
        page = client.list_tasks(task_filter.limit(1), conn=conn)
        if not confirmed:
            raise click.UsageError(
                f"this deletes every task the filters select ({_total(page)} now); "
                "add --yes to confirm"
            )
        progress.total = page.total  # those that match now (past COUNT_EXACT_MAX, an estimate)
        change: Callable[..., int] = getattr(client, f"{action}_tasks")
        try:
            count = change(task_filter, conn=conn, batch_size=batch_size, progress=progress)
        finally:
            progress.done()
    if as_json:
        output.print_json({"action": action, "count": count})
    else:
        click.echo(f"{done} {count} task{'' if count == 1 else 's'}")


def _yes_option(envvar_prefix: str, wanted: bool) -> Callable[[F], F]:
    if not wanted:
        return lambda f: f
    return click.option(
        "--yes",
        is_flag=True,
        envvar=f"{envvar_prefix}_YES",
        show_envvar=True,
        help="Confirm --all-matching (required with it).",
    )


def _change_command(action: str, done: str, summary: str) -> None:
    """Add ``tasks cancel|retry|delete|run``: by id, or every task the filters select."""
    prefix = f"PGTASQ_TASKS_{action.upper()}"
    confirm = action == "delete"

    @click.argument("task_ids", metavar="[ID]...", nargs=-1, type=int)
    @click.option(
        "--all-matching",
        is_flag=True,
        envvar=f"{prefix}_ALL_MATCHING",
        show_envvar=True,
        help=f"{action.capitalize()} every task the filters select, instead of IDs.",
    )
    @_yes_option(prefix, confirm)
    @_filter_options(prefix, page=False)
    @click.option(
        "--batch-size",
        default=BULK_BATCH_DEFAULT,
        type=click.IntRange(min=1),
        envvar=f"{prefix}_BATCH_SIZE",
        show_envvar=True,
        help="With --all-matching: tasks changed per statement (each commits).",
    )
    @json_option
    @click.pass_obj
    def command(
        settings: CommandSettings,
        task_ids: tuple[int, ...],
        all_matching: bool,
        task_filter: TaskFilter,
        batch_size: int,
        as_json: bool,
        yes: bool = False,
    ) -> None:
        if all_matching and task_ids:
            raise click.UsageError("give IDs or --all-matching, not both")
        if not all_matching:
            if task_filter != TaskFilter():
                raise click.UsageError("filters (--status, --type, ...) need --all-matching")
            if not task_ids:
                raise click.UsageError("give task IDs, or --all-matching with filters")
            _change_by_ids(settings, action, done, task_ids, as_json)
        else:
            _change_all(
                settings, action, done, task_filter, batch_size, as_json, yes or not confirm
            )

    command.__doc__ = f"""{summary}

    By IDs, or with --all-matching every task the filters select, in batches that each
    commit, with progress on stderr. Exit code 1 if any ID failed (the others are done).
    """
    tasks.command(action)(command)


_change_command(
    "cancel", "cancelled", "Cancel tasks (pending, failed, or running: its handler stops)."
)
_change_command("retry", "retried", "Run failed or cancelled tasks again, now.")
_change_command("delete", "deleted", "Delete tasks that are not running.")
_change_command(
    "run", "made due", "Run pending tasks now that wait for their run_at (scheduled or retry)."
)


# -- enqueue --------------------------------------------------------------------------------


@click.command()
@click.argument("task_type", metavar="TYPE")
@click.option(
    "--payload",
    metavar="JSON",
    callback=_json_value,
    envvar="PGTASQ_ENQUEUE_PAYLOAD",
    show_envvar=True,
    show_default="null",
    help="The task's payload, as JSON.",
)
@click.option(
    "--queue",
    default=QUEUE_DEFAULT,
    envvar="PGTASQ_ENQUEUE_QUEUE",
    show_envvar=True,
    help="The queue to put it in.",
)
@click.option(
    "--priority",
    default=PRIORITY_DEFAULT,
    type=int,
    envvar="PGTASQ_ENQUEUE_PRIORITY",
    show_envvar=True,
    help="Higher runs first.",
)
@click.option(
    "--delay",
    type=float,
    envvar="PGTASQ_ENQUEUE_DELAY",
    show_envvar=True,
    show_default="none",
    help="Seconds before it may run.",
)
@click.option(
    "--max-attempts",
    default=MAX_ATTEMPTS_DEFAULT,
    type=int,
    envvar="PGTASQ_ENQUEUE_MAX_ATTEMPTS",
    show_envvar=True,
    help="Runs before it fails for good.",
)
@click.option(
    "--idempotency-key",
    envvar="PGTASQ_ENQUEUE_IDEMPOTENCY_KEY",
    show_envvar=True,
    help="If a task has this key already, return it instead of enqueueing another.",
)
@click.option(
    "--unique-key",
    envvar="PGTASQ_ENQUEUE_UNIQUE_KEY",
    show_envvar=True,
    help="If a pending or running task holds this key, return it instead (docs/unique.md).",
)
@click.option(
    "--unique-for",
    type=float,
    envvar="PGTASQ_ENQUEUE_UNIQUE_FOR",
    show_envvar=True,
    show_default="none",
    help="Seconds from now during which the key stays held, even once the task is final.",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    callback=lambda ctx, param, value: _headers(ctx, param, value),
    envvar="PGTASQ_ENQUEUE_HEADER",
    show_envvar=True,
    help="A header of the task (repeat for more; the variable: space-separated).",
)
@json_option
@click.pass_obj
def enqueue(
    settings: CommandSettings,
    task_type: str,
    payload: Any,
    queue: str,
    priority: int,
    delay: float | None,
    max_attempts: int,
    idempotency_key: str | None,
    unique_key: str | None,
    unique_for: float | None,
    headers: dict[str, str] | None,
    as_json: bool,
) -> None:
    """Enqueue one task of TYPE and print it (created: no if its idempotency key or its unique
    key was taken)."""
    with connection(settings) as conn:
        task = Producer(schema=settings.schema).enqueue(
            task_type,
            payload,
            conn=conn,
            queue=queue,
            priority=priority,
            delay=delay,
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
            unique_key=unique_key,
            unique_for=unique_for,
            headers=headers,
        )
    if as_json:
        output.print_json(task)
        return
    if task.created:
        click.echo(f"task {task.id}: enqueued (created: yes)")
    else:
        click.echo(f"task {task.id}: exists already, {task.status.value} (created: no)")
    output.task_details(task)


def _headers(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> dict[str, str] | None:
    headers = {}
    for item in value:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", ctx, param)
        headers[name] = text
    return headers or None


COMMANDS: tuple[click.Command, ...] = (tasks, enqueue)
