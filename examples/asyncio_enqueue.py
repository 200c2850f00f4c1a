"""AsyncProducer on a psycopg AsyncConnection: enqueue_many in one transaction, one NOTIFY.

    python examples/asyncio_enqueue.py

Shows that a batch is all-or-none with its transaction, and that idle workers are woken by
one notification per statement (not per task), delivered only at COMMIT.

Uses PGTASQ_DSN when it is set; otherwise starts the embedded PostgreSQL
(pip install 'pgtasq[embedded]') with its data in a temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from pathlib import Path

import psycopg

import pgtasq

CHANNEL = "pgtasq_w_pgtasq"  # the wake-up channel of schema "pgtasq" (pgtasq_w_<schema>)


def database_url() -> str:
    """PGTASQ_DSN if set; otherwise the embedded server's DSN (started on first use)."""
    dsn = os.environ.get("PGTASQ_DSN")
    if dsn:
        return dsn
    from pgtasq import _embedded

    return _embedded.dsn(Path(tempfile.gettempdir()) / "pgtasq-examples")


async def notifications_for(
    listener: psycopg.AsyncConnection, queue: str, wait: float
) -> list[str]:
    """The notifications on CHANNEL within `wait` seconds that name `queue`. Each is a JSON
    object: the queues (or "*"), how many tasks and their first ids."""
    found = []
    async for note in listener.notifies(timeout=wait):
        queues = json.loads(note.payload)["queues"]
        if queues == "*" or queue in queues:
            found.append(note.payload)
    return found


async def count_tasks(conn: psycopg.AsyncConnection, queue: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM pgtasq.tasks WHERE queue = %s", [queue])
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def main() -> None:
    dsn = database_url()
    pgtasq.migrate(dsn)
    producer = pgtasq.AsyncProducer()  # no DSN: every call passes conn=
    # A queue name of our own, so other users of this database do not disturb the counts.
    queue = f"emails-{uuid.uuid4().hex[:8]}"
    batch = [
        pgtasq.Task("email.send", {"to": f"user{i}@example.com"}, queue=queue) for i in range(100)
    ]

    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener,
    ):
        await listener.execute(f"LISTEN {CHANNEL}")

        # 1. 100 tasks, one statement, one transaction.
        async with conn.transaction():
            infos = await producer.enqueue_many(batch, conn=conn)
            print(
                f"enqueued {len(infos)} tasks in one statement: ids {infos[0].id}..{infos[-1].id}"
            )
            assert len(infos) == 100
            assert all(info.created for info in infos)
            early = await notifications_for(listener, queue, wait=0.3)
            print(f"  notifications before COMMIT: {len(early)}")
            assert early == []
        late = await notifications_for(listener, queue, wait=2.0)
        print(f"after COMMIT: {len(late)} notification(s), payload {late}")
        assert [json.loads(p) for p in late] == [
            {"queues": [queue], "count": 100, "ids": [info.id for info in infos]}
        ]
        assert await count_tasks(conn, queue) == 100

        # 2. A batch whose transaction rolls back leaves nothing, and wakes nobody.
        try:
            async with conn.transaction():
                await producer.enqueue_many(batch, conn=conn)
                raise RuntimeError("something else in the transaction failed")
        except RuntimeError:
            pass
        assert await notifications_for(listener, queue, wait=0.5) == []
        assert await count_tasks(conn, queue) == 100
        print("a rolled-back batch: no tasks added, no notification")

    # 3. Without conn=, AsyncProducer(dsn) uses its own pool and commits by itself.
    async with pgtasq.AsyncProducer(dsn) as pooled:
        info = await pooled.enqueue("email.send", {"to": "ops@example.com"}, queue=queue)
    async with await psycopg.AsyncConnection.connect(dsn) as check:
        assert await count_tasks(check, queue) == 101
    print(f"AsyncProducer(dsn).enqueue committed task #{info.id} on its own")
    print("OK")


if __name__ == "__main__":
    asyncio.run(main())
