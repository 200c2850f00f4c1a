"""The worker's statements keep their plans on a real table: analyzed, with history.

Each statement is prepared (as psycopg does after five runs) and explained with ANALYZE
under ``plan_cache_mode = force_generic_plan`` and ``force_custom_plan``. The table holds
200 000 finished rows, thousands of rows running for other workers and a pending backlog,
and was analyzed before this worker claimed anything (as autovacuum leaves a real one), so
the statistics say that this worker runs nothing. Every plan node must touch O(batch) rows:
no sequential scan of the tasks table, and no node whose rows (kept or filtered out) times
its loops exceed a small multiple of the batch.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from pgtasq import _sql
from tests.conftest import clone_schema

HISTORY = 200_000  # finished rows
OTHERS_RUNNING = 5_000  # rows running for other workers
BACKLOG = 20_000  # pending rows, ready
EXPIRED = 40  # running rows whose lease ran out
DUE_FOR_CLEANING = 50  # finished rows past the default retention
KEPT_OWN_RETENTION = 5_000  # finished rows with a retention of their own, not due
DUE_OWN_RETENTION = 40  # finished rows past a retention of their own
BATCH = 100  # what this worker claims and records at once
WORKER = "plans-test:1:me"
BIG_BATCH = 5_000  # as many as one outcome statement takes (FLUSH_MAX_ROWS)
BIG_WORKER = "plans-test:2:big"
# A node may touch each row of the batch a few times (the CTEs, the join, the update).
TOUCHED_MAX = 4 * BATCH

MODES = ("force_generic_plan", "force_custom_plan")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@pytest.fixture(scope="module")
def table(pg_dsn: str) -> Iterator[tuple[str, dict[str, tuple[list[int], list[datetime]]]]]:
    """A migrated schema with history, analyzed, then a batch claimed by WORKER and a large
    one by BIG_WORKER: the schema, and worker -> (ids, claim times)."""
    schema = "t_" + uuid.uuid4().hex[:12]
    clone_schema(pg_dsn, schema)
    s = schema
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO {s}.tasks (queue, type, status, max_attempts, attempts, run_at,
                attempted_at, finalized_at, created_at)
            SELECT 'q' || (g % 3), 't', 'completed', 3, 1, now() - interval '1 hour',
                   now() - interval '1 hour', now() - interval '1 hour' + g * interval '1 ms',
                   now() - interval '1 hour'
            FROM generate_series(1, {HISTORY}) g"""
        )
        conn.execute(
            f"""INSERT INTO {s}.tasks (queue, type, status, max_attempts, attempts, run_at,
                attempted_at, finalized_at, created_at)
            SELECT 'q0', 't', 'completed', 3, 1, now() - interval '3 days',
                   now() - interval '3 days', now() - interval '2 days', now() - interval '3 days'
            FROM generate_series(1, {DUE_FOR_CLEANING}) g"""
        )
        # Finished rows with a retention of their own: a week (not due), and a minute or two
        # (due: finished an hour ago).
        conn.execute(
            f"""INSERT INTO {s}.tasks (queue, type, status, max_attempts, attempts, run_at,
                attempted_at, finalized_at, created_at, retention)
            SELECT 'q0', 't', 'completed', 3, 1, now() - interval '1 hour',
                   now() - interval '1 hour', now() - interval '1 hour',
                   now() - interval '1 hour',
                   CASE WHEN g <= {DUE_OWN_RETENTION} THEN interval '1 minute' * (1 + g % 2)
                        ELSE interval '7 days' END
            FROM generate_series(1, {KEPT_OWN_RETENTION + DUE_OWN_RETENTION}) g"""
        )
        conn.execute(
            f"""INSERT INTO {s}.tasks (queue, type, max_attempts)
            SELECT 'q' || (g % 3), 't', 3 FROM generate_series(1, {BACKLOG}) g"""
        )
        # Analyzed while nothing runs, as autovacuum often leaves a real table: the
        # statistics say that no row is running, so a plan that trusts them to pick running
        # rows (through tasks_lease_idx) walks every running row instead.
        conn.execute(f"VACUUM ANALYZE {s}.tasks")
        conn.execute(
            f"""INSERT INTO {s}.tasks (queue, type, status, max_attempts, attempts, attempted_at,
                locked_by, locked_until)
            SELECT 'q' || (g % 3), 't', 'running', 3, 1, now(), 'other:' || (g % 20),
                   now() + interval '1 hour'
            FROM generate_series(1, {OTHERS_RUNNING}) g"""
        )
        conn.execute(
            f"""INSERT INTO {s}.tasks (queue, type, status, max_attempts, attempts, attempted_at,
                locked_by, locked_until)
            SELECT 'q2', 't', 'running', 3, 1, now() - interval '1 hour', 'dead:1',
                   now() - interval '1 minute'
            FROM generate_series(1, {EXPIRED}) g"""
        )
        held = {}
        for worker, queue, size in ((WORKER, "q1", BATCH), (BIG_WORKER, "q2", BIG_BATCH)):
            params = {"queue": queue, "types": ["t"], "limit": size, "worker": worker,
                      "lease": 30.0}  # fmt: skip
            rows = conn.execute(_sql.statements(s).task_claim.text, params).fetchall()
            assert len(rows) == size
            claimed = conn.execute(
                f"SELECT id, attempted_at FROM {s}.tasks WHERE locked_by = %s ORDER BY id",
                [worker],
            ).fetchall()
            held[worker] = ([r[0] for r in claimed], [r[1] for r in claimed])
    yield schema, held
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _params(
    name: str, ids: list[int], claimed_at: list[datetime], worker_id: str = WORKER
) -> dict[str, Any]:
    n = len(ids)
    mine = {"worker": worker_id, "id": ids, "claimed_at": claimed_at}
    worker = {"host": "h", "pid": 1, "queues": "{}", "concurrency": BATCH, "metadata": "{}"}
    return {
        "task_claim": {"queue": "q0", "types": ["t"], "limit": BATCH, "worker": WORKER,
                       "lease": 30.0},
        # the worker's queues: three with a backlog, the others empty
        "queue_ready": {"queues": ["q0", "q1", "q2"] + [f"e{i}" for i in range(BATCH - 3)],
                        "types": ["t"]},
        # a lease so long that every lease is due: the heartbeat extends the whole batch
        "task_heartbeat": {**mine, **worker, "lease": 86400.0},
        "task_finish_many": {**mine, "status": ["completed"] * n, "delay": [0.0] * n,
                             "refund": [0] * n, "error": [None] * n, "result": [None] * n},
        "task_release_many": mine,
        "task_rescue_expired": {"limit": 1000},
        "task_clean": {"retention": 86400.0, "batch": 1000},
    }[name]  # fmt: skip


def explain(
    conn: psycopg.Connection[Any], text: str, params: dict[str, Any], mode: str
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE) of the statement, prepared, under a plan_cache_mode."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in order:
            order.append(match.group(1))
        return f"${order.index(match.group(1)) + 1}"

    body = _PLACEHOLDER.sub(number, text)
    cur = psycopg.ClientCursor(conn)
    cur.execute(f"SET LOCAL plan_cache_mode = {mode}")
    cur.execute(f"PREPARE plans_test AS {body}")
    try:
        args = ", ".join(cur.mogrify("%s", [params[name]]) for name in order)
        cur.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE plans_test({args})")
        row = cur.fetchone()
    finally:
        cur.execute("DEALLOCATE plans_test")
    assert row is not None
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return dict(plan[0]["Plan"])


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def touched(node: dict[str, Any]) -> float:
    """Rows a node produced or threw away, over all its loops."""
    per_loop = (
        node.get("Actual Rows", 0)
        + node.get("Rows Removed by Filter", 0)
        + node.get("Rows Removed by Join Filter", 0)
        + node.get("Rows Removed by Index Recheck", 0)
    )
    return float(per_loop * node.get("Actual Loops", 1))


def describe(node: dict[str, Any]) -> str:
    return (
        f"{node['Node Type']} {node.get('Relation Name', '')} {node.get('Index Name', '')} "
        f"rows={node.get('Actual Rows')} loops={node.get('Actual Loops')} "
        f"removed={node.get('Rows Removed by Filter', 0)}+"
        f"{node.get('Rows Removed by Join Filter', 0)}"
    )


@pytest.mark.parametrize("events", [False, True], ids=["plain", "events"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "name",
    [
        "task_claim",
        "queue_ready",
        "task_heartbeat",
        "task_finish_many",
        "task_release_many",
        "task_rescue_expired",
        "task_clean",
    ],
)
def test_worker_statement_touches_only_its_batch(
    pg_dsn: str,
    table: tuple[str, dict[str, tuple[list[int], list[datetime]]]],
    name: str,
    mode: str,
    events: bool,
) -> None:
    schema, held = table
    ids, claimed_at = held[WORKER]
    stmt = getattr(_sql.statements(schema, worker_events=events), name)
    with psycopg.connect(pg_dsn) as conn:
        plan = explain(conn, stmt.text, _params(name, ids, claimed_at), mode)
        conn.rollback()  # every test sees the same table
    problems = [
        describe(node)
        for node in nodes(plan)
        if (node.get("Relation Name") == "tasks" and node["Node Type"] == "Seq Scan")
        or touched(node) > TOUCHED_MAX
    ]
    assert not problems, f"{name} under {mode}:\n" + "\n".join(problems)
    changed = plan["Actual Rows"] if name != "task_heartbeat" else None
    if name in ("task_finish_many", "task_release_many", "task_claim"):
        assert changed == BATCH  # the statement did its work
    if name == "queue_ready":
        assert changed == 3
    if name == "task_rescue_expired":
        assert changed == EXPIRED
    if name == "task_clean":
        assert changed == DUE_FOR_CLEANING + DUE_OWN_RETENTION


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["task_heartbeat", "task_finish_many", "task_release_many"])
def test_large_batches_stay_linear(
    pg_dsn: str,
    table: tuple[str, dict[str, tuple[list[int], list[datetime]]]],
    name: str,
    mode: str,
) -> None:
    """With as many ids as a statement takes, the planner may prefer one pass over the
    table to thousands of probes (this table is only some 45 times the batch), a choice its
    costs make correctly. What it must never do is rescan the array once per row of the
    table: O(table + batch), never O(table x batch) or O(batch^2)."""
    schema, held = table
    ids, claimed_at = held[BIG_WORKER]
    stmt = getattr(_sql.statements(schema), name)
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {schema}.tasks").fetchone()
        assert rows is not None
        plan = explain(conn, stmt.text, _params(name, ids, claimed_at, BIG_WORKER), mode)
        conn.rollback()
    limit = 4 * BIG_BATCH + rows[0]
    problems = [describe(node) for node in nodes(plan) if touched(node) > limit]
    assert not problems, f"{name} under {mode}:\n" + "\n".join(problems)
    if name != "task_heartbeat":
        assert plan["Actual Rows"] == BIG_BATCH
