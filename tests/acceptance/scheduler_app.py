"""A Scheduler and a Consumer for the CLI tests: one entry every second."""

from __future__ import annotations

from pgtasq import Consumer, Scheduler, Task

scheduler = Scheduler()
scheduler.register("* * * * * *", Task("tick", {"from": "cron"}), name="every-second")

consumer = Consumer(poll_interval=0.2)
consumer.register("tick", lambda ctx: ctx.payload)
