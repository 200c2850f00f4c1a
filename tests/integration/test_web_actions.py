"""The dashboard's actions and its safety on a real PostgreSQL: every action changes what
it says, and is refused without credentials, in read-only mode, without a valid CSRF
token, from another origin, or when the ``authorize`` hook says no. Hostile task data is
shown escaped."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from pgtasq import Client, Producer, Task
from tests.web_support import (
    BASE,
    client_for,
    enqueue,
    fail_once,
    finish_job,
    hold,
    post,
    sql,
    status,
)
from tests.web_support import token as page_token


@pytest.fixture
def web(pg_dsn: str, schema: str) -> Iterator[TestClient]:
    yield from client_for(pg_dsn, schema)


def run_at_is_past(dsn: str, schema: str, task_id: int) -> bool:
    rows = sql(dsn, schema, "SELECT run_at <= now() FROM {s}.tasks WHERE id = %s", task_id)
    return bool(rows[0][0])


# -- actions ---------------------------------------------------------------------------------


def test_cancel_retry_delete_one_task(web: TestClient, pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema)
    done = post(web, f"/tasks/{task_id}/cancel", {"next": f"/tasks/{task_id}"})
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"/tasks/{task_id}?notice=")
    assert status(pg_dsn, schema, task_id) == "cancelled"
    assert post(web, f"/tasks/{task_id}/retry").status_code == 303
    assert status(pg_dsn, schema, task_id) == "pending"
    assert post(web, f"/tasks/{task_id}/delete").status_code == 303
    assert status(pg_dsn, schema, task_id) is None


def test_an_action_the_state_forbids_comes_back_with_the_reason(
    web: TestClient, pg_dsn: str, schema: str
) -> None:
    task_id = enqueue(pg_dsn, schema)
    done = post(web, f"/tasks/{task_id}/retry")
    assert done.status_code == 303
    page = web.get(done.headers["location"])
    assert "Not done:" in page.text
    assert status(pg_dsn, schema, task_id) == "pending"


def test_an_action_on_a_missing_task_returns_to_the_list(web: TestClient) -> None:
    done = post(web, "/tasks/987654/cancel", {"next": "/tasks/987654"})
    assert done.status_code == 303
    assert done.headers["location"].startswith("/tasks?notice=Not+done")
    assert "987654" in web.get(done.headers["location"]).text


def test_run_now_makes_a_scheduled_task_ready(web: TestClient, pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema, delay=3600)
    assert "Run now</button>" in web.get(f"/tasks/{task_id}").text
    assert not run_at_is_past(pg_dsn, schema, task_id)
    assert post(web, f"/tasks/{task_id}/run_now").status_code == 303
    assert run_at_is_past(pg_dsn, schema, task_id)
    assert status(pg_dsn, schema, task_id) == "pending"


def test_run_now_on_a_due_task_is_refused_with_the_reason(
    web: TestClient, pg_dsn: str, schema: str
) -> None:
    task_id = enqueue(pg_dsn, schema)
    done = post(web, f"/tasks/{task_id}/run_now")
    assert done.status_code == 303
    assert f"task {task_id} is pending already" in web.get(done.headers["location"]).text
    assert status(pg_dsn, schema, task_id) == "pending"


def test_run_now_on_a_failed_task_retries_it(web: TestClient, pg_dsn: str, schema: str) -> None:
    task_id = fail_once(pg_dsn, schema, "boom", "x")
    assert post(web, f"/tasks/{task_id}/run_now").status_code == 303
    assert status(pg_dsn, schema, task_id) == "pending"


def test_pause_and_resume_a_queue(web: TestClient, pg_dsn: str, schema: str) -> None:
    enqueue(pg_dsn, schema, queue="mail")
    client = Client(pg_dsn, schema=schema)

    def paused() -> bool:
        return next(q.paused for q in client.list_queues() if q.name == "mail")

    assert post(web, "/queues/pause", {"name": "mail"}, page="/queues").status_code == 303
    assert paused()
    assert post(web, "/queues/resume", {"name": "mail"}, page="/queues").status_code == 303
    assert not paused()
    unknown = post(web, "/queues/pause", {"name": "nope"}, page="/queues")
    assert "Not+done" in unknown.headers["location"] or "Not%20done" in unknown.headers["location"]


def test_bulk_on_the_selection_confirms_the_count_then_acts(
    web: TestClient, pg_dsn: str, schema: str
) -> None:
    ids = [enqueue(pg_dsn, schema) for _ in range(3)]
    chosen = {"scope": "selected", "ids": [str(i) for i in ids[:2]], "action": "cancel"}
    confirm = post(web, "/tasks/bulk", chosen)
    assert confirm.status_code == 200
    assert '<p id="confirm-count">This will cancel <strong>2</strong>' in confirm.text
    assert [status(pg_dsn, schema, i) for i in ids] == ["pending"] * 3  # nothing yet
    assert '<input type="hidden" name="expected" value="2">' in confirm.text
    page = finish_job(web, post(web, "/tasks/bulk", {**chosen, "confirm": "yes", "expected": "2"}))
    assert "<h1>Cancel: 2 of 2 task(s)</h1>" in page
    assert "Done: 2 task(s) cancelled." in page
    assert [status(pg_dsn, schema, i) for i in ids] == ["cancelled", "cancelled", "pending"]


def test_bulk_on_everything_matching_a_filter(web: TestClient, pg_dsn: str, schema: str) -> None:
    mail = [enqueue(pg_dsn, schema, queue="mail") for _ in range(4)]
    other = enqueue(pg_dsn, schema, queue="other")
    failed = fail_once(pg_dsn, schema, "boom", "x", queue="mail")
    form = {"scope": "matching", "queue": "mail", "action": "retry"}
    confirm = post(web, "/tasks/bulk", form)
    assert "<strong>1</strong>" in confirm.text  # only the failed one can be retried
    form["action"] = "delete"
    confirm = post(web, "/tasks/bulk", form)
    assert "<strong>5</strong>" in confirm.text
    page = finish_job(web, post(web, "/tasks/bulk", {**form, "confirm": "yes"}))
    assert "Done: 5 task(s) deleted." in page
    assert [status(pg_dsn, schema, i) for i in [*mail, failed]] == [None] * 5
    assert status(pg_dsn, schema, other) == "pending"


def test_a_bulk_job_over_several_batches_reports_every_task(
    web: TestClient, pg_dsn: str, schema: str
) -> None:
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("t", queue="big") for _ in range(2500)])
    form = {"scope": "matching", "queue": "big", "action": "cancel"}
    confirm = post(web, "/tasks/bulk", form)
    assert "<strong>2500</strong>" in confirm.text
    page = finish_job(web, post(web, "/tasks/bulk", {**form, "confirm": "yes", "expected": "2500"}))
    assert "<h1>Cancel: 2500 of 2500 task(s)</h1>" in page
    assert '<progress max="100" value="100">' in page
    assert sql(pg_dsn, schema, "SELECT count(*) FROM {s}.tasks WHERE status = 'cancelled'") == [
        (2500,)
    ]


def test_a_job_that_is_not_there_is_a_404(web: TestClient) -> None:
    assert web.get("/jobs/nope").status_code == 404


def test_every_action_is_logged_with_who_what_and_how_many(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [enqueue(pg_dsn, schema) for _ in range(2)]
    caplog.set_level(logging.INFO, logger="pgtasq.web")
    for web in client_for(pg_dsn, schema, basic_auth=("ops", "s3cret")):
        web.auth = ("ops", "s3cret")
        form = {"scope": "selected", "ids": [str(i) for i in ids], "action": "cancel"}
        finish_job(web, post(web, "/tasks/bulk", {**form, "confirm": "yes"}))
        post(web, f"/tasks/{ids[0]}/delete")
    lines = [r.getMessage() for r in caplog.records if r.name == "pgtasq.web"]
    assert f"ops: cancel 2 task(s) (selected: ids={ids[0]},{ids[1]})" in lines
    assert f"ops: delete task {ids[0]}" in lines
    assert not any("s3cret" in line for line in lines)


# -- refusals ----------------------------------------------------------------------------------


def test_basic_auth_refuses_without_the_right_credentials(pg_dsn: str, schema: str) -> None:
    for web in client_for(pg_dsn, schema, basic_auth=("ops", "s3cret")):
        for path in ("/", "/tasks", "/static/htmx.min.js"):
            refused = web.get(path)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == 'Basic realm="pgtasq"'
        wrong = base64.b64encode(b"ops:wrong").decode()
        assert web.get("/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
        assert web.get("/", headers={"Authorization": "Basic !!"}).status_code == 401
        assert web.get("/", auth=("ops", "s3cret")).status_code == 200


def test_basic_auth_from_the_environment(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGTASQ_WEB_USER", "env-user")
    monkeypatch.setenv("PGTASQ_WEB_PASSWORD", "env-pass")
    for web in client_for(pg_dsn, schema):
        assert web.get("/").status_code == 401
        assert web.get("/", auth=("env-user", "env-pass")).status_code == 200


def test_read_only_offers_no_action_and_refuses_them(pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema)
    for web in client_for(pg_dsn, schema, read_only=True):
        page = web.get(f"/tasks/{task_id}")
        assert "Cancel</button>" not in page.text
        assert "read-only" in page.text
        assert '<form method="post"' not in web.get("/tasks").text
        refused = post(web, f"/tasks/{task_id}/cancel", csrf="x")
        assert refused.status_code == 403
        assert post(web, "/queues/pause", {"name": "default"}, csrf="x").status_code == 403
        bulk = {"scope": "selected", "ids": [str(task_id)], "action": "delete", "confirm": "yes"}
        assert post(web, "/tasks/bulk", bulk, csrf="x").status_code == 403
    assert status(pg_dsn, schema, task_id) == "pending"
    assert not Client(pg_dsn, schema=schema).list_queues()[0].paused


@pytest.mark.parametrize("token", [None, "", "0" * 64, "forged"])
def test_an_action_without_a_valid_csrf_token_is_refused(
    web: TestClient, pg_dsn: str, schema: str, token: str | None
) -> None:
    task_id = enqueue(pg_dsn, schema)
    web.get("/tasks")  # the browser has its cookie
    refused = post(web, f"/tasks/{task_id}/cancel", csrf=token)
    assert refused.status_code == 403
    assert "CSRF" in refused.text
    assert status(pg_dsn, schema, task_id) == "pending"


def test_a_token_from_another_browser_is_refused(pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema)
    for web in client_for(pg_dsn, schema):
        their_token = page_token(web)
        web.cookies.clear()  # now another browser, with a cookie of its own
        web.get("/tasks")
        assert web.cookies.get("pgtasq_csrf")
        assert post(web, f"/tasks/{task_id}/cancel", csrf=their_token).status_code == 403
    assert status(pg_dsn, schema, task_id) == "pending"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page"},
        {},
    ],
)
def test_a_cross_origin_action_is_refused(
    web: TestClient, pg_dsn: str, schema: str, headers: dict[str, str]
) -> None:
    task_id = enqueue(pg_dsn, schema)
    token = page_token(web)
    refused = web.post(
        f"/tasks/{task_id}/cancel",
        data={"csrf_token": token},
        headers=headers,
        follow_redirects=False,
    )
    assert refused.status_code == 403
    assert status(pg_dsn, schema, task_id) == "pending"


def test_a_same_origin_referer_is_enough(web: TestClient, pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema)
    token = page_token(web)
    done = web.post(
        f"/tasks/{task_id}/cancel",
        data={"csrf_token": token},
        headers={"Referer": f"{BASE}/tasks/{task_id}"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert status(pg_dsn, schema, task_id) == "cancelled"


def test_actions_are_only_posts(web: TestClient, pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema)
    assert web.get(f"/tasks/{task_id}/cancel").status_code in (404, 405)
    assert web.get("/queues/pause?name=default").status_code == 405
    assert status(pg_dsn, schema, task_id) == "pending"


def test_the_authorize_hook_decides_per_action(pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema)
    asked: list[str] = []

    async def authorize(request: Request, action: str) -> bool:
        asked.append(action)
        return action in ("view", "retry") and request.headers.get("x-role") != "guest"

    for web in client_for(pg_dsn, schema, authorize=authorize):
        assert web.get("/tasks").status_code == 200
        assert web.get("/tasks", headers={"x-role": "guest"}).status_code == 403
        assert post(web, f"/tasks/{task_id}/cancel").status_code == 403
        assert post(web, f"/tasks/{task_id}/delete").status_code == 403
    assert "cancel" in asked and "delete" in asked
    assert status(pg_dsn, schema, task_id) == "pending"


def test_redirects_stay_on_this_site(web: TestClient, pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema)
    for target in ("http://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        done = post(web, f"/tasks/{task_id}/cancel", {"next": target})
        assert done.headers["location"].startswith(f"/tasks/{task_id}?notice=")


# -- hostile data and hidden payloads ------------------------------------------------------


HOSTILE = "<script>alert('x')</script>"


def test_hostile_task_data_is_escaped_everywhere(web: TestClient, pg_dsn: str, schema: str) -> None:
    task_id = fail_once(pg_dsn, schema, "t<script>x()</script>", HOSTILE, queue="q<img src>")
    sql(
        pg_dsn,
        schema,
        "UPDATE {s}.tasks SET payload = %s::jsonb WHERE id = %s",
        '{"html": "' + HOSTILE.replace("'", "\\u0027") + '"}',
        task_id,
    )
    hold_id = enqueue(pg_dsn, schema, payload={"k": HOSTILE})
    hold(pg_dsn, schema, hold_id, "w<script>evil()</script>")
    pages = [
        "/",
        "/live/overview",
        "/queues",
        "/tasks",
        "/tasks?state=failed",
        f"/tasks/{task_id}",
        f"/tasks/{hold_id}",
        "/workers",
        "/tasks?queue=" + HOSTILE,
    ]
    for path in pages:
        page = web.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text, path
        assert "<script>x()" not in page.text and "<script>evil" not in page.text, path
        assert "<img src>" not in page.text, path
    detail = web.get(f"/tasks/{task_id}").text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in detail


def test_hidden_payloads_are_never_shown_nor_downloadable(pg_dsn: str, schema: str) -> None:
    task_id = enqueue(pg_dsn, schema, payload={"card": "4111-secret"})
    for web in client_for(pg_dsn, schema, hide_payloads=True):
        for path in ("/tasks", f"/tasks/{task_id}", "/"):
            assert "4111-secret" not in web.get(path).text
        assert web.get(f"/tasks/{task_id}/payload.json").status_code == 403


def test_options_that_cannot_work_are_refused_at_once(pg_dsn: str, schema: str) -> None:
    from pgtasq import ConfigurationError
    from pgtasq.web import create_app

    bad: list[dict[str, Any]] = [
        {"basic_auth": ("user", "")},
        {"page_size": 0},
        {"refresh_seconds": 0},
        {"schema": "Not A Schema"},
    ]
    for options in bad:
        with pytest.raises(ConfigurationError):
            create_app(pg_dsn, **{"schema": schema, **options})
