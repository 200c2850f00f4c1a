"""The application the fault tests run as real ``pgtasq worker`` processes.

``pgtasq worker tests.acceptance.worker_app:consumer`` runs two task types: ``work`` (an
async handler) and ``work_sync`` (a plain function, run in the worker's threads). Each run
first records itself in ``<schema>.runs`` (task id, attempt, pid, worker id) on its own
connection and commits, so a test can prove that a task ran once, or ran again elsewhere.
The recording retries while the database is away, and is idempotent per (task, attempt,
worker), so a lost commit acknowledgement cannot record one run twice.

The payload says what a run does once recorded:

- ``sleep``: seconds to sleep (``asyncio.sleep``: the worker stays responsive);
- ``first_attempt_only``: sleep on attempt 1 only (a rerun finishes at once);
- ``block``: sleep with ``time.sleep`` instead, blocking the worker's event loop;
- ``cooperative`` (``work_sync``): end the sleep early once ``ctx.cancelled`` is set.
- ``fail``: once recorded (and slept), raise ``ValueError(fail)``.

The result is ``{"pid", "attempt", "worker"}`` of the run. Environment: ``WORKER_APP_DSN``
and ``WORKER_APP_SCHEMA`` (where to record), ``WORKER_APP_SHUTDOWN_TIMEOUT`` (seconds),
``WORKER_APP_BREAK_HEARTBEAT`` (set: the worker's heartbeat raises once a task has run),
``WORKER_APP_DEFAULTS`` (set: the consumer keeps the library's defaults for its lease,
heartbeat, rescue, poll and batch settings, so the CLI's options and variables decide),
``WORKER_APP_IMPORT_DELAY`` (seconds this module sleeps when imported: a slow start).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import psycopg

from pgtasq import Consumer, TaskContext
from pgtasq._services import Heartbeat

LEASE = 2.0
HEARTBEAT_INTERVAL = 0.5
RECORDER_APPLICATION_NAME = "worker_app_recorder"
RECORD_PATIENCE = 60.0

# WORKER_APP_DEFAULTS set: the library's defaults, so that the CLI's options decide.
_TUNED = {
    "lease": LEASE,
    "heartbeat_interval": HEARTBEAT_INTERVAL,
    "rescue_interval": 0.5,
    "poll_interval": 0.2,
    "batch_size": 10,
}
consumer = Consumer(
    **({} if os.environ.get("WORKER_APP_DEFAULTS") else _TUNED),
    shutdown_timeout=float(os.environ.get("WORKER_APP_SHUTDOWN_TIMEOUT", "2")),
)


_runs_started = 0

if os.environ.get("WORKER_APP_BREAK_HEARTBEAT"):
    _real_beat = Heartbeat.run_once

    async def _beat_until_a_run(self: Heartbeat) -> Any:
        if _runs_started:
            raise RuntimeError("heartbeat broken by WORKER_APP_BREAK_HEARTBEAT")
        return await _real_beat(self)

    Heartbeat.run_once = _beat_until_a_run  # type: ignore[method-assign]


def create_runs_table(dsn: str, schema: str) -> None:
    """The table the handler records its runs in (created by the test, before any worker)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"""CREATE TABLE {schema}.runs (
                task_id bigint NOT NULL,
                attempt int NOT NULL,
                pid int NOT NULL,
                worker text NOT NULL,
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (task_id, attempt, worker))"""
        )


_INSERT_RUN = (
    "INSERT INTO {schema}.runs (task_id, attempt, pid, worker) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


def _run_row(ctx: TaskContext) -> tuple[int, int, int, str]:
    global _runs_started
    _runs_started += 1
    return (ctx.id, ctx.attempt, os.getpid(), ctx.worker_id)


async def _record_run(ctx: TaskContext) -> None:
    dsn, schema = os.environ["WORKER_APP_DSN"], os.environ["WORKER_APP_SCHEMA"]
    give_up = time.monotonic() + RECORD_PATIENCE
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                dsn, application_name=RECORDER_APPLICATION_NAME, connect_timeout=5
            )
            async with conn:
                await conn.execute(_INSERT_RUN.format(schema=schema), _run_row(ctx))
            return
        except psycopg.OperationalError:
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.2)


def _record_run_sync(ctx: TaskContext) -> None:
    dsn, schema = os.environ["WORKER_APP_DSN"], os.environ["WORKER_APP_SCHEMA"]
    give_up = time.monotonic() + RECORD_PATIENCE
    while True:
        try:
            with psycopg.connect(
                dsn, application_name=RECORDER_APPLICATION_NAME, connect_timeout=5
            ) as conn:
                conn.execute(_INSERT_RUN.format(schema=schema), _run_row(ctx))
            return
        except psycopg.OperationalError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.2)


def _seconds(ctx: TaskContext) -> float:
    payload = ctx.payload or {}
    if payload.get("first_attempt_only") and ctx.attempt > 1:
        return 0.0
    return float(payload.get("sleep", 0))


def _result(ctx: TaskContext) -> dict[str, Any]:
    return {"pid": os.getpid(), "attempt": ctx.attempt, "worker": ctx.worker_id}


@consumer.task("work")
async def work(ctx: TaskContext) -> dict[str, Any]:
    await _record_run(ctx)
    seconds = _seconds(ctx)
    if (ctx.payload or {}).get("block"):
        time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point
    elif seconds:
        await asyncio.sleep(seconds)
    if (ctx.payload or {}).get("fail"):
        raise ValueError(ctx.payload["fail"])
    return _result(ctx)


@consumer.task("work_sync")
def work_sync(ctx: TaskContext) -> dict[str, Any]:
    _record_run_sync(ctx)
    if (ctx.payload or {}).get("cooperative"):
        assert isinstance(ctx.cancelled, threading.Event)  # always, for a plain function
        ctx.cancelled.wait(_seconds(ctx))
    else:
        time.sleep(_seconds(ctx))
    return _result(ctx)


# Slow start (seconds), as an application with heavy imports: a signal can land mid-start.
time.sleep(float(os.environ.get("WORKER_APP_IMPORT_DELAY", "0")))
