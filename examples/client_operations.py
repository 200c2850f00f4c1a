"""The Client: look at tasks, cancel, retry and delete them, pause a queue, read the stats.

    python examples/client_operations.py

Every operation is one conditional statement whose WHERE names the states it may leave: a
completed task cannot be cancelled (`TaskAlreadyFinalized`), a running one cannot be
deleted (`TaskRunning`). Uses PGTASQ_DSN when it is set; otherwise the embedded PostgreSQL.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pgtasq
from pgtasq import Client, Consumer, Task, TaskAlreadyFinalized, TaskContext, TaskFilter
from pgtasq.testing import run_until_empty


def database_url() -> str:
    """PGTASQ_DSN if set; otherwise the embedded server's DSN (started on first use)."""
    dsn = os.environ.get("PGTASQ_DSN")
    if dsn:
        return dsn
    from pgtasq import _embedded

    return _embedded.dsn(Path(tempfile.gettempdir()) / "pgtasq-examples")


def main() -> None:
    dsn = database_url()
    pgtasq.migrate(dsn)
    queue = f"example-client-{uuid.uuid4().hex[:8]}"  # this run's own queue
    mine = TaskFilter().queues(queue)

    consumer = Consumer(queues=[queue])
    missing = {2}  # months whose data has not arrived yet

    @consumer.task("example.report")
    def report(ctx: TaskContext) -> dict[str, int]:
        if ctx.payload["month"] in missing:
            raise ValueError(f"the data of month {ctx.payload['month']} is missing")
        return {"rows": 10 * ctx.payload["month"]}

    with pgtasq.Producer(dsn) as producer, Client(dsn) as client:
        infos = producer.enqueue_many(
            [Task("example.report", {"month": m}, queue=queue, max_attempts=1) for m in (1, 2, 3)]
        )
        later = producer.enqueue("example.report", {"month": 12}, queue=queue, delay=3600)

        # Cancel the one planned for later: pending -> cancelled, at once.
        cancelled = client.cancel_task(later.id)
        print(f"cancelled #{cancelled.id}: {cancelled.status}")

        run_until_empty(consumer, dsn)
        page = client.list_tasks(mine.order_by("id"))
        for task in page.tasks:
            print(f"  #{task.id} month={task.payload['month']} {task.status} result={task.result}")
        assert [t.status.value for t in page.tasks] == [
            "completed",
            "failed",
            "completed",
            "cancelled",
        ]

        # A finished task cannot be cancelled; the error says what it is.
        try:
            client.cancel_task(infos[0].id)
        except TaskAlreadyFinalized as exc:
            print("cancel a completed task:", exc)
        else:
            raise AssertionError("a completed task was cancelled")

        # The data arrived: retry what failed (in bulk, by filter).
        missing.clear()
        print("retried:", client.retry_tasks(mine.statuses("failed")))
        run_until_empty(consumer, dsn)
        assert client.get_task(infos[1].id).result == {"rows": 20}

        # Pause the queue: its tasks wait, and a worker claims none of them.
        client.pause_queue(queue)
        paused = producer.enqueue("example.report", {"month": 4}, queue=queue)
        assert run_until_empty(consumer, dsn).claimed == 0
        [info] = [q for q in client.list_queues() if q.name == queue]
        print(f"queue {queue}: paused={info.paused} pending={info.pending}")
        client.resume_queue(queue)
        assert run_until_empty(consumer, dsn).completed == 1
        assert client.get_task(paused.id).result == {"rows": 40}

        # Delete what is finished in this queue.
        deleted = client.delete_tasks(mine.statuses("completed", "cancelled"))
        print("deleted:", deleted)
        assert client.list_tasks(mine).tasks == []
        print("stats:", client.stats())
    print("OK")


if __name__ == "__main__":
    main()
