"""The shop's pgtasq handlers: they use the ORM (Django is set up by manage.py)."""

from __future__ import annotations

from django.db import transaction

from pgtasq import Consumer, TaskContext
from pgtasq.contrib.django import conf
from pgtasq.contrib.django.handlers import django_handler
from tests.django_project.shop.models import Order

consumer = Consumer(schema=conf.get().schema)


@consumer.task("order.ship")
@django_handler
def ship(ctx: TaskContext) -> None:
    from django.db import connection

    with transaction.atomic():
        shipped = Order.objects.filter(id=ctx.payload["order_id"]).update(item="shipped")
        ctx.complete(connection, {"shipped": shipped})  # completes with the update, or not at all
