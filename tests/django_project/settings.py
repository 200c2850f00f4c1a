"""Settings of the Django project pgtasq's Django tests run: a real PostgreSQL, from
``PGTASQ_DJANGO_DSN`` (the tests set it), on psycopg 3, with pgtasq's app installed in the
schema dj_pgtasq; and a SQLite database to check that pgtasq refuses it."""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

_pg = conninfo_to_dict(os.environ["PGTASQ_DJANGO_DSN"])

SECRET_KEY = "pgtasq-tests-only"
USE_TZ = True
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "pgtasq.contrib.django",
    "tests.django_project.shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.django_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
# Django's tasks API (django.tasks in Django 6; the django-tasks package before) on pgtasq.
TASKS = {
    "default": {
        "BACKEND": "pgtasq.contrib.django.backend.PgtasqBackend",
        "QUEUES": ["default", "slow"],  # also the queues its worker runs
        "OPTIONS": {"MAX_ATTEMPTS": 1},
    }
}
PGTASQ = {
    "SCHEMA": "dj_pgtasq",
    "DATABASE": "default",
    "CONSUMER": "tests.django_project.shop.tasks:consumer",
}
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
