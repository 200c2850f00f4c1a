"""The dashboard's pages on a real PostgreSQL, through Starlette's test client."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from pgtasq import Client
from pgtasq.web import create_app
from tests.web_support import client_for, enqueue, fail_once, hold, sql


@pytest.fixture
def web(pg_dsn: str, schema: str) -> Iterator[TestClient]:
    yield from client_for(pg_dsn, schema)


def test_overview_shows_totals_per_state_queues_and_failures(
    web: TestClient, pg_dsn: str, schema: str
) -> None:
    for _ in range(3):
        enqueue(pg_dsn, schema, "t", queue="mail")
    failed = fail_once(pg_dsn, schema, "boom", "it broke")
    page = web.get("/")
    assert page.status_code == 200
    assert '<span class="num" data-state="pending">3</span>' in page.text
    assert '<span class="num" data-state="failed">1</span>' in page.text
    assert ">mail</a>" in page.text
    assert f'href="/tasks/{failed}"' in page.text and "it broke" in page.text
    assert "<svg" in page.text and "Tasks finished per minute" in page.text
    assert 'hx-trigger="every 5.0s"' in page.text  # the live part polls
    assert '<script src="/static/htmx.min.js"' in page.text


def test_pages_forbid_framing_and_foreign_scripts(web: TestClient) -> None:
    for path in ("/", "/tasks", "/tasks/424242"):
        headers = web.get(path).headers
        assert headers["x-frame-options"] == "DENY"
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy
        assert headers["cache-control"] == "no-store"


def test_the_live_part_is_a_fragment_with_the_same_numbers(
    web: TestClient, pg_dsn: str, schema: str
) -> None:
    enqueue(pg_dsn, schema)
    part = web.get("/live/overview")
    assert part.status_code == 200
    assert "<html" not in part.text
    assert '<span class="num" data-state="pending">1</span>' in part.text


def test_per_minute_chart_counts_what_finished_this_minute(
    web: TestClient, pg_dsn: str, schema: str
) -> None:
    fail_once(pg_dsn, schema, "boom", "x")
    page = web.get("/")
    assert "(this minute: 0 completed, 1 failed)" in page.text


def test_per_minute_chart_stops_counting_at_its_cap_and_says_so(
    web: TestClient, pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgtasq.web import _queries

    for _ in range(3):
        fail_once(pg_dsn, schema, "boom", "x")
    assert "earliest minutes are incomplete" not in web.get("/").text
    monkeypatch.setattr(_queries, "THROUGHPUT_ROWS_MAX", 2)
    page = web.get("/").text
    assert "counted up to the latest 2 tasks, so the earliest minutes are incomplete" in page
    assert "(this minute: 0 completed, 2 failed)" in page


def test_the_overview_is_read_once_per_cache_period(pg_dsn: str, schema: str) -> None:
    for web in client_for(pg_dsn, schema, cache_seconds=3600):
        assert 'data-state="pending">0<' in web.get("/").text
        enqueue(pg_dsn, schema)
        assert 'data-state="pending">0<' in web.get("/live/overview").text  # shared, cached
        assert web.get("/tasks").text.count("<tr data-id=") == 1  # other pages: fresh
    for web in client_for(pg_dsn, schema):  # cache_seconds=0: every request reads
        assert 'data-state="pending">1<' in web.get("/").text


def test_htmx_and_its_license_are_served_from_the_package(web: TestClient) -> None:
    script = web.get("/static/htmx.min.js")
    assert script.status_code == 200 and "htmx" in script.text[:200]
    license_text = web.get("/static/htmx.LICENSE.txt")
    assert "Zero-Clause BSD" in license_text.text


def test_queues_page_lists_counts_latency_history_and_pause_buttons(
    web: TestClient, pg_dsn: str, schema: str
) -> None:
    enqueue(pg_dsn, schema, queue="mail")
    Client(pg_dsn, schema=schema).pause_queue("other")
    page = web.get("/queues")
    assert page.status_code == 200
    assert 'data-queue="mail"' in page.text and 'data-queue="other"' in page.text
    assert "Pause</button>" in page.text and "Resume</button>" in page.text
    assert page.text.count("<svg") == 2


def test_tasks_page_tabs_and_filters(web: TestClient, pg_dsn: str, schema: str) -> None:
    a = enqueue(pg_dsn, schema, "alpha", queue="q1")
    b = enqueue(pg_dsn, schema, "beta", queue="q2")
    later = enqueue(pg_dsn, schema, "alpha", queue="q1", delay=3600)
    failed = fail_once(pg_dsn, schema, "boom", "no")

    def ids(path: str) -> set[int]:
        page = web.get(path)
        assert page.status_code == 200, page.text
        return {int(i) for i in re.findall(r'<tr data-id="(\d+)"', page.text)}

    assert ids("/tasks") == {a, b, later, failed}
    assert ids("/tasks?state=failed") == {failed}
    assert ids("/tasks?state=scheduled") == {later}
    assert ids("/tasks?queue=q1") == {a, later}
    assert ids("/tasks?type=beta") == {b}
    assert ids("/tasks?type=alpha,beta&queue=q2") == {b}
    assert ids(f"/tasks?id={a}+{b}") == {a, b}
    future = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert ids(f"/tasks?created_after={future}") == set()
    assert ids(f"/tasks?created_before={future}") == {a, b, later, failed}


def test_a_bad_filter_says_why_and_lists_unfiltered(
    web: TestClient, pg_dsn: str, schema: str
) -> None:
    enqueue(pg_dsn, schema)
    page = web.get("/tasks?id=abc")
    assert page.status_code == 200
    assert "id: expected task ids" in page.text
    page = web.get("/tasks?created_after=yesterday")
    assert "created_after: expected a date and time" in page.text
    assert web.get("/tasks?after=garbage").status_code == 200


@pytest.mark.parametrize(
    ("order", "direction"),
    [("", ""), ("created_at", "asc"), ("run_at", "desc"), ("priority", "asc")],
)
def test_keyset_paging_walks_every_task_once(
    pg_dsn: str, schema: str, order: str, direction: str
) -> None:
    made = {enqueue(pg_dsn, schema, priority=n % 3) for n in range(7)}
    seen: list[int] = []
    for web in client_for(pg_dsn, schema, page_size=3):
        path = f"/tasks?order={order}&dir={direction}"
        while True:
            page = web.get(path)
            assert "problem" not in page.text, page.text
            seen += [int(i) for i in re.findall(r'<tr data-id="(\d+)"', page.text)]
            found = re.search(r'<a href="(\?[^"]*)" rel="next"', page.text)
            if found is None:
                break
            path = "/tasks" + found.group(1).replace("&amp;", "&")
    assert sorted(seen) == sorted(made) and len(seen) == len(made)
    if not order:
        assert seen == sorted(made, reverse=True)  # newest first by default
    elif order == "created_at":
        assert seen == sorted(made)


def test_task_detail_shows_options_payload_errors_and_timeline(
    web: TestClient, pg_dsn: str, schema: str
) -> None:
    task_id = fail_once(pg_dsn, schema, "boom", "the disk is full")
    page = web.get(f"/tasks/{task_id}")
    assert page.status_code == 200
    assert "It failed after 1 of 1 attempts" in page.text
    assert "the disk is full" in page.text
    assert "&#34;n&#34;: 1" in page.text  # pretty JSON, escaped
    timeline = re.search(r'<ol class="timeline">(.*?)</ol>', page.text, re.S)
    assert timeline is not None
    steps = re.findall(r"<li>[^:]+:\d\d:\d\d: (\w+(?: \d)?(?: \w+)?)", timeline.group(1))
    assert steps == ["enqueued", "attempt 1 started", "attempt 1 failed", "failed"]
    assert "Retry</button>" in page.text and "Delete</button>" in page.text


def test_task_detail_shows_the_unique_key(web: TestClient, pg_dsn: str, schema: str) -> None:
    held = enqueue(pg_dsn, schema, unique_key="refresh:42", unique_for=3600)
    page = web.get(f"/tasks/{held}")
    assert re.search(r"<dt>unique key</dt><dd>refresh:42 until [^<]+</dd>", page.text)
    plain = web.get(f"/tasks/{enqueue(pg_dsn, schema)}")
    assert "<dt>unique key</dt><dd>none</dd>" in plain.text


def test_large_payloads_are_cut_with_a_download(web: TestClient, pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema, payload={"blob": "x" * 50_000})
    page = web.get(f"/tasks/{task_id}")
    assert "download the whole payload" in page.text
    assert len(page.text) < 40_000
    download = web.get(f"/tasks/{task_id}/payload.json")
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    assert json.loads(download.text) == {"blob": "x" * 50_000}


def test_a_missing_task_is_a_404_page(web: TestClient) -> None:
    page = web.get("/tasks/987654")
    assert page.status_code == 404
    assert "987654" in page.text


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("paused", "is paused: no worker claims its tasks"),
        ("future", "It is scheduled for"),
        ("nobody", "No live worker consumes queue &#39;default&#39;"),
        ("retry", "It is waiting to be retried (attempt 2 of 5)"),
        ("running", "the lease is held by worker w-1"),
        ("gone", "That worker has no recent heartbeat"),
        ("no-handler", "have no handler for type &#39;t&#39;"),
        ("ready", "It is ready and waits for a free worker: 1 ready task(s)"),
    ],
)
def test_why_a_task_is_not_running(
    web: TestClient, pg_dsn: str, schema: str, setup: str, expected: str
) -> None:
    live = (
        "INSERT INTO {s}.workers (id, host, pid, queues, concurrency, metadata) "
        "VALUES ('w-live', 'box', 1, '{\"default\": 0}', 1, %s)"
    )
    if setup == "ready":
        enqueue(pg_dsn, schema)  # one ahead of it
    task_id = enqueue(pg_dsn, schema, delay=3600 if setup == "future" else None)
    if setup == "paused":
        Client(pg_dsn, schema=schema).pause_queue("default")
    elif setup == "retry":
        sql(
            pg_dsn,
            schema,
            "UPDATE {s}.tasks SET attempts = 1, run_at = now() + interval '1 hour' WHERE id = %s",
            task_id,
        )
    elif setup in ("running", "gone"):
        hold(pg_dsn, schema, task_id, "w-1", heartbeat_age=3600 if setup == "gone" else 0)
    elif setup == "no-handler":
        sql(pg_dsn, schema, live, '{"types": ["other"]}')
    elif setup == "ready":
        sql(pg_dsn, schema, live, '{"types": ["t"]}')
    page = web.get(f"/tasks/{task_id}")
    why = re.search(r'<p class="why" id="why">(.*?)</p>', page.text, re.S)
    assert why is not None
    assert expected in why.group(1)


def test_workers_and_schedules_pages(web: TestClient, pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema)
    hold(pg_dsn, schema, task_id, "worker-7")
    sql(
        pg_dsn,
        schema,
        "INSERT INTO {s}.schedules (id, cron, task_type, next_run_at) "
        "VALUES ('nightly', '0 3 * * *', 'report', now() + interval '1 hour')",
    )
    workers = web.get("/workers")
    assert workers.status_code == 200
    assert 'data-worker="worker-7"' in workers.text
    assert f'href="/tasks/{task_id}"' in workers.text
    schedules = web.get("/schedules")
    assert schedules.status_code == 200
    assert "nightly" in schedules.text and "0 3 * * *" in schedules.text


def test_mounted_under_a_prefix_links_stay_inside_it(pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema)
    outer = Starlette(routes=[Mount("/ops/pgtasq", create_app(pg_dsn, schema=schema))])
    with TestClient(outer) as web:
        page = web.get("/ops/pgtasq/tasks")
        assert page.status_code == 200
        assert f'href="/ops/pgtasq/tasks/{task_id}"' in page.text
        assert 'src="/ops/pgtasq/static/htmx.min.js"' in page.text
        assert web.get("/ops/pgtasq/static/htmx.min.js").status_code == 200
        assert "path=/ops/pgtasq" in page.headers["set-cookie"].lower()


def test_a_database_that_does_not_answer_gives_a_503_page_without_the_password() -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        dsn = f"postgresql://ops:hunter2@127.0.0.1:{port}/db"
        for web in client_for(dsn, "pgtasq", connect_timeout=1):
            page = web.get("/")
            assert page.status_code == 503
            assert "cannot connect to PostgreSQL" in page.text
            assert "hunter2" not in page.text and "Traceback" not in page.text


def test_a_database_that_is_not_migrated_gives_a_clear_page(pg_dsn: str, fresh_schema: str) -> None:
    for web in client_for(pg_dsn, fresh_schema):
        page = web.get("/")
        assert page.status_code == 503
        assert "Traceback" not in page.text


def test_on_a_large_table_finished_states_are_estimated_not_counted(
    web: TestClient, pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgtasq.web import _queries

    enqueue(pg_dsn, schema, queue="mail")
    fail_once(pg_dsn, schema, "boom", "x")
    small = web.get("/queues").text
    assert "are not counted" not in small
    assert "<td>1</td>" in small  # the failed one, counted
    monkeypatch.setattr(_queries, "EXACT_COUNT_ROWS_MAX", -1)  # every table is "large" now
    overview = web.get("/").text
    assert '<span class="num" data-state="pending">1</span>' in overview  # still exact
    assert re.search(r'data-state="failed">~\d+</span><span>failed \(estimate\)', overview)
    queues = web.get("/queues").text
    assert "are not counted on a table this large" in queues
    assert "<td>—</td>" in queues
