"""`Client` and `AsyncClient`: look at and manage tasks, queues and workers.

Every method takes ``conn=None``: with a connection of yours it runs there and never
commits; without one it uses the client's pool and each statement commits on its own.
What each operation does by the task's current state (`pgtasq._transitions` writes this
table; a test checks it is current):

=========  ====================================  ===================================  ============
 status     cancel_task                           retry_task                           delete_task
=========  ====================================  ===================================  ============
pending    cancelled                             TaskAlreadyAvailable                 deleted
running    cancelled (its handler is cancelled)  TaskRunning                          TaskRunning
completed  TaskAlreadyFinalized                  TaskAlreadyFinalized                 deleted
failed     cancelled                             pending (at least one attempt left)  deleted
cancelled  no change                             pending (at least one attempt left)  deleted
missing    TaskNotFound                          TaskNotFound                         TaskNotFound
=========  ====================================  ===================================  ============

Each change is one conditional statement, so a race with a worker is decided in the database.

`AsyncClient` is written once (``_client_async.py``); `Client` is generated from it
(``_client_sync.py``, by ``python tools/gen_sync.py``), so both have the same methods,
parameters and docstrings.
"""

from __future__ import annotations

from pgtasq._client_async import AsyncClient
from pgtasq._client_base import RETENTION_DEFAULT
from pgtasq._client_ops import (
    DailyStats,
    Preview,
    QueueInfo,
    ScheduleInfo,
    Stats,
    TaskEvent,
    TaskPage,
    WorkerInfo,
)
from pgtasq._client_sync import Client
from pgtasq._events_async import AsyncEventStream
from pgtasq._events_sync import EventStream

__all__ = [
    "RETENTION_DEFAULT",
    "AsyncClient",
    "AsyncEventStream",
    "Client",
    "DailyStats",
    "EventStream",
    "Preview",
    "QueueInfo",
    "ScheduleInfo",
    "Stats",
    "TaskEvent",
    "TaskPage",
    "WorkerInfo",
]
