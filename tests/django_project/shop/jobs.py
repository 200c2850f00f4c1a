"""The shop's Django tasks (Django's tasks API), stored and run by pgtasq's backend."""

from __future__ import annotations

from typing import Any

try:  # Django 6
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks package
    from django_tasks import task

from tests.django_project.shop.models import Order


@task()
def ship_order(order_id: int) -> dict[str, int]:
    Order.objects.filter(id=order_id).update(item="shipped")
    return {"shipped": order_id}


@task()
def explode() -> None:
    raise ValueError("boom")


@task(takes_context=True)
def with_context(context: Any, n: int) -> dict[str, Any]:
    return {"attempt": context.attempt, "id": context.task_result.id, "n": n}


@task()
async def async_double(n: int) -> int:
    return n * 2


@task(priority=10, queue_name="slow")
def slow() -> str:
    return "ok"
