"""``pgtasq tasks|queues|workers|enqueue`` run as subprocesses: output, JSON, exit codes.

Each test has its own migrated schema. Tasks are set up in-process with `Producer` (and a
`Consumer` where a task has to run), and every check of the CLI is a real ``pgtasq``
process, so what is tested is what a user types.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest

from pgtasq import Consumer, Producer, SkipRetry, Task, TaskContext
from pgtasq._cli_admin import COMMANDS
from pgtasq.filters import COUNT_EXACT_MAX
from tests.acceptance.test_cli import pgtasq
from tests.conftest import count_tasks

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


@pytest.fixture
def run(pg_dsn: str, schema: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``pgtasq --dsn … --schema <the test's> ARGS``; ``env`` adds environment variables."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return pgtasq("--dsn", pg_dsn, "--schema", schema, *args, env=env)

    return run


@pytest.fixture
def producer(pg_dsn: str, schema: str) -> Iterator[Producer]:
    with Producer(pg_dsn, schema=schema) as p:
        yield p


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def as_json(out: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(out))


def failed(out: subprocess.CompletedProcess[str], message: str, code: int = 1) -> None:
    """Exit code ``code`` and one ``error:`` line on stderr that contains ``message``."""
    assert out.returncode == code, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert message in lines[0]


def rows(stdout: str) -> list[list[str]]:
    """A table's lines split into cells (the header first)."""
    return [line.split() for line in stdout.strip().splitlines()]


def test_every_option_has_an_environment_variable_shown_in_help() -> None:
    def options(command: click.Command, path: str) -> Iterator[tuple[str, click.Option]]:
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                yield path, param
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from options(sub, f"{path} {name}")

    seen = [(path, option) for command in COMMANDS for path, option in options(command, "")]
    assert len(seen) > 40
    for path, option in seen:
        assert isinstance(option.envvar, str) and option.envvar.startswith("PGTASQ_"), path
        assert option.show_envvar, (path, option.name)
    top = ok(pgtasq("--help"))
    assert all(name in top for name in ("tasks", "queues", "workers", "enqueue", "worker"))
    help_text = ok(pgtasq("tasks", "cancel", "--help"))
    assert "PGTASQ_TASKS_CANCEL_STATUS" in help_text and "--all-matching" in help_text


def test_enqueue_then_get(run: Callable[..., Any], pg_dsn: str, schema: str) -> None:
    first = ok(
        run(
            "enqueue",
            "email.send",
            "--queue=mail",
            "--priority=5",
            "--max-attempts=3",
            "--idempotency-key=welcome-7",
            env={"PGTASQ_ENQUEUE_PAYLOAD": '{"to": "ann@example.com"}'},
        )
    )
    assert first.startswith("task ") and "enqueued (created: yes)" in first.splitlines()[0]
    task_id = int(first.split()[1].rstrip(":"))
    again = as_json(run("enqueue", "email.send", "--idempotency-key=welcome-7", "--json"))
    assert again["id"] == task_id and again["created"] is False

    shown = as_json(run("tasks", "get", str(task_id), "--json"))
    assert shown["payload"] == {"to": "ann@example.com"}
    assert (shown["type"], shown["queue"], shown["status"]) == ("email.send", "mail", "pending")
    assert (shown["priority"], shown["max_attempts"]) == (5, 3)
    assert shown["idempotency_key"] == "welcome-7"
    assert datetime.fromisoformat(shown["created_at"]).tzinfo is not None

    details = ok(run("tasks", "get", str(task_id)))
    assert "payload:" in details and '{"to": "ann@example.com"}' in details
    assert any(line.split() == ["status:", "pending"] for line in details.splitlines())

    later = as_json(run("enqueue", "report", "--delay=3600", "--json"))
    run_at, created_at = (datetime.fromisoformat(later[k]) for k in ("run_at", "created_at"))
    assert timedelta(seconds=3590) < run_at - created_at < timedelta(seconds=3610)
    assert later["payload"] is None
    assert count_tasks(pg_dsn, schema) == 2


def test_enqueue_with_headers(run: Callable[..., Any], pg_dsn: str, schema: str) -> None:
    shown = as_json(run("enqueue", "t", "--header", "tenant=acme", "--header=note=a=b", "--json"))
    assert shown["headers"] == {"tenant": "acme", "note": "a=b"}
    assert as_json(run("tasks", "get", str(shown["id"]), "--json"))["headers"] == shown["headers"]
    failed(run("enqueue", "t", "--header", "no-equals-sign"), "is not NAME=VALUE", code=2)
    failed(run("enqueue", "t", "--header", "=v"), "is not NAME=VALUE", code=2)
    failed(run("enqueue", "t", "--header", "x" * 300 + "=v"), "a name must be 1 to 255")
    assert count_tasks(pg_dsn, schema) == 1


def test_enqueue_with_a_unique_key(run: Callable[..., Any], pg_dsn: str, schema: str) -> None:
    first = as_json(run("enqueue", "t", "--unique-key=refresh:42", "--unique-for=3600", "--json"))
    assert first["unique_key"] == "refresh:42" and first["created"] is True
    until, created_at = (datetime.fromisoformat(first[k]) for k in ("unique_until", "created_at"))
    assert until - created_at == timedelta(hours=1)
    again = ok(run("enqueue", "t", env={"PGTASQ_ENQUEUE_UNIQUE_KEY": "refresh:42"}))
    assert f"task {first['id']}: exists already, pending (created: no)" in again
    shown = ok(run("tasks", "get", str(first["id"])))
    assert any(line.split() == ["unique_key:", "refresh:42"] for line in shown.splitlines())
    failed(run("enqueue", "t", "--unique-for=60"), "unique_for: needs a unique_key")
    assert count_tasks(pg_dsn, schema) == 1


def test_tasks_get_shows_a_bounded_errors_history_and_odd_entries(
    run: Callable[..., Any], pg_dsn: str, schema: str, producer: Producer
) -> None:
    """The history keeps the first entry and the latest; the details say how many were
    dropped between them. An entry that is not an object (written by raw SQL) is shown as
    it is instead of a traceback."""
    task_id = producer.enqueue(Task("t")).id
    errors = [
        {"attempt": 1, "error": "ValueError", "message": "first"},
        {"attempt": 12, "error": "ValueError", "message": "twelfth", "dropped_before": 10},
        "odd entry",
    ]
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(
            f"UPDATE {schema}.tasks SET errors = %s::jsonb WHERE id = %s",
            (json.dumps(errors), task_id),
        )
    details = ok(run("tasks", "get", str(task_id))).splitlines()
    start = details.index("errors:          3")
    assert details[start + 1 :] == [
        "  attempt 1 at ?: ValueError: first",
        "  … 10 earlier entries dropped",
        "  attempt 12 at ?: ValueError: twelfth",
        "  'odd entry'",
    ]


def test_enqueue_refuses_bad_input_and_enqueues_nothing(
    run: Callable[..., Any], pg_dsn: str, schema: str
) -> None:
    bad_json = run("enqueue", "x", "--payload", "{not json")
    assert bad_json.returncode == 2
    assert "Invalid value for '--payload'" in bad_json.stderr
    assert "not valid JSON" in bad_json.stderr
    failed(run("enqueue", "x", "--priority=500"), "priority: must be an integer from -100 to 100")
    assert count_tasks(pg_dsn, schema) == 0


def test_tasks_list_filters_orders_and_pages(run: Callable[..., Any], producer: Producer) -> None:
    mail = [producer.enqueue("email", {"n": n}, queue="mail", priority=n) for n in range(3)]
    reports = [producer.enqueue("report", None) for _ in range(2)]
    later = producer.enqueue("report", None, delay=3600)

    table = rows(ok(run("tasks", "list")))
    assert table[0][:4] == ["ID", "QUEUE", "TYPE", "STATUS"]
    assert [int(row[0]) for row in table[1:-1]] == [t.id for t in [*mail, *reports, later]]
    assert table[-1] == ["(6", "of", "6", "tasks)"]

    by_priority = as_json(
        run("tasks", "list", "--queue=mail", "--order=priority", "--desc", "--json")
    )
    assert [t["id"] for t in by_priority["tasks"]] == [t.id for t in reversed(mail)]
    assert (by_priority["total"], by_priority["total_exact"]) == (3, True)
    assert by_priority["next_cursor"] is None
    scheduled = as_json(run("tasks", "list", "--status=scheduled", "--json"))
    assert [t["id"] for t in scheduled["tasks"]] == [later.id]
    old_spelling = run("tasks", "list", "--state=scheduled", "--json")  # deprecated, still works
    assert json.loads(old_spelling.stdout) == scheduled
    assert old_spelling.stderr.strip() == "warning: --state is deprecated: use --status"
    typed = as_json(run("tasks", "list", "--json", env={"PGTASQ_TASKS_LIST_TYPE": "report"}))
    assert [t["id"] for t in typed["tasks"]] == [t.id for t in [*reports, later]]
    future = (datetime.now().astimezone() + timedelta(hours=1)).isoformat()
    empty = as_json(run("tasks", "list", "--created-after", future, "--json"))
    assert empty == {"tasks": [], "total": 0, "total_exact": True, "next_cursor": None}

    page = ok(run("tasks", "list", "--limit=2", "--offset=2"))
    assert [int(row[0]) for row in rows(page)[1:-1]] == [mail[2].id, reports[0].id]
    assert page.strip().endswith("(2 of 6 tasks, from offset 2; next page: --offset 4)")


@pytest.mark.parametrize("order", ["id", "created_at", "priority"])
def test_tasks_list_pages_with_after(
    run: Callable[..., Any], producer: Producer, order: str
) -> None:
    """Walk every page with the cursor each page prints, human and --json: every task once,
    in order."""
    tasks = [producer.enqueue("job", n, priority=n % 3) for n in range(7)]
    by_priority = sorted(tasks, key=lambda t: (t.priority, t.id))
    expected = [t.id for t in (by_priority if order == "priority" else tasks)]
    args = ("tasks", "list", f"--order={order}", "--limit=3")

    seen: list[int] = []
    cursors: list[str] = []
    for _ in range(4):
        page = as_json(run(*args, "--json", *[f"--after={c}" for c in cursors[-1:]]))
        seen += [t["id"] for t in page["tasks"]]
        assert (page["total"], page["total_exact"]) == (7, True)
        if page["next_cursor"] is None:
            break
        cursors.append(page["next_cursor"])
    assert seen == expected
    assert len(cursors) == 2

    human: list[int] = []
    last = ""
    for cursor in [None, *cursors]:
        out = ok(run(*args, *([f"--after={cursor}"] if cursor else [])))
        human += [int(row[0]) for row in rows(out)[1:-1]]
        last = out.strip().splitlines()[-1]
        if cursor != cursors[-1]:
            assert last.endswith(f"; next page: --after {cursors[len(human) // 3 - 1]})")
    assert human == expected
    assert last == "(1 of 7 tasks)"


def test_tasks_list_estimates_a_large_total_and_counts_on_request(
    run: Callable[..., Any], producer: Producer
) -> None:
    n = COUNT_EXACT_MAX + 100
    producer.enqueue_many([Task("job", i) for i in range(n)])
    last = ok(run("tasks", "list", "--limit=1")).strip().splitlines()[-1]
    assert last.startswith("(1 of about ")
    assert " tasks (an estimate; --count counts them); next page: --after " in last
    counted = ok(run("tasks", "list", "--limit=1", "--count")).strip().splitlines()[-1]
    assert counted.startswith(f"(1 of {n} tasks; next page: --after ")
    page = as_json(run("tasks", "list", "--limit=1", "--json"))
    assert page["total_exact"] is False and page["total"] > COUNT_EXACT_MAX
    env = {"PGTASQ_TASKS_LIST_COUNT": "1"}
    exact = as_json(run("tasks", "list", "--limit=1", "--json", env=env))
    assert (exact["total"], exact["total_exact"]) == (n, True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tasks", "list", "--after=12"), "after: expected a cursor VALUE,ID"),
        (("tasks", "list", "--order=created_at", "--after=3,4"), "after: expected a cursor"),
        (("tasks", "list", "--after=3,4", "--offset=2"), "use either offset or after"),
        (("tasks", "list", "--status=bogus"), "statuses: unknown ['bogus']"),
        (("tasks", "list", "--order=payload"), "order_by: unknown field 'payload'"),
        (("tasks", "list", "--limit=0"), "limit: must be from 1 to 10000"),
        (("tasks", "get", "999"), "task 999 does not exist"),
        (("tasks", "delete", "--all-matching", "--yes", "--status=nope"), "statuses: unknown"),
        (("queues", "history", "--days=5000"), "days must be from 1 to 3650"),
    ],
)
def test_operation_errors_are_one_line_and_exit_1(
    run: Callable[..., Any], args: tuple[str, ...], message: str
) -> None:
    failed(run(*args), message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tasks", "cancel"), "give task IDs, or --all-matching"),
        (("tasks", "cancel", "1", "--all-matching"), "give IDs or --all-matching, not both"),
        (("tasks", "retry", "--status=failed"), "need --all-matching"),
        (("tasks", "get", "seven"), "'seven' is not a valid integer"),
        (("tasks", "list", "--created-after=yesterday"), "'yesterday' is not ISO 8601"),
    ],
)
def test_usage_errors_exit_2(run: Callable[..., Any], args: tuple[str, ...], message: str) -> None:
    out = run(*args)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_cancel_retry_delete_by_id(
    run: Callable[..., Any], producer: Producer, pg_dsn: str, schema: str
) -> None:
    a, b = (producer.enqueue("job", n).id for n in range(2))

    out = run("tasks", "cancel", str(a), "999", str(b))
    failed(out, "task 999 does not exist")  # the others are cancelled all the same
    assert out.stdout.splitlines() == [f"task {a}: cancelled", f"task {b}: cancelled"]
    assert count_tasks(pg_dsn, schema, status="cancelled") == 2

    retried = as_json(run("tasks", "retry", str(a), "--json"))
    assert [(t["id"], t["status"]) for t in retried] == [(a, "pending")]
    failed(run("tasks", "retry", str(a)), f"task {a} is pending already")

    assert ok(run("tasks", "delete", str(b))).strip() == f"task {b}: deleted, was cancelled"
    assert count_tasks(pg_dsn, schema) == 1


def test_run_now_by_id_and_by_filter(
    run: Callable[..., Any], producer: Producer, pg_dsn: str, schema: str
) -> None:
    later, due = (producer.enqueue("job", n, delay=3600).id for n in range(2))
    never = producer.enqueue("job", 9).id
    producer.enqueue_many([Task("job", queue="mail", delay=3600) for _ in range(3)])

    def waiting() -> int:
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM {schema}.tasks WHERE run_at > now()")
            return int(row.fetchone()[0])  # type: ignore[index]

    out = run("tasks", "run", str(later), str(never), "999")
    assert out.returncode == 1, out.stderr
    assert out.stderr.splitlines() == [
        f"error: task {never} is pending already",
        "error: task 999 does not exist",
    ]
    assert out.stdout.splitlines() == [f"task {later}: made due now"]
    made = as_json(run("tasks", "run", str(due), "--json"))
    assert [(t["id"], t["status"]) for t in made] == [(due, "pending")]
    assert waiting() == 3

    run("tasks", "cancel", str(never))
    failed(run("tasks", "run", str(never)), f"task {never} is cancelled already")
    assert run("tasks", "run", "--status=pending").returncode == 2  # filters need --all-matching
    counted = as_json(run("tasks", "run", "--all-matching", "--queue=mail", "--json"))
    assert counted == {"action": "run", "count": 3}
    assert waiting() == 0
    assert ok(run("tasks", "run", "--all-matching")).strip() == "made due 0 tasks"


def test_bulk_operations_show_progress_and_delete_needs_yes(
    run: Callable[..., Any], producer: Producer, pg_dsn: str, schema: str
) -> None:
    producer.enqueue_many([Task("job", queue="mail") for _ in range(25)])
    producer.enqueue_many([Task("job", queue="other") for _ in range(5)])

    out = run("tasks", "cancel", "--all-matching", "--queue=mail", "--batch-size=10")
    assert ok(out).strip() == "cancelled 25 tasks"
    # Piped: plain lines with the total, at most one a second, and always the last count.
    lines = out.stderr.splitlines()
    assert (
        lines[0] == "cancel: 10 of 25 tasks (40%)" and lines[-1] == "cancel: 25 of 25 tasks (100%)"
    )
    assert set(lines) <= {f"cancel: {n} of 25 tasks ({n * 4}%)" for n in (10, 20, 25)}
    assert count_tasks(pg_dsn, schema, status="cancelled") == 25

    retried = as_json(run("tasks", "retry", "--all-matching", "--status=cancelled", "--json"))
    assert retried == {"action": "retry", "count": 25}
    assert count_tasks(pg_dsn, schema, status="pending") == 30

    unconfirmed = run("tasks", "delete", "--all-matching", "--queue=other")
    assert unconfirmed.returncode == 2
    assert "(5 now); add --yes to confirm" in unconfirmed.stderr
    assert count_tasks(pg_dsn, schema) == 30
    deleted = run(
        "tasks", "delete", "--all-matching", "--queue=other", env={"PGTASQ_TASKS_DELETE_YES": "1"}
    )
    assert ok(deleted).strip() == "deleted 5 tasks"
    assert count_tasks(pg_dsn, schema) == 25


def test_queues_pause_resume_and_history(
    run: Callable[..., Any], producer: Producer, pg_dsn: str
) -> None:
    consumer = Consumer(schema=producer.schema, queues="mail", poll_interval=0.1)

    @consumer.task("ok")
    def succeed(ctx: TaskContext) -> None:
        return None

    @consumer.task("bad")
    def fail(ctx: TaskContext) -> None:
        raise SkipRetry("no")

    for task_type in ("ok", "ok", "bad"):
        producer.enqueue(task_type, None, queue="mail")
    assert consumer.run(pg_dsn, burst=True, handle_signals=False).completed == 2
    producer.enqueue("ok", None, queue="mail")

    assert ok(run("queues", "pause", "mail")).strip() == "queue mail: paused"
    listed = as_json(run("queues", "list", "--json"))
    assert [(q["name"], q["paused"], q["pending"]) for q in listed] == [("mail", True, 1)]
    mail = listed[0]
    assert (mail["completed"], mail["failed"], mail["running"]) == (2, 1, 0)
    assert (mail["processed_today"], mail["failed_today"]) == (3, 1)
    assert isinstance(mail["latency"], float)
    table = rows(ok(run("queues", "list")))
    assert table[0][:4] == ["QUEUE", "STATE", "PENDING", "SCHEDULED"]
    assert table[0][-3:] == ["LATENCY", "TODAY", "TOTAL"]
    assert table[1][:3] == ["mail", "paused", "1"] and table[1][-2:] == ["3/1", "3/1"]
    assert as_json(run("queues", "resume", "mail", "--json")) == {"queue": "mail", "paused": False}
    assert rows(ok(run("queues", "list")))[1][:2] == ["mail", "active"]

    history = as_json(run("queues", "history", "mail", "--days=2", "--json"))
    assert [(h["queue"], h["completed"], h["failed"]) for h in history] == [("mail", 2, 1)]
    assert date.fromisoformat(history[0]["day"])
    assert as_json(run("queues", "history", "other", "--json")) == []
    table = rows(ok(run("queues", "history", env={"PGTASQ_QUEUES_HISTORY_DAYS": "7"})))
    assert table[0][:3] == ["QUEUE", "DAY", "COMPLETED"]
    assert table[1][:2] == ["mail", history[0]["day"]] and table[1][2:4] == ["2", "1"]


def test_workers_lists_running_task_ids(
    run: Callable[..., Any], producer: Producer, pg_dsn: str, schema: str
) -> None:
    consumer = Consumer(schema=schema, poll_interval=0.1)
    started = threading.Event()

    @consumer.task("slow")
    def slow(ctx: TaskContext) -> None:
        started.set()
        assert isinstance(ctx.cancelled, threading.Event)
        ctx.cancelled.wait(30)

    task_id = producer.enqueue("slow", None).id
    consumer.start(pg_dsn)
    try:
        assert started.wait(10)
        deadline = time.monotonic() + 5
        while (found := as_json(run("workers", "--json"))) and not found[0]["running"]:
            assert time.monotonic() < deadline, found  # running ids follow the claim
        assert [w["running"] for w in found] == [[task_id]]
        assert datetime.fromisoformat(found[0]["heartbeat_at"])
        table = rows(ok(run("workers")))
        assert table[0][0] == "ID" and table[1][-1] == str(task_id)

        failed(run("tasks", "delete", str(task_id)), f"task {task_id} is running; cancel it")
        assert ok(run("tasks", "cancel", str(task_id))).strip() == f"task {task_id}: cancelled"
    finally:
        consumer.stop(timeout=10)
    assert count_tasks(pg_dsn, schema, status="cancelled") == 1


def test_database_errors_are_one_line(fresh_schema: str, pg_dsn: str) -> None:
    failed(pgtasq("--dsn", UNREACHABLE, "tasks", "list"), "cannot connect to PostgreSQL")
    failed(pgtasq("--dsn", UNREACHABLE, "enqueue", "x"), "cannot connect to PostgreSQL")
    not_migrated = pgtasq("--dsn", pg_dsn, "--schema", fresh_schema, "queues", "list")
    fix = f'schema "{fresh_schema}" is not migrated (relation "{fresh_schema}.tasks" does not '
    failed(not_migrated, fix, code=78)
    assert not_migrated.stderr.rstrip().endswith(f"run pgtasq --schema {fresh_schema} migrate")


def test_embedded_server_without_dsn(tmp_path: Path) -> None:
    assert pgtasq("migrate", cwd=tmp_path).returncode == 0
    task = json.loads(ok(pgtasq("enqueue", "hello", "--json", cwd=tmp_path)))
    listed = json.loads(ok(pgtasq("tasks", "list", "--json", cwd=tmp_path)))
    assert [t["id"] for t in listed["tasks"]] == [task["id"]]


def test_stats_clean_and_events(
    run: Any, pg_dsn: str, schema: str, producer: Producer, tmp_path: Path
) -> None:
    import psycopg

    ids = [i.id for i in producer.enqueue_many([Task("t") for _ in range(3)])]
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(
            f"UPDATE {schema}.tasks SET status = 'completed', "
            "finalized_at = now() - interval '2 days' WHERE id = ANY(%s)",
            (ids[:2],),
        )
    stats = as_json(run("stats", "--json"))
    assert stats["enqueued"] == 3 and stats["completed_now"] == 2 and stats["pending_now"] == 1
    assert "started" in ok(run("stats"))
    assert as_json(run("clean", "--json")) == {"action": "clean", "count": 2}
    assert "deleted 0 finished tasks" in ok(run("clean"))
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASQ_")}
    err_path = tmp_path / "err"
    with err_path.open("w") as err:
        watcher = subprocess.Popen(
            [
                *(sys.executable, "-m", "pgtasq.cli", "--dsn", pg_dsn, "--schema", schema),
                *("events", "--json", "--timeout", "3"),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while f"listening for task events in schema {schema}" not in err_path.read_text():
            assert watcher.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        info = producer.enqueue("t", queue="watched")
        out, _ = watcher.communicate(timeout=15)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err_path.read_text()
    events = [json.loads(line) for line in out.splitlines()]
    assert {"kind": "enqueued", "count": 1, "task_ids": [info.id], "queues": ["watched"]} in events
