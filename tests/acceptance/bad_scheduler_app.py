"""A scheduler module with an invalid cron expression: importing it raises InvalidSchedule."""

from __future__ import annotations

from pgtasq import Scheduler, Task

scheduler = Scheduler()
scheduler.register("61 * * * *", Task("tick"), name="never")
