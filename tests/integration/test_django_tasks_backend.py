"""Django's tasks API on pgtasq (`pgtasq.contrib.django.backend`), in the test project: a task
enqueued in ``transaction.atomic`` commits or rolls back with it, the pgtasq worker runs it,
and its result comes back through Django's API."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

pytest.importorskip("django_tasks")

from pgtasq.testing import assert_enqueued, run_until_empty

SCHEMA = "dj_pgtasq"  # PGTASQ["SCHEMA"] in tests/django_project/settings.py


@pytest.fixture(autouse=True)
def _clean(django_dsn: str) -> Iterator[None]:
    yield
    with psycopg.connect(django_dsn, autocommit=True) as c:
        c.execute(f"TRUNCATE {SCHEMA}.tasks, {SCHEMA}.queues")
        c.execute("DELETE FROM shop_order")


def drain(django_dsn: str) -> None:
    from pgtasq.contrib.django import backend

    run_until_empty(backend.consumer, django_dsn)


def test_atomic_rollback_leaves_no_task_and_commit_exactly_one(django_dsn: str) -> None:
    from django.db import transaction

    from tests.django_project.shop.jobs import ship_order
    from tests.django_project.shop.models import Order

    def refused() -> None:
        with transaction.atomic():
            order = Order.objects.create(item="book")
            ship_order.enqueue(order.id)
            raise RuntimeError("payment refused")

    with pytest.raises(RuntimeError, match="payment refused"):
        refused()
    assert_enqueued(django_dsn, schema=SCHEMA, count=0)

    with transaction.atomic():
        order = Order.objects.create(item="book")
        result = ship_order.enqueue(order.id)
        assert_enqueued(django_dsn, schema=SCHEMA, count=0)  # not before the commit
    [task] = assert_enqueued(django_dsn, schema=SCHEMA, type="django.task", count=1)
    assert task.payload == {
        "task": "tests.django_project.shop.jobs.ship_order",
        "args": [order.id],
        "kwargs": {},
    }
    assert result.id == str(task.id) and result.status == "READY"

    drain(django_dsn)
    result.refresh()
    assert result.status == "SUCCESSFUL"
    assert result.return_value == {"shipped": order.id}
    assert result.attempts == 1
    order.refresh_from_db()
    assert order.item == "shipped"


def test_failures_context_async_and_options(django_dsn: str) -> None:
    from tests.django_project.shop.jobs import async_double, explode, slow, with_context

    failed = explode.enqueue()
    contextual = with_context.enqueue(n=3)
    doubled = async_double.enqueue(21)
    slowed = slow.enqueue()
    [slow_task] = assert_enqueued(django_dsn, schema=SCHEMA, queue="slow", count=1)
    assert slow_task.priority == 10
    drain(django_dsn)

    failed.refresh()
    assert failed.status == "FAILED"
    assert failed.errors[0].exception_class_path == "builtins.ValueError"
    assert failed.errors[0].exception_class is ValueError
    assert "boom" in failed.errors[0].traceback
    contextual.refresh()
    assert contextual.return_value == {"attempt": 1, "id": contextual.id, "n": 3}
    doubled.refresh()
    assert doubled.return_value == 42
    assert slow.get_result(slowed.id).return_value == "ok"


def test_unknown_results_do_not_exist(django_dsn: str) -> None:
    from django_tasks import default_task_backend
    from django_tasks.exceptions import TaskResultDoesNotExist

    for result_id in ("999999999", "not-a-number"):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(result_id)
