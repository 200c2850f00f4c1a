"""What a Client or Producer call raises when the database fails it mid-call: pgtasq's
errors on pgtasq's own pool, the driver's own on the caller's connection (but for a schema
that is not migrated, which is pgtasq's to say on either)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from pgtasq import (
    AsyncClient,
    AsyncProducer,
    Client,
    DatabaseMisconfigured,
    DatabaseUnavailable,
    Producer,
)


def test_an_unmigrated_schema_is_named_with_the_fix(pg_dsn: str, fresh_schema: str) -> None:
    fix = f"run pgtasq --schema {fresh_schema} migrate"
    with (
        Client(pg_dsn, schema=fresh_schema) as client,
        Producer(pg_dsn, schema=fresh_schema) as producer,
    ):
        for call in (lambda: client.get_task(1), client.stats, lambda: producer.enqueue("t")):
            with pytest.raises(DatabaseMisconfigured, match=fix) as raised:
                call()
            assert raised.value.reason == "not_migrated"
            assert isinstance(raised.value.__cause__, psycopg.errors.UndefinedTable)
    with psycopg.connect(pg_dsn) as conn:  # the caller's connection: the same error
        with pytest.raises(DatabaseMisconfigured, match=fix):
            Producer(schema=fresh_schema).enqueue("t", conn=conn)
        conn.rollback()
        with pytest.raises(DatabaseMisconfigured, match=fix):
            Client(schema=fresh_schema).get_task(1, conn=conn)


def _kill(dsn: str, application_name: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _named(dsn: str) -> tuple[str, str]:
    name = "pgtasq_test_" + uuid.uuid4().hex[:8]
    joiner = "&" if "?" in dsn else "?"
    return f"{dsn}{joiner}application_name={name}", name


def test_a_server_lost_mid_call_is_database_unavailable(pg_dsn: str, schema: str) -> None:
    dsn, name = _named(pg_dsn)
    with (
        Client(dsn, schema=schema, pool_min_size=1) as client,
        Producer(dsn, schema=schema, pool_min_size=1) as producer,
    ):
        client.stats()
        producer.enqueue("t")
        assert _kill(pg_dsn, name) >= 2
        with pytest.raises(DatabaseUnavailable, match="check that the server is running"):
            client.stats()
        with pytest.raises(DatabaseUnavailable, match="check that the server is running"):
            producer.enqueue("t")
        # The pool replaces the broken connections: the next calls work.
        assert client.stats() is not None
        assert producer.enqueue("t").created


async def test_the_async_calls_say_the_same(pg_dsn: str, schema: str) -> None:
    dsn, name = _named(pg_dsn)
    async with (
        AsyncClient(dsn, schema=schema, pool_min_size=1) as client,
        AsyncProducer(dsn, schema=schema, pool_min_size=1) as producer,
    ):
        await client.stats()
        await producer.enqueue("t")
        assert _kill(pg_dsn, name) >= 2
        with pytest.raises(DatabaseUnavailable):
            await client.stats()
        with pytest.raises(DatabaseUnavailable):
            await producer.enqueue("t")


def test_the_callers_own_connection_keeps_the_drivers_error(pg_dsn: str, schema: str) -> None:
    dsn, name = _named(pg_dsn)
    with psycopg.connect(dsn) as conn:
        Producer(schema=schema).enqueue("t", conn=conn)
        _kill(pg_dsn, name)
        with pytest.raises(psycopg.OperationalError):
            Producer(schema=schema).enqueue("t", conn=conn)
        with pytest.raises(psycopg.OperationalError):
            Client(schema=schema).get_task(1, conn=conn)
