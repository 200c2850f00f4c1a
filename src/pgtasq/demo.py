"""`pgtasq demo`: the main job end to end, on whatever database it is given.

Migrate; enqueue tasks inside a transaction and commit; enqueue one and roll back; run a
worker until the ready tasks are done (one handler fails once and is retried); report
what the table says. Every step checks what it claims, and `run` returns False otherwise.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import psycopg

from pgtasq import _migrate, _sql
from pgtasq._connections import sync_runner
from pgtasq.consumer import Consumer
from pgtasq.context import TaskContext
from pgtasq.models import Task, TaskInfo, TaskStatus
from pgtasq.producer import Producer

GREET = "demo.greet"
FLAKY = "demo.flaky"


class _Rollback(Exception):
    """Raised inside a transaction block to roll it back."""


def _consumer(schema: str) -> Consumer:
    consumer = Consumer(schema=schema, retry_delay=lambda info, exc: 0.0, poll_interval=0.2)

    @consumer.task(GREET)
    async def greet(ctx: TaskContext) -> str:
        return f"hello, {ctx.payload['name']}"

    @consumer.task(FLAKY)
    def flaky(ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            raise ConnectionError("the mail server did not answer (first attempt fails)")
        return f"sent on attempt {ctx.attempt}"

    return consumer


def run(dsn: str, schema: str, count: int, echo: Callable[[str], Any]) -> bool:
    """Run the demo; print with ``echo``; True when everything held."""
    echo("1. Migrating …")
    _migrate.migrate(dsn, schema=schema)
    echo(f"   schema {schema} at revision {_migrate.current_revision(dsn, schema=schema)}")

    stmts = _sql.statements(schema)
    producer = Producer(schema=schema)
    with psycopg.connect(dsn) as conn:
        echo(f"2. Enqueueing {count + 1} tasks inside one transaction, then COMMIT …")
        with conn.transaction():
            tasks = [Task(GREET, {"name": f"user{i}"}) for i in range(count)]
            infos = producer.enqueue_many(
                [*tasks, Task(FLAKY, {"to": "ops@example.com"})], conn=conn
            )
        ids = [info.id for info in infos]
        echo(f"   committed: tasks #{ids[0]} to #{ids[-1]} exist now")

        echo("3. Enqueueing one task, then ROLLBACK …")
        rolled: TaskInfo | None = None
        with contextlib.suppress(_Rollback), conn.transaction():
            rolled = producer.enqueue(GREET, {"name": "nobody"}, conn=conn)
            raise _Rollback
        assert rolled is not None
        echo(f"   task #{rolled.id} was rolled back with its transaction")

        echo("4. Running a worker until the ready tasks are done …")
        consumer = _consumer(schema)
        first = consumer.run(dsn, burst=True, handle_signals=False)
        second = consumer.run(dsn, burst=True, handle_signals=False)  # the retried one
        echo(
            f"   completed {first.completed + second.completed}, "
            f"retried {first.retried + second.retried}, failed {first.failed + second.failed}"
        )

        rows = sync_runner(conn).fetch(stmts.task_select_many, {"ids": [*ids, rolled.id]})
        conn.rollback()
    found = {r["id"]: TaskInfo.from_row(r) for r in rows}
    echo("5. What the table holds for those tasks:")
    for info in found.values():
        errors = f"  ({len(info.errors)} failed attempt)" if info.errors else ""
        result = json.dumps(info.result)
        echo(f"   #{info.id:<6} {info.type:<11} {info.status.value:<9} {result}{errors}")
    gone = rolled.id not in found
    echo(f"   rolled-back task #{rolled.id} present: {'no' if gone else 'YES (bug)'}")
    done = all(found[i].status is TaskStatus.COMPLETED for i in ids if i in found)
    ok = gone and len(found) == len(ids) and done and found[ids[-1]].attempts == 2
    echo(
        f"Summary: {sum(i.status is TaskStatus.COMPLETED for i in found.values())} of {len(ids)} "
        f"tasks completed, 1 after a retry; the rolled-back task never existed."
        if ok
        else "Summary: the demo did not see what it expected"
    )
    return ok
