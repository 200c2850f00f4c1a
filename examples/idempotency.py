"""Idempotency keys: at most one task per key.

    python examples/idempotency.py

- A taken key returns the existing task, unchanged, with ``created`` False.
- ``on_conflict="raise"`` raises DuplicateTask instead, and the caller's transaction stays usable.
- A key whose transaction rolled back was never taken.

Uses PGTASQ_DSN when it is set; otherwise starts the embedded PostgreSQL
(pip install 'pgtasq[embedded]') with its data in a temporary folder.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import psycopg

import pgtasq
from pgtasq import DuplicateTask, Task


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
    run = uuid.uuid4().hex[:8]  # keys are unique forever: make this run's keys new
    key = f"invoice-{run}-42"

    with pgtasq.Producer(dsn) as producer:  # own pool; each call commits on its own
        # 1. The first enqueue with a key creates the task.
        first = producer.enqueue("invoices.send", {"invoice": 42}, idempotency_key=key)
        print(f"first enqueue:  task #{first.id}, created={first.created}, payload={first.payload}")
        assert first.created

        # 2. The same key again returns that task, unchanged; the new payload is ignored.
        again = producer.enqueue(
            "invoices.send", {"invoice": 42, "retry": True}, idempotency_key=key
        )
        print(f"second enqueue: task #{again.id}, created={again.created}, payload={again.payload}")
        assert again.id == first.id
        assert not again.created
        assert again.payload == {"invoice": 42}

        # 3. enqueue_many mixes new and taken keys; a key repeated within the batch counts once.
        new_key = f"invoice-{run}-43"
        infos = producer.enqueue_many(
            [
                Task("invoices.send", {"invoice": 42}, idempotency_key=key),
                Task("invoices.send", {"invoice": 43}, idempotency_key=new_key),
                Task("invoices.send", {"invoice": 43}, idempotency_key=new_key),
            ]
        )
        print("enqueue_many:   " + ", ".join(f"#{i.id} created={i.created}" for i in infos))
        assert [i.created for i in infos] == [False, True, False]
        assert infos[0].id == first.id
        assert infos[1].id == infos[2].id

        # 4. on_conflict="raise": DuplicateTask, and the surrounding transaction goes on.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS example_audit (note text NOT NULL)")
            note = f"audit-{run}"
            with conn.transaction():
                duplicate: DuplicateTask | None = None
                try:
                    producer.enqueue(
                        "invoices.send",
                        {"invoice": 42},
                        idempotency_key=key,
                        conn=conn,
                        on_conflict="raise",
                    )
                except DuplicateTask as exc:
                    duplicate = exc
                assert duplicate is not None, "expected DuplicateTask"
                print(
                    f"on_conflict='raise': DuplicateTask(task_id={duplicate.task_id}, "
                    f"status={duplicate.existing.status})"
                )
                assert duplicate.task_id == first.id
                assert duplicate.idempotency_key == key
                # The transaction is still usable: this INSERT runs and commits.
                conn.execute("INSERT INTO example_audit (note) VALUES (%s)", [note])
            row = conn.execute(
                "SELECT count(*) FROM example_audit WHERE note = %s", [note]
            ).fetchone()
            assert row is not None
            assert row[0] == 1
            print("  the caller's transaction continued and committed its own INSERT")

            # 5. A key enqueued in a transaction that rolled back is free again.
            fresh_key = f"invoice-{run}-44"
            try:
                with conn.transaction():
                    producer.enqueue(
                        "invoices.send", {"invoice": 44}, idempotency_key=fresh_key, conn=conn
                    )
                    raise Rollback
            except Rollback:
                pass
            retried = producer.enqueue("invoices.send", {"invoice": 44}, idempotency_key=fresh_key)
            print(
                f"after a rollback the key is free: task #{retried.id}, created={retried.created}"
            )
            assert retried.created

    print("OK")


if __name__ == "__main__":
    main()
