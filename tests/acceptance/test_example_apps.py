"""The FastAPI and Flask example apps through their frameworks' test clients, on a real
PostgreSQL: a committed request leaves exactly one task, a rolled-back one none, and a burst
worker (`pgtasq.testing.run_until_empty`) runs what was committed."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from types import ModuleType
from typing import Any

import psycopg
import pytest

from pgtasq.testing import arun_until_empty, assert_enqueued, enqueued_tasks, run_until_empty
from tests.conftest import REPO


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"examples_{name}", REPO / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pydantic look their module up
    spec.loader.exec_module(module)
    return module


def order_rows(dsn: str, table: str, item: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute(f"SELECT id, status FROM {table} WHERE item = %s", [item]).fetchall()


def test_fastapi_app(pg_dsn: str, schema: str) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    example = load_example("fastapi_app")
    app = example.create_app(pg_dsn, schema=schema, worker=False)
    book, piano = f"book-{uuid.uuid4().hex[:8]}", f"piano-{uuid.uuid4().hex[:8]}"
    with TestClient(app) as http:
        placed = http.post("/orders", json={"item": book, "quantity": 2})
        assert placed.status_code == 201, placed.text
        refused = http.post("/orders", json={"item": piano, "quantity": 99})
        assert refused.status_code == 409, refused.text
        task_id, order_id = placed.json()["task_id"], placed.json()["order_id"]
        pending = http.get(f"/tasks/{task_id}").json()
        assert pending["status"] == "pending"
        assert http.get("/tasks/999999999").status_code == 404

        # The committed request: its order and exactly one task. The rolled-back one: neither.
        [task] = assert_enqueued(pg_dsn, schema=schema, type="order.confirm", count=1)
        assert task.id == task_id and task.payload == {"order_id": order_id}
        assert order_rows(pg_dsn, "example_fastapi_orders", book) == [(order_id, "new")]
        assert order_rows(pg_dsn, "example_fastapi_orders", piano) == []

        # A burst worker on the app's event loop (its engine's connections belong there).
        # The handler completes its task in its own transaction (TaskContext.acomplete).
        counts = http.portal.call(arun_until_empty, app.state.consumer)
        assert counts.claimed == 1 and counts.failed == 0
        assert order_rows(pg_dsn, "example_fastapi_orders", book) == [(order_id, "confirmed")]
        done = http.get(f"/tasks/{task_id}").json()
    assert done == {
        "id": task_id,
        "status": "completed",
        "result": {"order_id": order_id, "confirmed": True},
    }


def test_fastapi_app_worker_in_lifespan_and_status_wait(pg_dsn: str, schema: str) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    example = load_example("fastapi_app")
    with TestClient(example.create_app(pg_dsn, schema=schema)) as http:
        placed = http.post("/orders", json={"item": "lamp", "quantity": 1}).json()
        status = http.get(f"/tasks/{placed['task_id']}", params={"wait": 30}).json()
    assert status["status"] == "completed"
    assert status["result"] == {"order_id": placed["order_id"], "confirmed": True}
    assert enqueued_tasks(pg_dsn, schema=schema) == []


def test_flask_app(pg_dsn: str, schema: str) -> None:
    pytest.importorskip("flask")
    example = load_example("flask_app")
    app = example.create_app(pg_dsn, schema=schema)
    book, piano = f"book-{uuid.uuid4().hex[:8]}", f"piano-{uuid.uuid4().hex[:8]}"
    try:
        http = app.test_client()
        placed = http.post("/orders", json={"item": book, "quantity": 2})
        assert placed.status_code == 201, placed.text
        refused = http.post("/orders", json={"item": piano, "quantity": 99})
        assert refused.status_code == 409, refused.text
        assert placed.json is not None
        task_id, order_id = placed.json["task_id"], placed.json["order_id"]

        [task] = assert_enqueued(pg_dsn, schema=schema, type="order.confirm", count=1)
        assert task.id == task_id and task.payload == {"order_id": order_id}
        assert order_rows(pg_dsn, "example_flask_orders", book) == [(order_id, "new")]
        assert order_rows(pg_dsn, "example_flask_orders", piano) == []

        counts = run_until_empty(app.extensions["pgtasq"]["consumer"])
        assert counts.claimed == 1 and counts.failed == 0  # completed by the handler itself
        assert order_rows(pg_dsn, "example_flask_orders", book) == [(order_id, "confirmed")]
        done = http.get(f"/tasks/{task_id}", query_string={"wait": 5}).json
        assert done == {
            "id": task_id,
            "status": "completed",
            "result": {"order_id": order_id, "confirmed": True},
        }
        assert http.get("/tasks/999999999").status_code == 404
    finally:
        example.close_app(app)
