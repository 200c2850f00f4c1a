"""``manage.py pgtasq_worker [APP] [pgtasq worker options]``: run a pgtasq worker.

APP (``module:attribute`` of a `pgtasq.Consumer`) defaults to ``PGTASQ["CONSUMER"]``, else,
when the ``TASKS`` setting uses pgtasq's backend, to the consumer of Django tasks; the
other arguments are ``pgtasq worker``'s (``--concurrency``, ``--queues``, ``--burst``, …).
Django is set up before the consumer's module is imported, so handlers can use the ORM.
With ``--processes N`` each child is a new ``pgtasq worker`` process: its module must then
call ``django.setup()`` itself.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pgtasq.contrib.django import conf
from pgtasq.contrib.django.management.commands import _run_cli

BACKEND_PATH = "pgtasq.contrib.django.backend.PgtasqBackend"


def worker_args(args: list[str]) -> list[str]:
    """``pgtasq worker`` arguments: the consumer from the settings unless one is given."""
    if args and not args[0].startswith("-") and ":" in args[0]:
        return ["worker", *args]
    consumer = conf.get().consumer or _tasks_consumer()
    if consumer is None:
        raise CommandError(
            "no consumer to run: give module:attribute, or set PGTASQ['CONSUMER'] in settings"
        )
    return ["worker", consumer, *args]


def _tasks_consumer() -> str | None:
    """The consumer of Django tasks, when the TASKS setting uses pgtasq's backend."""
    from django.conf import settings

    backends = getattr(settings, "TASKS", None) or {}
    if any(isinstance(b, dict) and b.get("BACKEND") == BACKEND_PATH for b in backends.values()):
        return "pgtasq.contrib.django.backend:consumer"
    return None


class Command(BaseCommand):
    help = "Run a pgtasq worker for PGTASQ['CONSUMER'] (options: manage.py pgtasq worker --help)."

    def run_from_argv(self, argv: list[str]) -> None:
        try:
            args = worker_args(_run_cli.pgtasq_args(argv[2:]))
        except CommandError as exc:
            self.stderr.write(f"error: {exc}")
            raise SystemExit(2) from None
        _run_cli.run(args)

    def handle(self, *args: Any, **options: Any) -> None:  # call_command("pgtasq_worker")
        _run_cli.run(worker_args(list(args)))
