"""Which commits wait for the WAL flush: the worker's own bookkeeping does not, a handler's
own transaction (`ctx.complete`) does, and nothing is left on a connection afterwards."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgtasq import Producer, Task, _sql

WORKER = "w-durability"


def _setting(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_setting('synchronous_commit') AS s").fetchone()
    assert row is not None
    return str(row["s"])


def _params(name: str, ids: list[int], claimed: list[datetime]) -> dict[str, Any]:
    if name == "task_claim":
        return {"queue": "default", "types": ["t"], "limit": 10, "worker": WORKER, "lease": 30}
    common = {"id": ids, "claimed_at": claimed, "worker": WORKER}
    if name == "task_heartbeat":
        return {
            **common, "lease": 30, "host": "h", "pid": 1, "queues": '["default"]',
            "concurrency": 1, "metadata": "{}",
        }  # fmt: skip
    if name == "task_rescue_expired":
        return {"limit": 10}
    if name == "task_release_many":
        return common
    n = len(ids)
    return {
        **common, "status": ["completed"] * n, "delay": [0.0] * n, "refund": [0] * n,
        "error": [None] * n, "result": [None] * n,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("task_claim", "off"),
        ("task_heartbeat", "off"),
        ("task_finish_many", "off"),
        ("task_release_many", "off"),
        ("task_rescue_expired", "off"),
        ("task_finish_many_in_tx", "on"),
    ],
)
def test_worker_statements_set_synchronous_commit_for_their_own_transaction_only(
    pg_dsn: str, schema: str, name: str, expected: str
) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue(Task("t", {}))
    stmts = _sql.statements(schema)
    with psycopg.connect(pg_dsn, row_factory=dict_row) as conn:
        claimed = conn.execute(stmts.task_claim.text, _params("task_claim", [], [])).fetchall()
        conn.commit()
        ids = [row["id"] for row in claimed]
        at = [row["attempted_at"] for row in claimed]
        if name == "task_rescue_expired":  # nothing to rescue: the setting holds all the same
            ids, at = [], []
        assert _setting(conn) == "on"
        # Inside one explicit transaction, so that the setting can be read before it ends.
        conn.execute(getattr(stmts, name).text, _params(name, ids, at)).fetchall()
        assert _setting(conn) == expected
        conn.commit()
        assert _setting(conn) == "on"  # local to the transaction: nothing left behind
