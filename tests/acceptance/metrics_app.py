"""The application the metrics tests run as a real ``pgtasq worker``.

``ok`` returns at once, ``boom`` raises (with ``max_attempts=1`` the task fails), ``slow``
sleeps ``payload["sleep"]`` seconds.
"""

from __future__ import annotations

import asyncio

from pgtasq import Consumer, TaskContext

consumer = Consumer(
    queues={"q1": 1, "q2": 1, "default": 1},
    poll_interval=0.2,
    rescue_interval=1.0,
    heartbeat_interval=0.5,
    lease=5.0,
    shutdown_timeout=1.0,
)


@consumer.task("ok")
async def ok(ctx: TaskContext) -> None:
    return None


@consumer.task("boom")
def boom(ctx: TaskContext) -> None:
    raise ValueError("boom")


@consumer.task("slow")
async def slow(ctx: TaskContext) -> None:
    await asyncio.sleep(float(ctx.payload["sleep"]))
