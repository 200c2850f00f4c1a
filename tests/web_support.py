"""What the dashboard's tests share: an app on a test schema, tasks in every state made
through the public API or by a real worker, and a browser-like POST (cookie, token, Origin)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgtasq import Consumer, Producer, SkipRetry

pytest.importorskip("starlette", reason="the web extra is not installed")

from starlette.testclient import TestClient

from pgtasq.web import create_app

BASE = "http://testserver"
TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def client_for(dsn: str, schema: str, **options: Any) -> Iterator[TestClient]:
    """A test client of the app; the overview is not cached unless ``cache_seconds`` says."""
    app = create_app(dsn, schema=schema, **{"cache_seconds": 0, **options})
    with TestClient(app, base_url=BASE) as client:
        yield client


def token(client: TestClient, path: str = "/tasks") -> str:
    """The CSRF token of a page (fetching it also sets this client's CSRF cookie)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = TOKEN.search(page.text)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def post(
    client: TestClient,
    path: str,
    data: dict[str, Any] | None = None,
    *,
    origin: str | None = BASE,
    csrf: str | None = "page",
    page: str = "/tasks",
) -> Any:
    """A POST as a browser sends it from a page of the dashboard: the page's token and
    this site's Origin. ``csrf=None`` leaves the token out; ``origin=None`` the header."""
    fields = dict(data or {})
    if csrf == "page":
        fields["csrf_token"] = token(client, page)
    elif csrf is not None:
        fields["csrf_token"] = csrf
    headers = {} if origin is None else {"Origin": origin}
    return client.post(path, data=fields, headers=headers, follow_redirects=False)


def enqueue(dsn: str, schema: str, task_type: str = "t", payload: Any = None, **opts: Any) -> int:
    with Producer(dsn, schema=schema) as producer:
        return producer.enqueue(task_type, payload, **opts).id


def fail_once(dsn: str, schema: str, task_type: str, message: str, **opts: Any) -> int:
    """A task that a real worker ran and that failed for good, with ``message`` as its error."""
    task_id = enqueue(dsn, schema, task_type, {"n": 1}, max_attempts=1, **opts)
    consumer = Consumer(schema=schema, poll_interval=0.05, queues=opts.get("queue", "default"))

    def handler(ctx: Any) -> None:
        raise SkipRetry(message)

    consumer.register(task_type, handler)
    consumer.run(dsn, burst=True)
    return task_id


def sql(dsn: str, schema: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement.replace("{s}", schema), params)
        return cur.fetchall() if cur.description is not None else []


def status(dsn: str, schema: str, task_id: int) -> str | None:
    rows = sql(dsn, schema, "SELECT status::text FROM {s}.tasks WHERE id = %s", task_id)
    return rows[0][0] if rows else None


def hold(dsn: str, schema: str, task_id: int, worker: str, *, heartbeat_age: float = 0) -> None:
    """Make the task running, leased by ``worker`` (registered with a heartbeat this old)."""
    sql(
        dsn,
        schema,
        "INSERT INTO {s}.workers (id, host, pid, queues, concurrency, metadata, heartbeat_at) "
        "VALUES (%s, 'box', 42, '{\"default\": 0}', 4, '{\"types\": [\"t\"]}', "
        "now() - make_interval(secs => %s)) ON CONFLICT (id) DO NOTHING",
        worker,
        heartbeat_age,
    )
    sql(
        dsn,
        schema,
        "UPDATE {s}.tasks SET status = 'running', attempts = attempts + 1, locked_by = %s, "
        "locked_until = now() + interval '5 minutes', attempted_at = now() WHERE id = %s",
        worker,
        task_id,
    )


def finish_job(client: TestClient, started: Any, timeout: float = 30.0) -> str:
    """Follow a bulk action's answer to its job page until the job is finished; the page."""
    import time

    assert started.status_code == 303, started.text
    location = started.headers["location"]
    assert location.startswith("/jobs/"), location
    deadline = time.monotonic() + timeout
    while True:
        page = client.get(location)
        assert page.status_code == 200, page.text
        if 'data-finished="yes"' in page.text:
            return str(page.text)
        assert time.monotonic() < deadline, "the job did not finish in time"
