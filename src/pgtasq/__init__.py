"""pgtasq: a task queue for Python with PostgreSQL as its broker.

A task is a row. Enqueue it inside your own transaction and it exists if and only if that
transaction commits; workers claim rows with ``SELECT … FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

from pgtasq._embedded import dev_dsn
from pgtasq._migrate import current_revision, downgrade, migrate, migration_sql
from pgtasq.client import (
    AsyncClient,
    AsyncEventStream,
    Client,
    DailyStats,
    EventStream,
    Preview,
    QueueInfo,
    ScheduleInfo,
    Stats,
    TaskEvent,
    TaskPage,
    WorkerInfo,
)
from pgtasq.consumer import Consumer, Counts
from pgtasq.context import TaskContext
from pgtasq.errors import (
    ConfigurationError,
    DatabaseMisconfigured,
    DatabaseUnavailable,
    DuplicateTask,
    InvalidSchedule,
    PgtasqError,
    QueueNotFound,
    RetryIn,
    SkipRetry,
    TaskAlreadyAvailable,
    TaskAlreadyFinalized,
    TaskLost,
    TaskNotFound,
    TaskRunning,
    TaskTimeout,
    TaskValidationError,
    UniqueKeyHeld,
    WorkerCrashed,
)
from pgtasq.filters import Cursor, InvalidFilter, TaskFilter
from pgtasq.models import Progress, Task, TaskInfo, TaskStatus
from pgtasq.producer import AsyncProducer, Producer
from pgtasq.scheduler import Schedule, Scheduler, SchedulerCounts
from pgtasq.tables import SCHEMA_DEFAULT
from pgtasq.task_types import TaskType, task_type

__version__ = "0.1.0.dev0"

__all__ = [
    "SCHEMA_DEFAULT",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncProducer",
    "Client",
    "ConfigurationError",
    "Consumer",
    "Counts",
    "Cursor",
    "DailyStats",
    "DatabaseMisconfigured",
    "DatabaseUnavailable",
    "DuplicateTask",
    "EventStream",
    "InvalidFilter",
    "InvalidSchedule",
    "PgtasqError",
    "Preview",
    "Producer",
    "Progress",
    "QueueInfo",
    "QueueNotFound",
    "RetryIn",
    "Schedule",
    "ScheduleInfo",
    "Scheduler",
    "SchedulerCounts",
    "SkipRetry",
    "Stats",
    "Task",
    "TaskAlreadyAvailable",
    "TaskAlreadyFinalized",
    "TaskContext",
    "TaskEvent",
    "TaskFilter",
    "TaskInfo",
    "TaskLost",
    "TaskNotFound",
    "TaskPage",
    "TaskRunning",
    "TaskStatus",
    "TaskTimeout",
    "TaskType",
    "TaskValidationError",
    "UniqueKeyHeld",
    "WorkerCrashed",
    "WorkerInfo",
    "current_revision",
    "dev_dsn",
    "downgrade",
    "migrate",
    "migration_sql",
    "task_type",
]
