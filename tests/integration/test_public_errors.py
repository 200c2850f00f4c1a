"""Public calls given a bad argument raise a pgtasq error (a `PgtasqError` that is also a
`ValueError`), never a bare ValueError, and send nothing: the database is left as it was."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from pgtasq import (
    AsyncClient,
    AsyncProducer,
    Client,
    ConfigurationError,
    InvalidFilter,
    InvalidSchedule,
    PgtasqError,
    Producer,
    RetryIn,
    Scheduler,
    TaskFilter,
    TaskValidationError,
)
from pgtasq.retry import exponential_backoff
from tests.conftest import count_tasks


def _raises(expected: type[PgtasqError], call: Callable[[], Any], match: str) -> None:
    with pytest.raises(expected, match=match) as raised:
        call()
    assert isinstance(raised.value, ValueError)  # what callers caught before still works
    assert type(raised.value) is not ValueError


def test_sync_calls(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer, Client(pg_dsn, schema=schema) as client:
        producer.enqueue("t")
        _raises(
            TaskValidationError,
            lambda: producer.enqueue("t", on_conflict="ignore"),  # type: ignore[arg-type]
            "on_conflict: expected 'return', 'raise' or 'update'",
        )
        _raises(TaskValidationError, lambda: client.get_task(0), "task_id")
        _raises(TaskValidationError, lambda: client.cancel_task(-1), "task_id")
        _raises(TaskValidationError, lambda: client.retry_task(2**63), "task_id")
        _raises(TaskValidationError, lambda: client.delete_task("1"), "task_id")  # type: ignore[arg-type]
        for bulk in (client.cancel_tasks, client.retry_tasks, client.delete_tasks):
            _raises(ConfigurationError, lambda b=bulk: b(TaskFilter(), batch_size=0), "batch_size")
        _raises(ConfigurationError, lambda: client.clean(batch_size=10**6), "batch_size")
        _raises(TaskValidationError, lambda: client.clean(retention=-1), "retention")
        _raises(InvalidFilter, lambda: client.queue_history(days=0), "days")
        _raises(InvalidFilter, lambda: client.list_tasks(count="some"), "count")  # type: ignore[arg-type]
        _raises(InvalidFilter, lambda: client.pause_queue(""), "queue name")
        assert count_tasks(pg_dsn, schema) == 1


async def test_async_calls(pg_dsn: str, schema: str) -> None:
    async with AsyncProducer(pg_dsn, schema=schema) as producer:
        with pytest.raises(TaskValidationError, match="on_conflict"):
            await producer.enqueue("t", on_conflict="ignore")  # type: ignore[arg-type]
    async with AsyncClient(pg_dsn, schema=schema) as client:
        with pytest.raises(ConfigurationError, match="batch_size"):
            await client.delete_tasks(TaskFilter(), batch_size=0)
        with pytest.raises(InvalidFilter, match="days"):
            await client.queue_history(days=4000)
    assert count_tasks(pg_dsn, schema) == 0


def test_scheduler_run_once_refuses_a_naive_time(pg_dsn: str, schema: str) -> None:
    with Scheduler(pg_dsn, schema=schema) as scheduler:
        _raises(InvalidSchedule, lambda: scheduler.run_once(datetime(2026, 1, 1)), "now")


def test_handler_signals_and_retry_delays() -> None:
    _raises(TaskValidationError, lambda: RetryIn(-1), "delay")
    _raises(TaskValidationError, lambda: exponential_backoff(0), "attempt")


def test_migrate_names_a_refused_login_without_the_password(pg_dsn: str, schema: str) -> None:
    """migrate() goes through the same translation as the Client: a login no retry can fix
    is DatabaseMisconfigured (it was DatabaseUnavailable, as if the server were down)."""
    from psycopg.conninfo import make_conninfo

    from pgtasq import DatabaseMisconfigured, migrate

    dsn = make_conninfo(pg_dsn, user="pgtasq_no_such_role", password="s3cret-pw")
    with pytest.raises(DatabaseMisconfigured) as raised:
        migrate(dsn, schema=schema)
    assert raised.value.reason == "authentication"
    assert "pgtasq_no_such_role" in str(raised.value) and "s3cret-pw" not in str(raised.value)
