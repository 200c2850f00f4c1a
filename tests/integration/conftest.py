"""Fixtures of the integration tests that need more than tests/conftest.py gives."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest


def database_dsn(dsn: str, name: str) -> str:
    url = urlsplit(dsn)
    return urlunsplit((url.scheme, url.netloc, "/" + name, url.query, url.fragment))


@pytest.fixture(scope="session")
def django_dsn(pg_dsn: str) -> Iterator[str]:
    """A database of the Django project's own, with its tables; Django set up on it once."""
    django = pytest.importorskip("django")
    name = "django_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    dsn = database_dsn(pg_dsn, name)
    os.environ["PGTASQ_DJANGO_DSN"] = dsn
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django_project.settings"
    django.setup()
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)  # Django's tables, the shop's, and pgtasq's (its app)
    # Read once by django.setup(): the processes other tests start need not inherit them.
    for variable in ("PGTASQ_DJANGO_DSN", "DJANGO_SETTINGS_MODULE"):
        del os.environ[variable]
    yield dsn
    connections.close_all()
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"DROP DATABASE {name} WITH (FORCE)")
