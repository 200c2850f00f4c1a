"""The dashboard's ASGI app: settings, the connection per request, rendering, the pages.

Every page reads through the public `pgtasq.AsyncClient` (given each request's connection
with ``conn=``) and, for what the Client does not ask, `pgtasq.web._queries`. The actions
(POST) are in `pgtasq.web._actions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jinja2
import psycopg
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pgtasq._database import misconfigured
from pgtasq._dsn import redact
from pgtasq._pool_async import AsyncLazyPool
from pgtasq.client import AsyncClient
from pgtasq.errors import (
    ConfigurationError,
    DatabaseMisconfigured,
    DatabaseUnavailable,
    PgtasqError,
    TaskNotFound,
)
from pgtasq.filters import InvalidFilter, TaskFilter
from pgtasq.models import TaskStatus
from pgtasq.tables import SCHEMA_DEFAULT, check_schema_name
from pgtasq.web import _charts, _forms, _jobs, _queries, _security, _views

HERE = Path(__file__).parent
REFRESH_SECONDS_DEFAULT = 5.0
HISTORY_DAYS = 14
RECENT_FAILURES = 10
POOL_MAX_SIZE_DEFAULT = 4
# The overview (what every open browser polls) is read at most once per this many seconds,
# however many browsers poll it.
CACHE_SECONDS_DEFAULT = 2.0
CONNECT_TIMEOUT_DEFAULT = 5.0  # how long a page waits for the database to answer at first

log = logging.getLogger("pgtasq.web")

# On every page: nothing but the package's own script and styles runs (htmx adds one inline
# style), no other site may frame the page (its buttons act), no stale copy is kept.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclasses.dataclass(frozen=True)
class WebSettings:
    """What `create_app` was told; see its docstring."""

    schema: str = SCHEMA_DEFAULT
    read_only: bool = False
    hide_payloads: bool = False
    authorize: _security.Authorize | None = None
    trusted_origins: tuple[str, ...] = ()
    refresh_seconds: float = REFRESH_SECONDS_DEFAULT
    worker_alive_seconds: float = _queries.WORKER_ALIVE_SECONDS_DEFAULT
    page_size: int = _forms.PAGE_SIZE_DEFAULT
    cache_seconds: float = CACHE_SECONDS_DEFAULT
    title: str = "pgtasq"
    secret: bytes = dataclasses.field(default_factory=lambda: secrets.token_bytes(32), repr=False)


class Dashboard:
    """One dashboard: its pool (opened on first use), a DSN-less `AsyncClient` that runs
    on each request's connection, and the templates."""

    def __init__(
        self, dsn: str, settings: WebSettings, pool_max_size: int, connect_timeout: float
    ) -> None:
        self.settings = settings
        self.pool = AsyncLazyPool(
            dsn,
            min_size=1,
            max_size=pool_max_size,
            name="pgtasq-web",
            open_timeout=connect_timeout,
        )
        self.client = AsyncClient(schema=settings.schema)
        self.jobs = _jobs.Jobs()
        self._overview: tuple[float, dict[str, Any]] | None = None
        self._overview_lock: asyncio.Lock | None = None
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            ago=_views.ago,
            duration=_views.duration,
            when=_views.when,
            error_text=_views.error_text,
            when_ts=lambda ts: _views.when(datetime.fromtimestamp(ts, timezone.utc)),
            tabs=_forms.TABS,
            orders=_forms.ORDERS,
        )

    async def overview(self) -> dict[str, Any]:
        """The overview's data, shared by every request within ``cache_seconds``."""
        ttl = self.settings.cache_seconds
        if ttl <= 0:
            return await _overview_data(self)
        if self._overview_lock is None:
            self._overview_lock = asyncio.Lock()
        async with self._overview_lock:  # one reader at a time; the others get its result
            cached = self._overview
            if cached is not None and time.monotonic() - cached[0] < ttl:
                return cached[1]
            data = await _overview_data(self)
            self._overview = (time.monotonic(), data)
            return data

    @contextlib.asynccontextmanager
    async def conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        pool = await self.pool.get()
        async with pool.connection() as conn:
            yield conn

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        s = self.settings
        root = request.scope.get("root_path", "")
        cookie = _security.csrf_cookie(request)
        html = self.env.get_template(template).render(
            request=request,
            url=lambda path: root + path,
            here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            csrf_field=_security.CSRF_FIELD,
            csrf_token=_security.csrf_token(s.secret, cookie),
            read_only=s.read_only,
            hide_payloads=s.hide_payloads,
            title=s.title,
            refresh_seconds=s.refresh_seconds,
            notice=request.query_params.get("notice"),
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        if getattr(request.state, "csrf_new", False):
            response.set_cookie(
                _security.CSRF_COOKIE,
                cookie,
                httponly=True,
                samesite="strict",
                path=root or "/",
                secure=request.url.scheme == "https",
            )
        response.headers.update(SECURITY_HEADERS)
        return response


Page = Callable[[Dashboard, Request], Awaitable[Response]]


def page(handler: Page, dashboard: Dashboard, action: str = "view") -> Callable[..., Any]:
    """A page's endpoint: the ``authorize`` hook, then the handler (see `guarded`)."""

    async def endpoint(request: Request) -> Response:
        await _security.authorize(dashboard.settings.authorize, request, action)
        return await handler(dashboard, request)

    return guarded(dashboard, endpoint)


def guarded(
    dashboard: Dashboard, endpoint: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """pgtasq's and the database's errors as a page that says what went wrong (never a
    traceback)."""

    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except TaskNotFound as exc:
            return dashboard.render(request, "error.html", 404, message=str(exc))
        except (DatabaseUnavailable, DatabaseMisconfigured) as exc:
            log.warning("dashboard: %s", exc)
            return dashboard.render(request, "error.html", 503, message=str(exc))
        except (PgtasqError, ValueError) as exc:
            return dashboard.render(request, "error.html", 400, message=str(exc))
        except psycopg.Error as exc:
            return database_error(dashboard, request, exc)

    return run


def database_error(d: Dashboard, request: Request, exc: psycopg.Error) -> Response:
    """A psycopg error as a page: what no retry can fix (a schema not migrated, a missing
    privilege) says so; anything else is logged and shown as its first line."""
    fatal = misconfigured(exc, d.settings.schema)
    if fatal is not None:
        log.warning("dashboard: %s", fatal)
        return d.render(request, "error.html", 503, message=str(fatal))
    log.warning("dashboard: database error: %s", exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return d.render(request, "error.html", 503, message=f"database error: {redact(first)}")


# -- the pages -------------------------------------------------------------------------------


def _day_chart(history: list[Any], days: int = HISTORY_DAYS) -> str:
    """Processed (completed) and failed per UTC day, the last ``days`` days, from
    `AsyncClient.queue_history` rows (one per queue and day: summed here)."""
    completed: dict[date, int] = defaultdict(int)
    failed: dict[date, int] = defaultdict(int)
    for h in history:
        completed[h.day] += h.completed
        failed[h.day] += h.failed + h.retried
    today = datetime.now(timezone.utc).date()
    last = max([today, *(h.day for h in history)])
    span = [last - timedelta(days=i) for i in range(days - 1, -1, -1)]
    return _charts.bars(
        [d.strftime("%m-%d") for d in span],
        [
            _charts.Series("completed", "ok", [completed[d] for d in span]),
            _charts.Series("failed attempts", "bad", [failed[d] for d in span]),
        ],
        title="Attempts per day (UTC)",
    )


async def _overview_data(d: Dashboard) -> dict[str, Any]:
    """The overview, read so that its cost does not grow with the finished history: see
    `_queries.state_totals`, `queues_now` and `recent_failure_ids`."""
    c, s = d.client, d.settings
    async with d.conn() as conn:
        totals = await _queries.state_totals(conn, s.schema)
        queues = await _queries.queues_now(conn, s.schema)
        workers = await _queries.live_workers(conn, s.schema, s.worker_alive_seconds)
        failed_ids = await _queries.recent_failure_ids(conn, s.schema, RECENT_FAILURES)
        failures: list[Any] = []
        if failed_ids:
            found = await c.list_tasks(
                TaskFilter().ids(*failed_ids).limit(len(failed_ids)),
                count="none",
                conn=conn,
                full=False,
            )
            by_id = {t.id: t for t in found.tasks}
            failures = [by_id[i] for i in failed_ids if i in by_id]
        minutes, capped = await _queries.throughput_per_minute(conn, s.schema)
        history = await c.queue_history(None, days=HISTORY_DAYS, conn=conn)
    minute_chart = _charts.bars(
        [m.minute.strftime("%H:%M") for m in minutes],
        [
            _charts.Series("completed", "ok", [m.completed for m in minutes]),
            _charts.Series("failed", "bad", [m.failed for m in minutes]),
            _charts.Series("cancelled", "off", [m.cancelled for m in minutes]),
        ],
        title="Tasks finished per minute, last hour (UTC)",
    )
    return {
        "totals": totals,
        "queues": queues,
        "workers": workers,
        "failures": failures,
        "minute_chart": Markup(minute_chart),  # numbers and escaped labels only
        "day_chart": Markup(_day_chart(history)),
        "last_minute": minutes[-1] if minutes else None,
        "minutes_capped": _queries.THROUGHPUT_ROWS_MAX if capped else None,
        "today": {
            "processed": sum(q.processed_today for q in queues),
            "failed": sum(q.failed_today for q in queues),
        },
    }


async def overview(d: Dashboard, request: Request) -> Response:
    return d.render(request, "overview.html", **await d.overview())


async def overview_live(d: Dashboard, request: Request) -> Response:
    return d.render(request, "_overview_live.html", **await d.overview())


async def queues_page(d: Dashboard, request: Request) -> Response:
    """Every queue's unfinished tasks (through their indexes), attempts from the daily
    counters, and, on a table small enough to count, its finished tasks per state."""
    s = d.settings
    async with d.conn() as conn:
        queues = await _queries.queues_now(conn, s.schema)
        counted = _queries.counts_exactly(await _queries.table_rows(conn, s.schema))
        if counted:
            exact = {q.name: q for q in await d.client.list_queues(conn=conn)}
            queues = [
                dataclasses.replace(
                    q,
                    completed=exact[q.name].completed,
                    failed=exact[q.name].failed,
                    cancelled=exact[q.name].cancelled,
                )
                if q.name in exact
                else q
                for q in queues
            ]
        history = await d.client.queue_history(None, days=HISTORY_DAYS, conn=conn)
    by_queue: dict[str, list[Any]] = defaultdict(list)
    for h in history:
        by_queue[h.queue].append(h)
    charts = {q.name: Markup(_day_chart(by_queue[q.name])) for q in queues}
    return d.render(request, "queues.html", queues=queues, charts=charts, counted=counted)


async def tasks_page(d: Dashboard, request: Request) -> Response:
    query = _forms.task_query(request.query_params)
    error = query.error
    try:
        after = _forms.cursor(request.query_params.get("after"), query.task_filter.order_field)
    except InvalidFilter as exc:
        after, error = None, str(exc)
    async with d.conn() as conn:
        result = await d.client.list_tasks(
            query.page(after, d.settings.page_size), count="auto", conn=conn, full=False
        )
    next_link = None
    if result.next_cursor is not None:
        next_link = "?" + query.query_string(after=result.next_cursor.to_text())
    return d.render(
        request,
        "tasks.html",
        query=query,
        state=query.values["state"] or "all",
        page=result,
        error=error,
        next_link=next_link,
        first_link="?" + query.query_string() if after is not None else None,
    )


def _task_id(request: Request) -> int:
    try:
        task_id = int(request.path_params["task_id"])
    except ValueError:
        raise HTTPException(404, "no such task") from None
    if task_id < 1:
        raise HTTPException(404, "no such task")
    return task_id


async def task_page(d: Dashboard, request: Request) -> Response:
    task_id = _task_id(request)
    s = d.settings
    async with d.conn() as conn:
        task = await d.client.get_task(task_id, conn=conn)
        facts = await _queries.task_facts(
            conn,
            s.schema,
            queue=task.queue,
            status=task.status.value,
            locked_by=task.locked_by,
            priority=task.priority,
            run_at=task.run_at,
            task_id=task.id,
            alive_seconds=s.worker_alive_seconds,
        )
    payload, payload_cut = _views.pretty_json(task.payload)
    result, result_cut = _views.pretty_json(task.result)
    return d.render(
        request,
        "task.html",
        task=task,
        why=_views.why_not_running(task, facts),
        timeline=_views.timeline(task),
        payload=payload,
        payload_cut=payload_cut,
        result=result,
        result_cut=result_cut,
        can_run_now=task.status is TaskStatus.PENDING and task.run_at > facts.now,
    )


async def task_download(d: Dashboard, request: Request) -> Response:
    task_id = _task_id(request)
    part = request.path_params["part"]
    if part not in ("payload", "result"):
        raise HTTPException(404, "no such part")
    if d.settings.hide_payloads:
        raise HTTPException(403, "payloads are hidden on this dashboard")
    async with d.conn() as conn:
        task = await d.client.get_task(task_id, conn=conn)
    body = json.dumps(getattr(task, part), indent=2, ensure_ascii=False)
    return Response(
        body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="task-{task_id}-{part}.json"'},
    )


async def job_page(d: Dashboard, request: Request) -> Response:
    job = d.jobs.get(request.path_params["job_id"])
    if job is None:
        raise HTTPException(404, "no such job (jobs are kept by the process that ran them)")
    root = request.scope.get("root_path", "")
    back = _forms.safe_next(request.query_params.get("back"), root + "/tasks")
    return d.render(request, "job.html", job=job, back=back)


async def workers_page(d: Dashboard, request: Request) -> Response:
    async with d.conn() as conn:
        workers = await d.client.list_workers(conn=conn)
        now = (await (await conn.execute("SELECT now()")).fetchone() or [None])[0]
    alive = d.settings.worker_alive_seconds
    return d.render(request, "workers.html", workers=workers, now=now, alive_seconds=alive)


async def schedules_page(d: Dashboard, request: Request) -> Response:
    async with d.conn() as conn:
        schedules = await d.client.list_schedules(conn=conn)
    return d.render(request, "schedules.html", schedules=schedules)


def _basic_auth_from_env() -> tuple[str, str] | None:
    user, password = os.environ.get(_security.USER_ENV), os.environ.get(_security.PASSWORD_ENV)
    if not user and not password:
        return None
    if not user or not password:
        raise ConfigurationError(
            f"set both {_security.USER_ENV} and {_security.PASSWORD_ENV}, or neither"
        )
    return user, password


def create_app(
    dsn: str,
    *,
    schema: str = SCHEMA_DEFAULT,
    read_only: bool = False,
    basic_auth: tuple[str, str] | None = None,
    authorize: _security.Authorize | None = None,
    hide_payloads: bool = False,
    trusted_origins: tuple[str, ...] = (),
    refresh_seconds: float = REFRESH_SECONDS_DEFAULT,
    worker_alive_seconds: float = _queries.WORKER_ALIVE_SECONDS_DEFAULT,
    page_size: int = _forms.PAGE_SIZE_DEFAULT,
    pool_max_size: int = POOL_MAX_SIZE_DEFAULT,
    cache_seconds: float = CACHE_SECONDS_DEFAULT,
    connect_timeout: float = CONNECT_TIMEOUT_DEFAULT,
    secret: bytes | None = None,
    title: str = "pgtasq",
) -> Starlette:
    """The dashboard as an ASGI app; see `pgtasq.web`."""
    from pgtasq.web import _actions

    check_schema_name(schema)
    if basic_auth is None:
        basic_auth = _basic_auth_from_env()
    elif not (isinstance(basic_auth, tuple) and len(basic_auth) == 2 and all(basic_auth)):
        raise ConfigurationError("basic_auth must be a (user, password) pair, both non-empty")
    if not 1 <= page_size <= 1000:
        raise ConfigurationError(f"page_size must be from 1 to 1000, got {page_size!r}")
    if not refresh_seconds > 0:
        raise ConfigurationError(f"refresh_seconds must be > 0, got {refresh_seconds!r}")
    settings = WebSettings(
        schema=schema,
        read_only=read_only,
        hide_payloads=hide_payloads,
        authorize=authorize,
        trusted_origins=tuple(trusted_origins),
        refresh_seconds=refresh_seconds,
        worker_alive_seconds=worker_alive_seconds,
        page_size=page_size,
        cache_seconds=cache_seconds,
        title=title,
        **({} if secret is None else {"secret": secret}),
    )
    d = Dashboard(dsn, settings, pool_max_size, connect_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await d.jobs.close()
            await d.pool.close()

    routes = [
        Route("/", page(overview, d)),
        Route("/live/overview", page(overview_live, d)),
        Route("/queues", page(queues_page, d)),
        Route("/queues/{action:str}", guarded(d, _actions.queue_action(d)), methods=["POST"]),
        Route("/tasks", page(tasks_page, d)),
        Route("/tasks/bulk", guarded(d, _actions.bulk_action(d)), methods=["POST"]),
        Route("/tasks/{task_id:int}", page(task_page, d)),
        Route("/tasks/{task_id:int}/{part:str}.json", page(task_download, d, "download")),
        Route(
            "/tasks/{task_id:int}/{action:str}",
            guarded(d, _actions.task_action(d)),
            methods=["POST"],
        ),
        Route("/jobs/{job_id:str}", page(job_page, d)),
        Route("/workers", page(workers_page, d)),
        Route("/schedules", page(schedules_page, d)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = []
    if basic_auth is not None:
        user, password = basic_auth
        middleware.append(Middleware(_security.BasicAuth, user=user, password=password))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return d.render(request, "error.html", exc.status_code, message=exc.detail)

    app.add_exception_handler(HTTPException, http_error)
    app.state.dashboard = d
    return app
