"""Django's connection as ``conn=``, in a real Django project (tests/django_project) on a real
PostgreSQL through psycopg 3: the task commits and rolls back with ``transaction.atomic``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

pytest.importorskip("django")

from pgtasq import (
    AsyncProducer,
    Client,
    ConfigurationError,
    DuplicateTask,
    Producer,
    Task,
)
from tests.conftest import count_tasks


@pytest.fixture
def dj_schema(django_dsn: str) -> Iterator[str]:
    """A pgtasq schema in the Django database, for one test."""
    from pgtasq.testing import isolated_schema

    with isolated_schema(django_dsn, prefix="dj_") as name:
        yield name


def orders(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT count(*) FROM shop_order").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(autouse=True)
def _no_orders(django_dsn: str) -> Iterator[None]:
    yield
    with psycopg.connect(django_dsn, autocommit=True) as c:
        c.execute("DELETE FROM shop_order")


def test_commit_in_atomic_leaves_exactly_one_task(django_dsn: str, dj_schema: str) -> None:
    from django.db import connection, transaction

    from tests.django_project.shop.models import Order

    producer = Producer(schema=dj_schema)
    with transaction.atomic():
        Order.objects.create(item="book")
        info = producer.enqueue("order.ship", {"item": "book"}, conn=connection)
        assert count_tasks(django_dsn, dj_schema) == 0  # not committed yet
    assert count_tasks(django_dsn, dj_schema) == 1
    assert count_tasks(django_dsn, dj_schema, id=info.id, type="order.ship") == 1
    assert orders(django_dsn) == 1


def test_rollback_in_atomic_leaves_no_task(django_dsn: str, dj_schema: str) -> None:
    from django.db import connection, transaction

    from tests.django_project.shop.models import Order

    producer = Producer(schema=dj_schema)

    def place_order() -> None:
        with transaction.atomic():
            Order.objects.create(item="book")
            producer.enqueue_many([Task("order.ship", 1), Task("order.mail", 2)], conn=connection)
            raise RuntimeError("payment refused")

    with pytest.raises(RuntimeError, match="payment refused"):
        place_order()
    assert count_tasks(django_dsn, dj_schema) == 0
    assert orders(django_dsn) == 0


def test_set_rollback_and_a_rolled_back_savepoint_leave_no_task(
    django_dsn: str, dj_schema: str
) -> None:
    from django.db import connections, transaction

    producer = Producer(schema=dj_schema)

    def inner() -> None:
        with transaction.atomic():
            producer.enqueue("dropped", conn=connections["default"])
            raise RuntimeError("inner block fails")

    with transaction.atomic():
        producer.enqueue("kept", conn=connections["default"])
        with pytest.raises(RuntimeError, match="inner block"):
            inner()
    assert count_tasks(django_dsn, dj_schema, type="kept") == 1
    assert count_tasks(django_dsn, dj_schema, type="dropped") == 0
    with transaction.atomic():
        producer.enqueue("dropped", conn=connections["default"])
        transaction.set_rollback(True)
    assert count_tasks(django_dsn, dj_schema) == 1


def test_outside_atomic_django_autocommits(django_dsn: str, dj_schema: str) -> None:
    from django.db import connection

    Producer(schema=dj_schema).enqueue("now", conn=connection)
    assert count_tasks(django_dsn, dj_schema, type="now") == 1


def test_a_duplicate_key_raises_and_leaves_the_transaction_usable(
    django_dsn: str, dj_schema: str
) -> None:
    from django.db import connection, transaction

    from tests.django_project.shop.models import Order

    producer = Producer(schema=dj_schema)
    producer.enqueue("once", idempotency_key="k", conn=connection)
    with transaction.atomic():
        # The first statement of the block: our savepoint must not commit the block early.
        with pytest.raises(DuplicateTask):
            producer.enqueue("once", idempotency_key="k", on_conflict="raise", conn=connection)
        producer.enqueue("other", idempotency_key="k2", on_conflict="raise", conn=connection)
        Order.objects.create(item="still fine")
        transaction.set_rollback(True)
    assert count_tasks(django_dsn, dj_schema) == 1  # "other" rolled back with the block
    assert orders(django_dsn) == 0


def test_client_reads_through_django_connection(django_dsn: str, dj_schema: str) -> None:
    from django.db import connection, transaction

    with transaction.atomic():
        info = Producer(schema=dj_schema).enqueue("read", {"a": [1, {"b": None}]}, conn=connection)
        got = Client(schema=dj_schema).get_task(info.id, conn=connection)  # uncommitted, seen
        assert got.payload == {"a": [1, {"b": None}]}
        transaction.set_rollback(True)


def test_a_sqlite_database_is_refused_clearly(django_dsn: str) -> None:
    from django.db import connections

    with pytest.raises(ConfigurationError, match="'lite' is sqlite, not PostgreSQL"):
        Producer().enqueue("x", conn=connections["lite"])


def test_psycopg2_under_django_is_refused_clearly(django_dsn: str) -> None:
    psycopg2 = pytest.importorskip("psycopg2")
    from django.db import connections
    from django.db.backends.postgresql.base import DatabaseWrapper

    wrapper = DatabaseWrapper(dict(connections["default"].settings_dict), alias="old")
    wrapper.connection = psycopg2.connect(django_dsn)
    try:
        with pytest.raises(ConfigurationError, match="runs on psycopg2, not psycopg 3"):
            Producer().enqueue("x", conn=wrapper)
    finally:
        wrapper.connection.close()


def test_async_producer_refuses_django_connection(django_dsn: str) -> None:
    from django.db import connection

    async def main() -> Any:
        return await AsyncProducer().enqueue("x", conn=connection)

    with pytest.raises(TypeError, match="Django's connection is synchronous"):
        asyncio.run(main())
