"""A worker: sync and async handlers, a middleware, retries, and a burst run that drains.

    python examples/worker.py

In production the consumer lives in a module and runs with
``pgtasq worker yourapp.tasks:consumer``; here `pgtasq.testing.run_until_empty` runs it in
this process until no task is ready (what a test does). Uses PGTASQ_DSN when it is set;
otherwise the embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import pgtasq
from pgtasq import Consumer, RetryIn, SkipRetry, Task, TaskContext, TaskStatus
from pgtasq.testing import enqueued_tasks, run_until_empty


def database_url() -> str:
    """PGTASQ_DSN if set; otherwise the embedded server's DSN (started on first use)."""
    dsn = os.environ.get("PGTASQ_DSN")
    if dsn:
        return dsn
    from pgtasq import _embedded

    return _embedded.dsn(Path(tempfile.gettempdir()) / "pgtasq-examples")


RUN = uuid.uuid4().hex[:8]  # this run's queue: a second run does not see the first one's tasks
QUEUE = f"example-worker-{RUN}"
consumer = Consumer(queues=[QUEUE])
calls: list[str] = []
fetches: list[str] = []


@consumer.middleware
async def record(ctx: TaskContext, call_next: Any) -> Any:
    """Around every handler, on the event loop: here it notes each attempt and its outcome."""
    try:
        result = await call_next(ctx)
    except Exception as exc:
        calls.append(f"{ctx.type} attempt {ctx.attempt}: {type(exc).__name__}")
        raise
    calls.append(f"{ctx.type} attempt {ctx.attempt}: ok")
    return result


@consumer.task("example.resize")
def resize(ctx: TaskContext) -> dict[str, Any]:
    """A plain function: it runs in the worker's thread pool, so it may block."""
    assert threading.current_thread() is not threading.main_thread()
    width = ctx.payload["width"]
    return {"image": ctx.payload["image"], "thumbnail": width // 4}


@consumer.task("example.fetch")
async def fetch(ctx: TaskContext) -> str:
    """A coroutine: it runs on the worker's event loop."""
    await asyncio.sleep(0.01)
    fetches.append(ctx.payload["url"])
    if len(fetches) == 1:
        # A flaky upstream: run again at once. Not a failure: the attempt is given back.
        raise RetryIn(0)
    return f"fetched {ctx.payload['url']}"


@consumer.task("example.charge")
def charge(ctx: TaskContext) -> None:
    raise SkipRetry("card declined")  # no point in retrying: failed at once


def main() -> None:
    dsn = database_url()
    pgtasq.migrate(dsn)
    with pgtasq.Producer(dsn) as producer:
        producer.enqueue_many(
            [
                Task("example.resize", {"image": "cat.png", "width": 800}, queue=QUEUE),
                Task("example.fetch", {"url": "https://example.com"}, queue=QUEUE),
                Task("example.charge", {"order": 42}, queue=QUEUE, max_attempts=3),
            ]
        )
    counts = run_until_empty(consumer, dsn)
    print("counts:", counts)
    for line in calls:
        print("  ", line)
    assert counts.completed == 2 and counts.failed == 1 and counts.retried == 1, counts

    done = {t.type: t for t in enqueued_tasks(dsn, queue=QUEUE, status=None)}
    assert done["example.resize"].result == {"image": "cat.png", "thumbnail": 200}
    assert done["example.fetch"].result == "fetched https://example.com"
    assert done["example.fetch"].attempts == 1 and len(fetches) == 2  # RetryIn: not counted
    assert done["example.charge"].status is TaskStatus.FAILED
    assert done["example.charge"].attempts == 1  # SkipRetry: no second attempt
    print("charge failed with:", done["example.charge"].errors[-1]["message"])
    print("OK")


if __name__ == "__main__":
    main()
