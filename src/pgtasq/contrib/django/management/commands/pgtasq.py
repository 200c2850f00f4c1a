"""``manage.py pgtasq …``: any ``pgtasq`` command, on the project's database and schema.

python manage.py pgtasq tasks list --status failed
python manage.py pgtasq queues pause emails
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from pgtasq.contrib.django.management.commands import _run_cli


class Command(BaseCommand):
    help = "Run a pgtasq command on this project's database (manage.py pgtasq --help)."

    def run_from_argv(self, argv: list[str]) -> None:
        # Every argument is pgtasq's: Django's parser would refuse its options.
        _run_cli.run(_run_cli.pgtasq_args(argv[2:]))

    def handle(self, *args: Any, **options: Any) -> None:  # call_command("pgtasq")
        _run_cli.run(["--help"])
