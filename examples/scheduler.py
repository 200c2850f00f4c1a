"""The Scheduler: cron entries become tasks, each tick exactly once however many schedulers run.

    python examples/scheduler.py

In production: ``pgtasq scheduler yourapp.schedule:scheduler``, or
``pgtasq worker … --scheduler yourapp.schedule:scheduler``. Here `Scheduler.run_once` is
called with a clock of our own, so the script sees an hour of ticks at once. Uses
PGTASQ_DSN when it is set; otherwise the embedded PostgreSQL.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pgtasq
from pgtasq import Client, Scheduler, Task
from pgtasq.testing import enqueued_tasks


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
    run = uuid.uuid4().hex[:8]  # this run's entry and queue
    queue, entry = f"example-scheduler-{run}", f"cleanup-{run}"

    def scheduler() -> Scheduler:
        made = Scheduler(dsn)
        made.register(
            "*/15 * * * *",  # every quarter of an hour, in Berlin time
            Task("example.cleanup", {"older_than_days": 30}, queue=queue),
            name=entry,
            timezone="Europe/Berlin",
        )
        return made

    noon = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)  # 12:00 in Berlin
    first, second = scheduler(), scheduler()  # two processes, say
    try:
        for s in (first, second):
            s.run_once(noon)  # each takes the entry up; missed ticks are skipped by default
        a = first.run_once(noon + timedelta(minutes=16))
        b = second.run_once(noon + timedelta(minutes=16))
        print("12:16 first:", a)
        print("12:16 second:", b)
        assert (a.enqueued, a.existing) == (1, 0) and (b.enqueued, b.existing) == (0, 1)

        late = first.run_once(noon + timedelta(minutes=61))  # a late call: every tick passed
        print("13:01 first:", late)
        assert late.enqueued == 3  # 12:30, 12:45, 13:00

        ticks = enqueued_tasks(dsn, queue=queue)
        for task in ticks:
            print(f"  #{task.id} {task.type} key={task.idempotency_key}")
        assert len(ticks) == 4
        with Client(dsn) as client:
            [info] = [i for i in client.list_schedules() if i.id == entry]
            print(f"schedule {info.id}: last run {info.last_run_at}, next {info.next_run_at}")
    finally:
        first.close()
        second.close()
    print("OK")


if __name__ == "__main__":
    main()
