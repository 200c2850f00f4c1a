"""The ``PGTASQ`` setting of a Django project, and what is derived from it.

::

    PGTASQ = {
        "SCHEMA": "pgtasq",                      # the schema of pgtasq's tables
        "DATABASE": "default",                   # the DATABASES alias they live in
        "CONSUMER": "myapp.tasks:consumer",      # what manage.py pgtasq_worker runs
    }

Every key is optional. A key pgtasq does not know, or a bad value, raises Django's
``ImproperlyConfigured`` when the app loads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from pgtasq.errors import ConfigurationError
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name

SETTING = "PGTASQ"
DATABASE_DEFAULT = "default"


@dataclasses.dataclass(frozen=True)
class PgtasqSettings:
    """The ``PGTASQ`` setting, checked."""

    schema: str = SCHEMA_DEFAULT
    database: str = DATABASE_DEFAULT
    consumer: str | None = None


_KEYS = {"SCHEMA": "schema", "DATABASE": "database", "CONSUMER": "consumer"}


def get() -> PgtasqSettings:
    """The project's ``PGTASQ`` setting (read each time: tests may override settings)."""
    given: Any = getattr(django_settings, SETTING, {})
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"{SETTING} must be a dict, got {type(given).__name__}")
    unknown = sorted(set(given) - set(_KEYS))
    if unknown:
        raise ImproperlyConfigured(f"{SETTING} has unknown keys {unknown}; known: {sorted(_KEYS)}")
    values = {_KEYS[key]: value for key, value in given.items()}
    found = PgtasqSettings(**values)
    try:
        check_schema_name(found.schema)
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"{SETTING}['SCHEMA']: {exc}") from None
    if found.database not in django_settings.DATABASES:
        raise ImproperlyConfigured(
            f"{SETTING}['DATABASE'] is {found.database!r}, which is not in DATABASES"
        )
    if found.consumer is not None and (
        not isinstance(found.consumer, str) or ":" not in found.consumer
    ):
        raise ImproperlyConfigured(
            f"{SETTING}['CONSUMER'] must be 'module:attribute', got {found.consumer!r}"
        )
    return found


def dsn(alias: str | None = None) -> str:
    """A libpq connection string for the Django database ``alias`` (default: PGTASQ's), for
    what needs connections of its own (the worker, the CLI). It holds the password when
    the settings have one: pass it through the environment, never on a command line."""
    import psycopg
    from django.db import connections

    wrapper = connections[alias or get().database]
    if wrapper.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"Django's database {wrapper.alias!r} is {wrapper.vendor}: pgtasq needs PostgreSQL"
        )
    keywords = {d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults()}
    params = {
        key: value
        for key, value in wrapper.get_connection_params().items()
        if key in keywords and isinstance(value, (str, int)) and value != ""
    }
    return psycopg.conninfo.make_conninfo("", **params)
