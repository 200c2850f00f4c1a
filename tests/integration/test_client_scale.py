"""The Client's cost grows with what it is asked for, never with what it already did or
with what it does not show: bulk operations by ids or by filter stay linear, and listing
does not fetch whole payloads."""

from __future__ import annotations

import psycopg
import pytest

from pgtasq import Client, Producer, Task, TaskFilter

N = 20_000


def _enqueue(dsn: str, schema: str, n: int, *, failed: bool = False) -> list[int]:
    with Producer(dsn, schema=schema) as producer:
        ids = [info.id for info in producer.enqueue_many([Task("t", queue="q")] * n)]
    if failed:
        with psycopg.connect(dsn) as conn:
            conn.execute(f"UPDATE {schema}.tasks SET status = 'failed', finalized_at = now()")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ANALYZE {schema}.tasks")
    return ids


def _rows_read(conn: psycopg.Connection, schema: str) -> int:
    """Rows of the tasks table read so far by this transaction (sequential + index scans)."""
    row = conn.execute(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
        "FROM pg_stat_xact_user_tables WHERE schemaname = %s AND relname = 'tasks'",
        [schema],
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("action", ["cancel", "retry", "delete"])
@pytest.mark.parametrize("by", ["ids", "queue"])
def test_bulk_operations_read_each_row_a_bounded_number_of_times(
    pg_dsn: str, schema: str, action: str, by: str
) -> None:
    """Each batch starts where the last one stopped and reaches its rows by primary key: no
    batch reads again the rows earlier batches changed (by ids: each batch gets its own
    slice of the ids), and none scans the table. (Before: 20 batches of 1000 each read
    every id of the list again, and joined the table by a sequential scan; 60k ids took 15
    times as long as 20k.)"""
    ids = _enqueue(pg_dsn, schema, N, failed=action == "retry")
    task_filter = TaskFilter().ids(*reversed(ids)) if by == "ids" else TaskFilter().queues("q")
    with psycopg.connect(pg_dsn) as conn:
        changed = getattr(Client(schema=schema), f"{action}_tasks")(task_filter, conn=conn)
        read = _rows_read(conn, schema)
        conn.rollback()
    assert changed == N
    assert read <= 3 * N, f"{read} rows read to change {N}"
