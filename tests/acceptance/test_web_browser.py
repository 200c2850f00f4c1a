"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Skipped, saying why, when Playwright or the browser is missing (``.ci/run`` installs the
browser with apt-get). Each test serves the app with uvicorn on a port of its own and
saves a screenshot of what it saw in its tmp dir.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="the web extra is not installed")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

import uvicorn  # noqa: E402

from pgtasq import Client  # noqa: E402
from pgtasq.web import create_app  # noqa: E402
from tests.web_support import enqueue, fail_once, status  # noqa: E402

CHROMIUM = os.environ.get("PGTASQ_TEST_CHROMIUM") or shutil.which("chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium executable (apt-get install chromium, or set PGTASQ_TEST_CHROMIUM)",
    ),
]


class Served:
    """The dashboard on a port of this machine, served by uvicorn in a thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)  # ready now: connections wait until uvicorn accepts
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.server.capture_signals = _no_signals  # type: ignore[method-assign]
        self.server.run(sockets=[self.sock])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class _NoSignals:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _no_signals() -> _NoSignals:
    return _NoSignals()  # uvicorn runs in a thread here: signals stay with pytest


@pytest.fixture
def served(pg_dsn: str, schema: str) -> Iterator[Served]:
    server = Served(create_app(pg_dsn, schema=schema, refresh_seconds=0.3))
    yield server
    server.stop()


@pytest.fixture
def page(served: Served, tmp_path: Path) -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        yield tab
        tab.screenshot(path=str(tmp_path / "last.png"), full_page=True)
        browser.close()
        assert errors == [], f"JavaScript or CSP errors on the page: {errors}"


def failed_task(dsn: str, schema: str, task_type: str, message: str) -> int:
    """`fail_once` on a thread of its own: Playwright's sync API keeps an event loop
    running on this one, and a worker runs its own."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fail_once, dsn, schema, task_type, message).result(timeout=60)


def shot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def test_every_page_opens(
    page: Any, served: Served, pg_dsn: str, schema: str, tmp_path: Path
) -> None:
    for n in range(6):
        enqueue(pg_dsn, schema, "email.send", {"to": f"user{n}@example.com"}, queue="mail")
    failed = failed_task(pg_dsn, schema, "report.build", "the database said no")
    for path, heading in [
        ("/", "Overview"),
        ("/queues", "Queues"),
        ("/tasks", "Tasks"),
        (f"/tasks/{failed}", f"Task {failed}"),
        ("/workers", "Workers"),
        ("/schedules", "Schedules"),
    ]:
        page.goto(served.url + path)
        assert page.locator("h1").inner_text().startswith(heading)
        shot(page, tmp_path, path.strip("/").replace("/", "-") or "overview")
    assert "the database said no" in page.goto(served.url + f"/tasks/{failed}").text()


def test_filter_then_cancel_a_task_and_see_its_row_change(
    page: Any, served: Served, pg_dsn: str, schema: str, tmp_path: Path
) -> None:
    mail = enqueue(pg_dsn, schema, "email.send", queue="mail")
    enqueue(pg_dsn, schema, "other", queue="other")
    page.goto(served.url + "/tasks")
    page.fill("input[name=queue]", "mail")
    page.click("#filters button[type=submit]")
    rows = page.locator("#tasks tbody tr[data-id]")
    playwright_api.expect(rows).to_have_count(1)
    page.click(f"#tasks a[href$='/tasks/{mail}']")
    page.click("button:has-text('Cancel')")
    playwright_api.expect(page.locator("h1 .state")).to_have_text("cancelled")
    playwright_api.expect(page.locator(".notice")).to_contain_text(f"Task {mail} cancelled.")
    page.goto(served.url + "/tasks?queue=mail")
    row = page.locator(f"#tasks tr[data-id='{mail}']")
    playwright_api.expect(row).to_have_attribute("data-state", "cancelled")
    shot(page, tmp_path, "cancelled")
    page.click(f"#tasks a[href$='/tasks/{mail}']")
    page.click("button:has-text('Retry')")
    playwright_api.expect(page.locator("h1 .state")).to_have_text("pending")
    assert status(pg_dsn, schema, mail) == "pending"


def test_bulk_cancel_of_a_selection_confirms_the_count(
    page: Any, served: Served, pg_dsn: str, schema: str
) -> None:
    ids = [enqueue(pg_dsn, schema) for _ in range(3)]
    page.goto(served.url + "/tasks")
    for task_id in ids[:2]:
        page.check(f"input[name=ids][value='{task_id}']")
    page.click("#bulk-selected button[value=cancel]")
    playwright_api.expect(page.locator("#confirm-count strong")).to_have_text("2")
    page.click("button:has-text('Yes, cancel 2 task(s)')")
    playwright_api.expect(page.locator("#job-done")).to_contain_text("2 task(s) cancelled.")
    states = [status(pg_dsn, schema, i) for i in ids]
    assert states == ["cancelled", "cancelled", "pending"]
    page.click("text=Back to the tasks")
    playwright_api.expect(page.locator(f"#tasks tr[data-id='{ids[0]}']")).to_have_attribute(
        "data-state", "cancelled"
    )


def test_pause_and_resume_a_queue(page: Any, served: Served, pg_dsn: str, schema: str) -> None:
    enqueue(pg_dsn, schema, queue="mail")
    page.goto(served.url + "/queues")
    row = page.locator("#queues tr[data-queue='mail']")
    row.locator("button:has-text('Pause')").click()
    playwright_api.expect(row.locator(".badge")).to_have_text("paused")
    assert Client(pg_dsn, schema=schema).list_queues()[0].paused
    row.locator("button:has-text('Resume')").click()
    playwright_api.expect(row.locator("td").nth(1)).to_have_text("active")


def test_live_counts_move_while_tasks_arrive_and_finish(
    page: Any, served: Served, pg_dsn: str, schema: str
) -> None:
    page.goto(served.url + "/")
    pending = page.locator("[data-state=pending].num")
    playwright_api.expect(pending).to_have_text("0")
    enqueue(pg_dsn, schema)
    enqueue(pg_dsn, schema)
    playwright_api.expect(pending).to_have_text("2")  # htmx polled the new counts in
    failed_task(pg_dsn, schema, "boom", "x")
    playwright_api.expect(page.locator("[data-state=failed].num")).to_have_text("1")


def test_page_through_the_tasks(page: Any, served: Served, pg_dsn: str, schema: str) -> None:
    from pgtasq import Producer, Task

    with Producer(pg_dsn, schema=schema) as producer:
        made = [t.id for t in producer.enqueue_many([Task("t") for _ in range(60)])]
    page.goto(served.url + "/tasks")
    rows = page.locator("#tasks tbody tr[data-id]")
    playwright_api.expect(rows).to_have_count(50)
    first = [int(i) for i in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]
    page.click("a[rel=next]")
    playwright_api.expect(rows).to_have_count(10)
    second = [int(i) for i in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]
    assert first + second == sorted(made, reverse=True)
    assert page.locator("a[rel=next]").count() == 0
    page.click("a[rel=first]")
    playwright_api.expect(rows).to_have_count(50)


def test_live_counts_follow_a_running_worker(
    page: Any, served: Served, pg_dsn: str, schema: str
) -> None:
    from pgtasq import Consumer

    release = threading.Event()
    consumer = Consumer(schema=schema, poll_interval=0.05, shutdown_timeout=5)
    consumer.register("slow", lambda ctx: release.wait(30))
    for _ in range(2):
        enqueue(pg_dsn, schema, "slow")
    page.goto(served.url + "/")
    playwright_api.expect(page.locator("[data-state=pending].num")).to_have_text("2")
    consumer.start(pg_dsn)
    try:
        playwright_api.expect(page.locator("[data-state=running].num")).to_have_text("2")
        playwright_api.expect(page.locator("[data-count=workers].num")).to_have_text("1")
        release.set()
        playwright_api.expect(page.locator("[data-state=completed].num")).to_have_text("2")
        playwright_api.expect(page.locator("[data-state=running].num")).to_have_text("0")
    finally:
        release.set()
        consumer.stop(timeout=30)
