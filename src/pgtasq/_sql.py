"""Every SQL statement pgtasq runs, named entity-first: `statements(schema)` and the builders
of the statements that depend on more than the schema (filters, COPY columns).

Statements are written once with psycopg's named placeholders (``%(name)s``); the same
text serves SQLAlchemy (``:name``) through `Statement.sqlalchemy`. Every placeholder carries
an explicit ``CAST``, so psycopg, psycopg2 and asyncpg all bind the same types. The schema
name is validated to a plain identifier (`tables.check_schema_name`) before it is placed in
the text; nothing else a user passes is ever part of the SQL text.

Each statement of a schema is one method, decorated with `statement`, of one of the classes
by role: `_sql_worker` (claim, heartbeat, outcomes, rescue), `_sql_tasks` (enqueue, read,
the Client's changes), `_sql_admin` (queues, workers, schedules, cleaning, totals),
`_sql_observe` (metrics and health). Adding a statement is adding that method. The task's
columns come from `pgtasq._columns`, the Client's changes from `pgtasq._transitions`.
"""

from __future__ import annotations

import functools

from pgtasq._columns import (
    COPY_COLUMNS,
    COPY_COLUMNS_OPTIONAL,
    INSERT_ARRAYS,
    PREVIEW_CHARS,
    TASK_COLUMNS,
    TASK_COLUMNS_PREVIEW,
)
from pgtasq._sql_admin import AdminStatements
from pgtasq._sql_common import (
    ASYNC_COMMIT,
    CHANNEL_PURPOSES,
    ERRORS_KEPT,
    EVENT_IDS_MAX,
    NOTIFY_QUEUES_MAX,
    RETENTION_CUTOFF_MAX,
    SCHEDULE_KEY_PREFIX,
    SECONDS_MAX,
    Statement,
    channel_name,
    events_channel,
    listen_probe,
    notify_channel,
    setting_statement_timeout_local,
)
from pgtasq._sql_filters import task_bulk, task_count_estimate, task_filter_where, task_list
from pgtasq._sql_observe import ObserveStatements
from pgtasq._sql_tasks import TaskStatements, task_insert_copy
from pgtasq._sql_worker import WorkerStatements

__all__ = [
    "ASYNC_COMMIT",
    "CHANNEL_PURPOSES",
    "COPY_COLUMNS",
    "COPY_COLUMNS_OPTIONAL",
    "ERRORS_KEPT",
    "EVENT_IDS_MAX",
    "INSERT_ARRAYS",
    "NOTIFY_QUEUES_MAX",
    "PREVIEW_CHARS",
    "RETENTION_CUTOFF_MAX",
    "SCHEDULE_KEY_PREFIX",
    "SECONDS_MAX",
    "TASK_COLUMNS",
    "TASK_COLUMNS_PREVIEW",
    "ObserveStatements",
    "Statement",
    "Statements",
    "channel_name",
    "events_channel",
    "listen_probe",
    "notify_channel",
    "observe_statements",
    "setting_statement_timeout_local",
    "statements",
    "task_bulk",
    "task_count_estimate",
    "task_filter_where",
    "task_insert_copy",
    "task_list",
]


class Statements(WorkerStatements, TaskStatements, AdminStatements):
    """The statements of one schema, each an attribute named as the statement (see
    `statement`), built on first use. ``worker_events``: the worker's claim, outcome and
    rescue statements also send task events (started, completed, retried, failed); they
    cost a few percent of throughput, so workers send them only when asked
    (``Consumer(events=True)``)."""


@functools.lru_cache(maxsize=64)
def statements(schema: str, *, worker_events: bool = False) -> Statements:
    """The statements of one schema (one object per schema and ``worker_events``)."""
    return Statements(schema, worker_events=worker_events)


@functools.lru_cache(maxsize=64)
def observe_statements(schema: str) -> ObserveStatements:
    """The statements of `pgtasq.metrics` and `pgtasq health` of one schema."""
    return ObserveStatements(schema)
