"""list_tasks on a big table: the total is exact when cheap, an estimate (or absent) otherwise,
so a page costs what the page costs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from pgtasq import AsyncClient, Client, InvalidFilter, TaskFilter, _sql
from pgtasq import _client_ops as ops
from pgtasq.filters import COUNT_EXACT_MAX
from tests.conftest import clone_schema

BIG = 30_000  # rows in queue "big"; COUNT_EXACT_MAX of them in queue "cap"


@pytest.fixture(scope="module")
def big_schema(pg_dsn: str) -> Iterator[str]:
    """A migrated schema with BIG + COUNT_EXACT_MAX pending tasks, analyzed."""
    import uuid

    name = "t_" + uuid.uuid4().hex[:12]
    clone_schema(pg_dsn, name)
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        for queue, n in (("big", BIG), ("cap", COUNT_EXACT_MAX)):
            c.execute(
                f"INSERT INTO {name}.tasks (queue, type, max_attempts) "
                "SELECT %s, 'job', 1 FROM generate_series(1, %s)",
                (queue, n),
            )
        c.execute(f"VACUUM ANALYZE {name}.tasks")
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA {name} CASCADE")


def test_total_is_exact_up_to_the_cap_then_an_estimate(pg_dsn: str, big_schema: str) -> None:
    with Client(pg_dsn, schema=big_schema) as client:
        capped = client.list_tasks(TaskFilter().queues("cap").limit(5))
        assert (capped.total, capped.total_exact) == (COUNT_EXACT_MAX, True)
        small = client.list_tasks(TaskFilter().queues("cap").ids(1, 2, 3, BIG + 1))
        assert (small.total, small.total_exact) == (1, True)

        page = client.list_tasks(TaskFilter().queues("big").limit(5))
        assert len(page.tasks) == 5 and page.next_cursor is not None
        assert page.total_exact is False
        assert page.total is not None and page.total > COUNT_EXACT_MAX
        assert abs(page.total - BIG) <= BIG // 10  # the planner's estimate, analyzed table

        exact = client.list_tasks(TaskFilter().queues("big").limit(5), count="exact")
        assert (exact.total, exact.total_exact) == (BIG, True)
        everything = client.list_tasks(count="exact")
        assert everything.total == BIG + COUNT_EXACT_MAX
        none = client.list_tasks(TaskFilter().queues("big").limit(5), count="none")
        assert (none.total, none.total_exact) == (None, False)
        assert [t.id for t in none.tasks] == [t.id for t in page.tasks]


def test_the_estimate_is_never_below_what_was_counted(pg_dsn: str, schema: str) -> None:
    """On a table never analyzed the planner guesses a fraction of a percent for an equality:
    the total still says more than the cap."""
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(
            f"INSERT INTO {schema}.tasks (queue, type, max_attempts) "
            "SELECT 'big', 'job', 1 FROM generate_series(1, %s)",
            (COUNT_EXACT_MAX + 500,),
        )
        stmt, params = _sql.task_count_estimate(schema, TaskFilter().queues("big"))
        plan = conn.execute(stmt.text.encode(), params).fetchone()
        assert plan is not None and plan[0][0]["Plan"]["Plan Rows"] <= COUNT_EXACT_MAX
        page = Client(schema=schema).list_tasks(TaskFilter().queues("big").limit(1), conn=conn)
    assert page.total_exact is False and page.total == COUNT_EXACT_MAX + 1


async def test_async_client_counts_the_same_way(pg_dsn: str, big_schema: str) -> None:
    async with AsyncClient(pg_dsn, schema=big_schema) as client:
        page = await client.list_tasks(TaskFilter().queues("big").limit(2))
        exact = await client.list_tasks(TaskFilter().queues("big").limit(2), count="exact")
    assert page.total_exact is False and page.total is not None and page.total > COUNT_EXACT_MAX
    assert (exact.total, exact.total_exact) == (BIG, True)


def test_a_bad_count_mode_is_refused_before_any_sql(pg_dsn: str, big_schema: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("SELECT 1")  # the caller's open transaction
        with pytest.raises(InvalidFilter, match="count: expected one of auto, exact, none"):
            Client(schema=big_schema).list_tasks(count="all", conn=conn)  # type: ignore[arg-type]
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert conn.execute("SELECT 2").fetchone() == (2,)  # still usable


def _rows_read(conn: psycopg.Connection[Any], schema: str) -> int:
    """Rows and index entries this transaction has read from the tasks table and its indexes."""
    row = conn.execute(
        "SELECT sum(pg_stat_get_xact_tuples_returned(c.oid)"
        " + pg_stat_get_xact_tuples_fetched(c.oid)) FROM pg_class c"
        " WHERE c.oid = %(t)s::regclass OR c.oid IN "
        "(SELECT indexrelid FROM pg_index WHERE indrelid = %(t)s::regclass)",
        {"t": f"{schema}.tasks"},
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_page_of_a_big_table_does_not_read_every_row(pg_dsn: str, big_schema: str) -> None:
    """The default page reads about COUNT_EXACT_MAX rows for its total, not all 40 000; the
    exact count reads them all (the check itself is sound)."""
    client = Client(schema=big_schema)
    with psycopg.connect(pg_dsn) as conn:
        start = _rows_read(conn, big_schema)
        client.list_tasks(TaskFilter().limit(20), conn=conn)
        default = _rows_read(conn, big_schema) - start
        assert default <= 2 * (COUNT_EXACT_MAX + 1 + 21)
        start = _rows_read(conn, big_schema)
        client.list_tasks(TaskFilter().limit(20), count="exact", conn=conn)
        exact = _rows_read(conn, big_schema) - start
    assert exact >= BIG + COUNT_EXACT_MAX


def test_the_page_statement_counts_at_most_the_cap(pg_dsn: str, big_schema: str) -> None:
    """EXPLAIN ANALYZE of the statement list_tasks sends: no plan node produces more rows than
    the cap (plus the page); under the exact count the count's scan produces all of them."""
    stmts = _sql.statements(big_schema)

    def most_rows(count: Any) -> int:
        stmt, params = next(ops.list_tasks(stmts, TaskFilter().limit(20), count))
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute(
                ("EXPLAIN (ANALYZE, FORMAT JSON) " + stmt.text).encode(), params
            ).fetchone()
        assert row is not None

        def walk(node: dict[str, Any]) -> Iterator[int]:
            yield int(node["Actual Rows"] * node["Actual Loops"])
            for child in node.get("Plans", []):
                yield from walk(child)

        return max(walk(row[0][0]["Plan"]))

    assert most_rows("auto") <= COUNT_EXACT_MAX + 1
    assert most_rows("exact") == BIG + COUNT_EXACT_MAX
