"""The tasks table is vacuumed by autovacuum after churn, on a server that runs autovacuum.

The server's defaults vacuum a table once a fifth of it is dead: on a table with 100 000
finished rows, after 20 050 dead row versions. pgtasq_0002 lowers that to 1 %, 1 050. Draining
2 000 tasks leaves about 4 000 dead versions (one per claim, one per outcome): enough with the
settings, far from enough without them.
"""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from pgtasq import Consumer, Producer, Task, TaskContext

HISTORY = 100_000
DRAINED = 2_000


@pytest.fixture
def schema(migrated_schema: str) -> str:
    """Here the schema is made by running the migrations, not cloned (tests/conftest.py)."""
    return migrated_schema


def _autovacuum_count(c: psycopg.Connection[tuple[object, ...]], schema: str) -> int:
    row = c.execute(
        "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = %s::regclass",
        (f"{schema}.tasks",),
    ).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


@pytest.mark.slow
def test_autovacuum_cleans_the_tasks_table_after_a_drain(pg_dsn: str, schema: str) -> None:
    if os.environ.get("PGTASQ_TEST_DSN"):
        pytest.skip("needs the embedded server: the test sets autovacuum_naptime on it")
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        if c.execute("SHOW autovacuum").fetchone() != ("on",):
            pytest.skip("autovacuum is off on this server")
        c.execute(
            f"INSERT INTO {schema}.tasks (queue, type, status, max_attempts, finalized_at) "
            "SELECT 'default', 'noop', 'completed', 1, now() FROM generate_series(1, %s)",
            (HISTORY,),
        )
        # A backend sends its table counters at most once a second: without this flush, the
        # 100 000 inserts could arrive after the VACUUM and count as not vacuumed yet.
        c.execute("SELECT pg_stat_force_next_flush()")
        c.execute("SELECT 1")
        c.execute(f"VACUUM ANALYZE {schema}.tasks")
        assert c.execute(
            "SELECT n_dead_tup, n_ins_since_vacuum FROM pg_stat_user_tables "
            "WHERE relid = %s::regclass",
            (f"{schema}.tasks",),
        ).fetchone() == (0, 0)
        before = _autovacuum_count(c, schema)
        # The launcher looks at each database once per naptime (1 min by default).
        c.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
        c.execute("SELECT pg_reload_conf()")
        try:
            with Producer(pg_dsn, schema=schema) as producer:
                producer.enqueue_many([Task("noop", {}) for _ in range(DRAINED)])
            consumer = Consumer(schema=schema)

            @consumer.task("noop")
            async def noop(ctx: TaskContext) -> None:
                return None

            assert consumer.run(pg_dsn, burst=True, handle_signals=False).completed == DRAINED
            deadline = time.monotonic() + 60
            while (after := _autovacuum_count(c, schema)) == before and time.monotonic() < deadline:
                time.sleep(0.2)
            dead = c.execute(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %s::regclass",
                (f"{schema}.tasks",),
            ).fetchone()
        finally:
            c.execute("ALTER SYSTEM RESET autovacuum_naptime")
            c.execute("SELECT pg_reload_conf()")
    assert after > before
    assert dead is not None
    assert int(dead[0]) < DRAINED  # type: ignore[call-overload]
