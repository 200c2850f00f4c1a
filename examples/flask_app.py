"""Flask (sync): enqueue inside the request's transaction; a status endpoint that waits for the
task's result; a worker in a background thread or a process of its own.

    python examples/flask_app.py                          # runs the app through its test client
    flask --app 'examples.flask_app:create_app()' run     # serves it

A view takes a connection from the app's psycopg pool with ``pool.connection()``: one
transaction, committed when the block ends and rolled back when it raises (``abort()``
included), so the order row and its task exist together or not at all. The worker
(`build_consumer`) runs in production as ``pgtasq worker yourapp.tasks:consumer``; here
``main`` runs it in a background thread (`Consumer.start`). Uses PGTASQ_DSN when it is set;
otherwise the embedded PostgreSQL.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from flask import Flask, abort, request
from psycopg_pool import ConnectionPool

import pgtasq

STOCK = 10  # more than this in one order: 409, and the transaction rolls back
STATUS_WAIT_MAX = 30.0  # seconds GET /tasks/<id>?wait= may wait for a result
STATUS_POLL_INTERVAL = 0.05
ORDERS_DDL = """
CREATE TABLE IF NOT EXISTS example_flask_orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item text NOT NULL,
    quantity int NOT NULL,
    status text NOT NULL DEFAULT 'new'
)
"""


def database_url() -> str:
    """PGTASQ_DSN if set; otherwise the embedded server's DSN (started on first use)."""
    dsn = os.environ.get("PGTASQ_DSN")
    if dsn:
        return dsn
    from pgtasq import _embedded

    return _embedded.dsn(Path(tempfile.gettempdir()) / "pgtasq-examples")


def build_consumer(
    dsn: str, schema: str = pgtasq.SCHEMA_DEFAULT, pool: ConnectionPool | None = None
) -> pgtasq.Consumer:
    """The worker's handlers. ``order.confirm`` (a plain function: it runs in a thread)
    updates the order and completes its task in one transaction (`TaskContext.complete`)."""
    consumer = pgtasq.Consumer(dsn, schema=schema)
    pool = pool or ConnectionPool(dsn, min_size=1, open=False)

    @consumer.task("order.confirm")
    def confirm(ctx: pgtasq.TaskContext) -> None:
        pool.open()  # no-op once open
        order_id = ctx.payload["order_id"]
        with pool.connection() as conn:
            conn.execute(
                "UPDATE example_flask_orders SET status = 'confirmed' WHERE id = %s", [order_id]
            )
            ctx.complete(conn, {"order_id": order_id, "confirmed": True})

    return consumer


def create_app(dsn: str | None = None, *, schema: str = pgtasq.SCHEMA_DEFAULT) -> Flask:
    """The app; ``app.extensions["pgtasq"]`` holds its pool, producer, client and consumer
    (call ``close_app(app)`` to close them)."""
    dsn = dsn or database_url()
    pgtasq.migrate(dsn, schema=schema)
    pool = ConnectionPool(dsn, min_size=1, open=True)
    with pool.connection() as conn:
        conn.execute(ORDERS_DDL)
    producer = pgtasq.Producer(schema=schema)  # conn= on every call: no pool of its own
    client = pgtasq.Client(dsn, schema=schema)
    consumer = build_consumer(dsn, schema, pool)

    app = Flask(__name__)
    app.extensions["pgtasq"] = {
        "pool": pool,
        "producer": producer,
        "client": client,
        "consumer": consumer,
    }

    @app.post("/orders")
    def place_order() -> tuple[dict[str, Any], int]:
        body = request.get_json(force=True)
        item, quantity = str(body["item"]), int(body.get("quantity", 1))
        with pool.connection() as conn:  # one transaction: commit at the end, rollback on raise
            row = conn.execute(
                "INSERT INTO example_flask_orders (item, quantity) VALUES (%s, %s) RETURNING id",
                [item, quantity],
            ).fetchone()
            assert row is not None
            info = producer.enqueue("order.confirm", {"order_id": row[0]}, conn=conn)
            if quantity > STOCK:
                abort(409, f"only {STOCK} in stock")  # the order and its task roll back
        return {"order_id": row[0], "task_id": info.id}, 201

    @app.get("/tasks/<int:task_id>")
    def task_status(task_id: int) -> dict[str, Any]:
        """The task's status and result; with ``?wait=``, up to that many seconds for it to
        finish (polling the Client)."""
        wait = min(max(request.args.get("wait", 0.0, type=float), 0.0), STATUS_WAIT_MAX)
        deadline = time.monotonic() + wait
        while True:
            try:
                info = client.get_task(task_id)
            except pgtasq.TaskNotFound:
                abort(404, f"no task {task_id}")
            if info.status.is_final or time.monotonic() >= deadline:
                return {"id": info.id, "status": info.status.value, "result": info.result}
            time.sleep(STATUS_POLL_INTERVAL)

    return app


def close_app(app: Flask) -> None:
    """Close what `create_app` opened."""
    parts = app.extensions["pgtasq"]
    parts["client"].close()
    parts["pool"].close()


def main() -> None:
    app = create_app()
    consumer: pgtasq.Consumer = app.extensions["pgtasq"]["consumer"]
    consumer.start()  # the worker, in a background thread of this process
    try:
        http = app.test_client()
        placed = http.post("/orders", json={"item": "book", "quantity": 2})
        assert placed.status_code == 201, placed.text
        print("placed:", placed.json)
        status = http.get(f"/tasks/{placed.json['task_id']}", query_string={"wait": 20}).json
        print("status:", status)
        assert status["status"] == "completed" and status["result"]["confirmed"] is True

        refused = http.post("/orders", json={"item": "piano", "quantity": 99})
        assert refused.status_code == 409
        print("refused: 409 - the order and its task rolled back")
    finally:
        consumer.stop()
        close_app(app)
    print("OK")


if __name__ == "__main__":
    main()
