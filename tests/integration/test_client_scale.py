"""The Client's cost grows with what it is asked for, never with what it already did or
with what it does not show: bulk operations by ids or by filter stay linear, and listing
does not fetch whole payloads."""

from __future__ import annotations

import json

import psycopg
import pytest

from pgtasq import AsyncClient, Client, Preview, Producer, Task, TaskFilter, _sql

N = 20_000


def _enqueue(
    dsn: str, schema: str, n: int, *, failed: bool = False, delay: float | None = None
) -> list[int]:
    with Producer(dsn, schema=schema) as producer:
        tasks = [Task("t", queue="q", delay=delay)] * n
        ids = [info.id for info in producer.enqueue_many(tasks)]
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


@pytest.mark.parametrize("action", ["cancel", "retry", "delete", "run"])
@pytest.mark.parametrize("by", ["ids", "queue"])
def test_bulk_operations_read_each_row_a_bounded_number_of_times(
    pg_dsn: str, schema: str, action: str, by: str
) -> None:
    """Each batch starts where the last one stopped and reaches its rows by primary key: no
    batch reads again the rows earlier batches changed (by ids: each batch gets its own
    slice of the ids), and none scans the table. (Before: 20 batches of 1000 each read
    every id of the list again, and joined the table by a sequential scan; 60k ids took 15
    times as long as 20k.)"""
    delay = 3600.0 if action == "run" else None  # run: scheduled tasks
    ids = _enqueue(pg_dsn, schema, N, failed=action == "retry", delay=delay)
    task_filter = TaskFilter().ids(*reversed(ids)) if by == "ids" else TaskFilter().queues("q")
    with psycopg.connect(pg_dsn) as conn:
        changed = getattr(Client(schema=schema), f"{action}_tasks")(task_filter, conn=conn)
        read = _rows_read(conn, schema)
        conn.rollback()
    assert changed == N
    assert read <= 3 * N, f"{read} rows read to change {N}"


BIG = "x" * 1_000_000  # a payload of 1 MB of JSON


def _big_tasks(dsn: str, schema: str, n: int) -> list[int]:
    """``n`` failed tasks each carrying 1 MB of payload, 1 MB of result and two errors with
    1 MB tracebacks."""
    with Producer(dsn, schema=schema) as producer:
        ids = [producer.enqueue(Task("big", {"blob": BIG}, queue="big")).id for _ in range(n)]
    error = {"attempt": 1, "error": "E", "message": "m", "traceback": BIG}
    with psycopg.connect(dsn) as conn:
        conn.execute(
            f"UPDATE {schema}.tasks SET status = 'failed', finalized_at = now(), attempts = 2, "
            "result = to_jsonb(%(big)s::text), "
            "errors = jsonb_build_array(%(first)s::jsonb, %(last)s::jsonb)",
            {
                "big": BIG,
                "first": json.dumps(error),
                "last": json.dumps({**error, "attempt": 2, "message": "latest"}),
            },
        )
    return ids


def test_a_preview_listing_reads_what_it_shows(pg_dsn: str, schema: str) -> None:
    """``full=False``: the statement sends the first 201 characters of payload and result and
    the latest error without its traceback, whatever the tasks carry; `get_task` and the
    full listing still read everything."""
    ids = _big_tasks(pg_dsn, schema, 20)
    stmt, params = _sql.task_list(schema, TaskFilter(), full=False)
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(stmt.text, params).fetchall()
    sent = sum(len(str(value)) for row in rows for value in row)
    assert len(rows) == 20 and sent < 20 * 2000, sent

    with Client(pg_dsn, schema=schema) as client:
        page = client.list_tasks(full=False)
        assert [t.id for t in page.tasks] == ids and page.total == 20
        for task in page.tasks:
            assert task.payload == Preview(json.dumps({"blob": BIG})[:200], truncated=True)
            assert task.result == Preview(json.dumps(BIG)[:200], truncated=True)
            assert task.errors == [{"attempt": 2, "error": "E", "message": "latest"}]
            assert (task.type, task.queue, task.attempts) == ("big", "big", 2)
        full = client.list_tasks(TaskFilter().limit(2))
        assert full.tasks[0].payload == {"blob": BIG} and len(full.tasks[0].errors) == 2
        assert client.get_task(ids[0]).result == BIG


async def test_preview_listing_of_small_values_async(pg_dsn: str, schema: str) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        small = producer.enqueue("t", {"a": [1, 2]})
        empty = producer.enqueue("t")
    async with AsyncClient(pg_dsn, schema=schema) as client:
        page = await client.list_tasks(full=False)
    assert [t.payload for t in page.tasks] == [
        Preview('{"a": [1, 2]}', truncated=False),
        Preview("null", truncated=False),
    ]
    assert [t.id for t in page.tasks] == [small.id, empty.id]
    assert all(t.result is None and t.errors == [] for t in page.tasks)
    assert str(Preview("ab", truncated=True)) == "ab…"
