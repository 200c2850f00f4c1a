"""A task backend for Django's tasks API (``django.tasks`` in Django 6, or the ``django-tasks``
package on Django 5.2) that stores tasks in pgtasq.

::

    TASKS = {"default": {"BACKEND": "pgtasq.contrib.django.backend.PgtasqBackend",
                         "QUEUES": [],                          # any queue name
                         "OPTIONS": {"MAX_ATTEMPTS": 5}}}

``my_task.enqueue(...)`` inserts a pgtasq task on the Django connection of
``PGTASQ["DATABASE"]``: inside ``transaction.atomic`` it commits or rolls back with the block,
so there is no need for ``transaction.on_commit`` (enqueueing *is* on commit). Results come
from pgtasq's row (``get_result``, ``result.refresh()``). The tasks are run by
``manage.py pgtasq_worker`` (its default consumer, `consumer`, runs every Django task of the
queues listed in the backends' ``QUEUES``, else of ``default``: ``--queues`` overrides; or
`register` them on a consumer of yours).

Every Django task is one pgtasq task of type ``django.task`` with the payload ``{"task":
<module path>, "args": [...], "kwargs": {...}}``; priority, queue and ``run_after`` map to
pgtasq's. A failed attempt is retried as any pgtasq task (``MAX_ATTEMPTS``, default
pgtasq's); the result is READY again between attempts. ``TaskError.exception_class_path``
is ``builtins.<name>`` for Python's own exceptions and the exception's class name otherwise
(pgtasq records names, not modules).
"""

from __future__ import annotations

import builtins
import dataclasses
from typing import Any

from django.db import connections
from django.utils.module_loading import import_string

from pgtasq.client import Client
from pgtasq.consumer import Consumer
from pgtasq.context import TaskContext as PgtasqContext
from pgtasq.contrib.django import conf
from pgtasq.contrib.django.handlers import django_handler
from pgtasq.errors import TaskNotFound
from pgtasq.models import MAX_ATTEMPTS_DEFAULT, TaskInfo, TaskStatus
from pgtasq.producer import Producer

try:  # Django 6
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import (
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django.tasks.exceptions import TaskResultDoesNotExist
except ImportError:  # Django 5.2 with the django-tasks package
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import (
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django_tasks.exceptions import TaskResultDoesNotExist

DJANGO_TASK_TYPE = "django.task"
"""The pgtasq task type of every Django task."""

_STATUSES = {
    TaskStatus.PENDING: TaskResultStatus.READY,
    TaskStatus.RUNNING: TaskResultStatus.RUNNING,
    TaskStatus.COMPLETED: TaskResultStatus.SUCCESSFUL,
    TaskStatus.FAILED: TaskResultStatus.FAILED,
    TaskStatus.CANCELLED: TaskResultStatus.FAILED,
}


def _exception_path(name: str) -> str:
    found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return f"builtins.{name}"
    return name


class PgtasqBackend(BaseTaskBackend):
    """Django tasks stored and run by pgtasq. See the module docstring."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.max_attempts = int(self.options.get("MAX_ATTEMPTS", MAX_ATTEMPTS_DEFAULT))
        self._producers: dict[str, Producer] = {}  # by schema (settings may change in tests)

    def _producer(self) -> Producer:
        schema = conf.get().schema
        producer = self._producers.get(schema)
        if producer is None:
            producer = self._producers[schema] = Producer(schema=schema)
        return producer

    def _connection(self) -> Any:
        return connections[conf.get().database]

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        payload = {"task": task.module_path, "args": list(args), "kwargs": dict(kwargs)}
        info = self._producer().enqueue(
            DJANGO_TASK_TYPE,
            payload,
            conn=self._connection(),
            queue=task.queue_name,
            priority=task.priority,
            run_at=task.run_after,
            max_attempts=self.max_attempts,
        )
        return self._result(info, task)

    def get_result(self, result_id: str) -> TaskResult:
        try:
            task_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        try:
            info = Client(schema=conf.get().schema).get_task(task_id, conn=self._connection())
        except TaskNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        if info.type != DJANGO_TASK_TYPE:
            raise TaskResultDoesNotExist(result_id)
        return self._result(info, import_string(info.payload["task"]))

    def _result(self, info: TaskInfo, task: Task) -> TaskResult:
        if task.backend != self.alias:
            task = task.using(backend=self.alias)
        result = TaskResult(
            task=task,
            id=str(info.id),
            status=_STATUSES[info.status],
            enqueued_at=info.created_at,
            started_at=info.attempted_at,
            finished_at=info.finalized_at,
            last_attempted_at=info.attempted_at,
            args=info.payload["args"],
            kwargs=info.payload["kwargs"],
            backend=self.alias,
            errors=[
                TaskError(
                    exception_class_path=_exception_path(str(entry.get("error", ""))),
                    traceback=str(entry.get("traceback") or entry.get("message") or ""),
                )
                for entry in info.errors
            ],
            worker_ids=[info.locked_by or "pgtasq"] * info.attempts,
        )
        if info.status is TaskStatus.COMPLETED:
            object.__setattr__(result, "_return_value", info.result)
        return result


@django_handler
def run_django_task(ctx: PgtasqContext) -> Any:
    """The pgtasq handler of ``django.task``: imports the Django task named in the payload
    and calls it (an async one through asgiref), between Django's connection checks as a
    request would be. Its return value becomes the task's result."""
    task = import_string(ctx.payload["task"])
    if not isinstance(task, Task):
        raise TypeError(f"{ctx.payload['task']} is not a Django task")
    args, kwargs = ctx.payload["args"], ctx.payload["kwargs"]
    if task.takes_context:
        info = dataclasses.replace(ctx.info, status=TaskStatus.RUNNING)
        backend = task.get_backend()
        result = backend._result(info, task) if isinstance(backend, PgtasqBackend) else None
        return task.call(TaskContext(task_result=result), *args, **kwargs)
    return task.call(*args, **kwargs)


def register(consumer: Consumer) -> Consumer:
    """Let ``consumer`` run Django tasks (the handler of ``django.task``); returns it."""
    consumer.register(DJANGO_TASK_TYPE, run_django_task)
    return consumer


def _queues() -> list[str]:
    """The queues named in the ``QUEUES`` of the TASKS entries that use this backend, in
    order; ["default"] when none names any (then ``--queues`` chooses)."""
    from django.conf import settings

    path = f"{PgtasqBackend.__module__}.{PgtasqBackend.__qualname__}"
    found: list[str] = []
    for entry in (getattr(settings, "TASKS", None) or {}).values():
        if isinstance(entry, dict) and entry.get("BACKEND") == path:
            found.extend(q for q in entry.get("QUEUES", []) if q not in found)
    return found or ["default"]


def __getattr__(name: str) -> Any:
    # `consumer`, made on first use: Django's settings must be ready to read its schema.
    if name == "consumer":
        made = register(Consumer(schema=conf.get().schema, queues=_queues()))
        globals()["consumer"] = made
        return made
    raise AttributeError(name)
