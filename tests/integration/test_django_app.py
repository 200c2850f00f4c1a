"""The ``pgtasq.contrib.django`` app in the test project (tests/django_project): its migration,
its settings, the read-only admin pages, and ``manage.py pgtasq_worker`` / ``manage.py pgtasq``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgtasq
from pgtasq import Producer
from pgtasq.testing import assert_enqueued
from tests.conftest import REPO

SCHEMA = "dj_pgtasq"  # PGTASQ["SCHEMA"] in tests/django_project/settings.py


@pytest.fixture
def clean_tasks(django_dsn: str) -> Iterator[None]:
    yield
    with psycopg.connect(django_dsn, autocommit=True) as c:
        c.execute(f"TRUNCATE {SCHEMA}.tasks, {SCHEMA}.queues")
        c.execute("DELETE FROM shop_order")


def head_revision(pg_dsn: str, schema: str) -> str | None:
    return pgtasq.current_revision(pg_dsn, schema=schema)


def test_migrate_creates_pgtasq_schema_at_the_newest_revision(
    django_dsn: str, pg_dsn: str, schema: str
) -> None:
    from django.core.management import call_command

    # `schema` was migrated by pgtasq.migrate: the same revision, through Django's migrate.
    assert head_revision(django_dsn, SCHEMA) == head_revision(pg_dsn, schema) is not None
    call_command("migrate", verbosity=0)  # again: nothing to do
    call_command("migrate", "pgtasq", "zero", verbosity=0)  # the reverse: pgtasq's downgrade
    assert head_revision(django_dsn, SCHEMA) is None
    call_command("migrate", "pgtasq", verbosity=0)
    assert head_revision(django_dsn, SCHEMA) == head_revision(pg_dsn, schema)


def test_settings_are_checked(django_dsn: str) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from pgtasq.contrib.django import conf

    assert conf.get() == conf.PgtasqSettings(
        schema=SCHEMA, database="default", consumer="tests.django_project.shop.tasks:consumer"
    )
    bad: list[tuple[Any, str]] = [
        ({"SCHEMA": "no such"}, r"PGTASQ\['SCHEMA'\]: schema name"),
        ({"DATABASE": "nope"}, r"'nope', which is not in DATABASES"),
        ({"CONSUMER": "no_colon"}, r"'module:attribute'"),
        ({"QUEUE": "x"}, r"unknown keys \['QUEUE'\]"),
        ("pgtasq", "must be a dict"),
    ]
    for value, message in bad:
        with override_settings(PGTASQ=value), pytest.raises(ImproperlyConfigured, match=message):
            conf.get()
    with pytest.raises(ImproperlyConfigured, match="'lite' is sqlite"):
        conf.dsn("lite")


@pytest.mark.usefixtures("clean_tasks")
def test_admin_pages_list_tasks_and_queues_read_only(django_dsn: str) -> None:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client as HttpClient

    producer = Producer(schema=SCHEMA)
    producer.enqueue("mail.welcome", {"to": "ann"}, queue="emails", conn=connection)
    producer.enqueue("report.build", conn=connection)
    pgtasq.Client(schema=SCHEMA).pause_queue("emails", conn=connection)

    admin = User.objects.filter(username="admin").first() or User.objects.create_superuser(
        "admin", "admin@example.com", "unused"
    )
    http = HttpClient()
    http.force_login(admin)
    tasks_page = http.get("/admin/pgtasq/task/")
    assert tasks_page.status_code == 200
    body = tasks_page.content.decode()
    assert '<td class="field-type">mail.welcome</td>' in body
    assert '<td class="field-type">report.build</td>' in body
    assert '<td class="field-queue">emails</td>' in body
    filtered = http.get("/admin/pgtasq/task/", {"type": "report.build"}).content.decode()
    assert '<td class="field-type">report.build</td>' in filtered
    assert '<td class="field-type">mail.welcome</td>' not in filtered

    queues_page = http.get("/admin/pgtasq/queue/")
    assert queues_page.status_code == 200
    queues = queues_page.content.decode()
    assert "emails" in queues and '<td class="field-pending">1</td>' in queues

    task_id = assert_enqueued(django_dsn, schema=SCHEMA, type="mail.welcome", count=1)[0].id
    view = http.get(f"/admin/pgtasq/task/{task_id}/change/")
    assert view.status_code == 200 and "mail.welcome" in view.content.decode()
    # Read-only: no add page, no delete, and a POST changes nothing.
    assert http.get("/admin/pgtasq/task/add/").status_code == 403
    assert http.get(f"/admin/pgtasq/task/{task_id}/delete/").status_code == 403
    http.post(f"/admin/pgtasq/task/{task_id}/change/", {"type": "hacked"})
    assert_enqueued(django_dsn, schema=SCHEMA, type="mail.welcome", count=1)


def manage(django_dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGTASQ_", "DJANGO_"))}
    env["PGTASQ_DJANGO_DSN"] = django_dsn
    return subprocess.run(
        [sys.executable, "-W", "error", "tests/django_project/manage.py", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


@pytest.mark.usefixtures("clean_tasks")
def test_manage_py_pgtasq_worker_runs_handlers_that_use_the_orm(django_dsn: str) -> None:
    from django.db import connection, transaction

    from tests.django_project.shop.models import Order

    with transaction.atomic():
        order = Order.objects.create(item="book")
        Producer(schema=SCHEMA).enqueue("order.ship", {"order_id": order.id}, conn=connection)
    out = manage(django_dsn, "pgtasq_worker", "--burst", "--concurrency", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    order.refresh_from_db()
    assert order.item == "shipped"
    [done] = assert_enqueued(django_dsn, schema=SCHEMA, status="completed", count=1)
    assert done.result == {"shipped": 1}

    listed = manage(django_dsn, "pgtasq", "tasks", "list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "order.ship" in listed.stdout and json.loads(listed.stdout)


def test_manage_py_pgtasq_worker_takes_djangos_options_and_reports_a_bad_app(
    django_dsn: str,
) -> None:
    # --settings is Django's: it is not handed to pgtasq, which would refuse it.
    settings = "tests.django_project.settings"
    with_settings = manage(django_dsn, "pgtasq_worker", "--burst", "--settings", settings)
    assert with_settings.returncode == 0, with_settings.stderr
    unknown = manage(django_dsn, "pgtasq_worker", "no_such_module:consumer", "--burst")
    assert unknown.returncode != 0
    assert "no_such_module" in unknown.stderr


def test_pgtasq_worker_needs_a_consumer(django_dsn: str) -> None:
    from django.core.management.base import CommandError
    from django.test import override_settings

    from pgtasq.contrib.django.management.commands.pgtasq_worker import worker_args

    assert worker_args(["--burst"])[:2] == ["worker", "tests.django_project.shop.tasks:consumer"]
    assert worker_args(["a.b:c", "--burst"]) == ["worker", "a.b:c", "--burst"]
    # No PGTASQ["CONSUMER"]: the consumer of Django tasks when TASKS uses pgtasq's backend.
    with override_settings(PGTASQ={"SCHEMA": SCHEMA}):
        assert worker_args([]) == ["worker", "pgtasq.contrib.django.backend:consumer"]
    with (
        override_settings(PGTASQ={"SCHEMA": SCHEMA}, TASKS={}),
        pytest.raises(CommandError, match="no consumer to run"),
    ):
        worker_args(["--burst"])


def test_django_handler_closes_the_threads_connection_after_each_task(django_dsn: str) -> None:
    from django.db import connections

    from pgtasq import Consumer, TaskContext
    from pgtasq.contrib.django.handlers import django_handler
    from pgtasq.testing import run_until_empty
    from tests.django_project.shop.models import Order

    seen: list[Any] = []  # the Django database wrapper of each handler's thread

    def count_orders(ctx: TaskContext) -> int:
        seen.append(connections["default"])
        return Order.objects.count()

    def run(handler: Any) -> Any:
        consumer = Consumer(schema=SCHEMA, queues=["orm"])
        consumer.register("orm.count", handler)
        Producer(schema=SCHEMA).enqueue("orm.count", queue="orm", conn=connections["default"])
        assert run_until_empty(consumer, django_dsn).completed == 1
        return seen[-1]

    bare = run(count_orders)
    assert bare.connection is not None  # left open in the worker's (ended) thread
    bare.connection.close()  # psycopg's: Django's wrapper belongs to that thread
    wrapped = run(django_handler(count_orders))
    assert wrapped is not bare  # another worker, another thread
    assert wrapped.connection is None  # closed after the task (CONN_MAX_AGE = 0)
