"""Settings of the Django project pgtasq's Django tests run: a real PostgreSQL, from
``PGTASQ_DJANGO_DSN`` (the tests set it), on psycopg 3; and a SQLite database to check that
pgtasq refuses it."""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

_pg = conninfo_to_dict(os.environ["PGTASQ_DJANGO_DSN"])

SECRET_KEY = "pgtasq-tests-only"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "tests.django_project.shop",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _pg.get("dbname", "postgres"),
        "USER": _pg.get("user", ""),
        "PASSWORD": _pg.get("password", ""),
        "HOST": _pg.get("host", ""),
        "PORT": _pg.get("port", ""),
    },
    "lite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PGTASQ_SCHEMA = os.environ.get("PGTASQ_DJANGO_SCHEMA", "pgtasq")
