"""`django_handler`: a sync handler that uses Django's ORM, with connections handled as
Django handles them around a request.

A worker's sync handlers run in its threads, and Django keeps one connection per thread. No
request ends in a worker, so Django's own ``close_old_connections`` never runs there: a
connection the database dropped stays broken in its thread, and ``CONN_MAX_AGE`` is never
applied. Decorate ORM handlers (below ``@consumer.task``) to run it before and after each
task::

    @consumer.task("order.ship")
    @django_handler
    def ship(ctx):
        Order.objects.filter(id=ctx.payload["order_id"]).update(shipped=True)
"""

from __future__ import annotations

import functools
from typing import Any

from django.db import close_old_connections

from pgtasq._executor import is_async
from pgtasq.context import Handler, TaskContext


def django_handler(handler: Handler) -> Handler:
    """``handler`` between two ``close_old_connections()`` calls; async handlers are
    returned as they are (their ORM calls go through ``sync_to_async``, whose thread does
    the same)."""
    if is_async(handler):
        return handler

    @functools.wraps(handler)
    def run(ctx: TaskContext) -> Any:
        close_old_connections()
        try:
            return handler(ctx)
        finally:
            close_old_connections()

    return run
