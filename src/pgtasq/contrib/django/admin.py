"""Read-only admin pages of pgtasq's tasks and queues.

Nothing can be added, changed or deleted here: cancel, retry and delete go through pgtasq
(``manage.py pgtasq tasks …``, `pgtasq.Client`), whose statements check each task's state.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, OuterRef, Subquery

from pgtasq.contrib.django.models import Queue, Task


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "queue", "status", "attempts", "run_at", "created_at")
    list_filter = ("status", "queue", "type")
    search_fields = ("type", "=idempotency_key")
    date_hierarchy = None
    show_full_result_count = False  # an exact count of a big tasks table is slow


@admin.register(Queue)
class QueueAdmin(ReadOnlyAdmin):
    list_display = ("name", "paused", "paused_at", "pending")

    def get_queryset(self, request: Any) -> Any:
        pending = (
            Task.objects.filter(queue=OuterRef("name"), status="pending")
            .values("queue")
            .annotate(n=Count("id"))
            .values("n")
        )
        return super().get_queryset(request).annotate(pending_count=Subquery(pending))

    @admin.display(description="pending")
    def pending(self, queue: Any) -> int:
        return int(queue.pending_count or 0)
