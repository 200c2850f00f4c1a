"""Run the ``pgtasq`` command line on the Django project's database."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# Options ManagementUtility has already read (Django leaves them in argv).
_DJANGO_OPTIONS = ("--settings", "--pythonpath")


def pgtasq_args(argv: Sequence[str]) -> list[str]:
    """``argv`` after ``manage.py <command>``, less Django's own --settings/--pythonpath."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _DJANGO_OPTIONS:
            skip = True
            continue
        if arg.startswith(tuple(f"{o}=" for o in _DJANGO_OPTIONS)):
            continue
        args.append(arg)
    return args


def run(args: Sequence[str]) -> None:
    """``pgtasq ARGS`` with PGTASQ_DSN and PGTASQ_SCHEMA taken from the Django settings (the
    environment, not the command line: the DSN may hold a password). A ``--dsn`` or
    ``--schema`` in ``args`` still wins. Exits as ``pgtasq`` does."""
    from pgtasq import cli
    from pgtasq.contrib.django import conf

    found = conf.get()
    os.environ["PGTASQ_DSN"] = conf.dsn(found.database)
    os.environ["PGTASQ_SCHEMA"] = found.schema
    sys.argv = ["pgtasq", *args]
    cli.main()
