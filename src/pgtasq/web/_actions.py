"""The dashboard's actions: every one a POST that passes `_security.check_action` (not
read-only, the ``authorize`` hook, the same origin, a CSRF token), is logged (who, what, how
many) on the ``pgtasq.web`` logger, and answers with a redirect that carries a notice.

Bulk actions confirm first: the first POST shows how many tasks the action would change,
the second (``confirm=yes``) starts a job (`pgtasq.web._jobs`) that changes them in
batches, and answers with the job's page, which shows its progress.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pgtasq.errors import PgtasqError, TaskNotFound
from pgtasq.filters import InvalidFilter, TaskFilter
from pgtasq.models import TaskStatus
from pgtasq.web import _forms, _security
from pgtasq.web._app import Dashboard, log

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]

TASK_ACTIONS = ("cancel", "retry", "delete", "run_now")
BULK_ACTIONS = ("cancel", "retry", "delete")
QUEUE_ACTIONS = ("pause", "resume")
# The stored states each bulk action changes (its SQL says the same; this is for the count
# the confirmation shows). "scheduled" and "retry" are views of pending.
ELIGIBLE = {
    "cancel": ("pending", "running", "failed"),
    "retry": ("failed", "cancelled"),
    "delete": ("pending", "completed", "failed", "cancelled"),
}
_PAST = {
    "cancel": "cancelled",
    "retry": "retried",
    "delete": "deleted",
    "run_now": "made ready now",
    "pause": "paused",
    "resume": "resumed",
}


def eligible(task_filter: TaskFilter, action: str) -> TaskFilter | None:
    """The filter narrowed to the states ``action`` changes (None: it changes none of them)."""
    allowed = ELIGIBLE[action]
    if not task_filter.state_names:
        return task_filter.statuses(*allowed)
    states = [
        s
        for s in task_filter.state_names
        if s in allowed or (s in ("scheduled", "retry") and "pending" in allowed)
    ]
    return task_filter.statuses(*states) if states else None


def _redirect(request: Request, form: FormData, fallback: str, notice: str) -> Response:
    root = request.scope.get("root_path", "")
    nxt = form.get("next")
    target = _forms.safe_next(nxt if isinstance(nxt, str) else None, root + fallback)
    return RedirectResponse(_forms.with_notice(target, notice), status_code=303)


async def _checked(d: Dashboard, request: Request, action: str) -> FormData:
    form = await request.form()
    s = d.settings
    await _security.check_action(
        request,
        form,
        action=action,
        secret=s.secret,
        read_only=s.read_only,
        hook=s.authorize,
        trusted_origins=s.trusted_origins,
    )
    return form


def task_action(d: Dashboard) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        task_id = int(request.path_params["task_id"])
        action = request.path_params["action"]
        if action not in TASK_ACTIONS:
            raise HTTPException(404, "no such action")
        form = await _checked(d, request, action)
        fallback = "/tasks" if action == "delete" else f"/tasks/{task_id}"
        try:
            async with d.conn() as conn:
                if action == "cancel":
                    await d.client.cancel_task(task_id, conn=conn)
                elif action == "retry":
                    await d.client.retry_task(task_id, conn=conn)
                elif action == "delete":
                    await d.client.delete_task(task_id, conn=conn)
                else:
                    task = await d.client.get_task(task_id, conn=conn)
                    if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                        await d.client.retry_task(task_id, conn=conn)
                    else:
                        await d.client.run_task(task_id, conn=conn)
        except TaskNotFound as exc:
            root = request.scope.get("root_path", "")
            return RedirectResponse(_forms.with_notice(root + "/tasks", f"Not done: {exc}"), 303)
        except PgtasqError as exc:
            log.info("%s: %s task %d refused: %s", _security.who(request), action, task_id, exc)
            return _redirect(request, form, f"/tasks/{task_id}", f"Not done: {exc}")
        log.info("%s: %s task %d", _security.who(request), action, task_id)
        return _redirect(request, form, fallback, f"Task {task_id} {_PAST[action]}.")

    return endpoint


def queue_action(d: Dashboard) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in QUEUE_ACTIONS:
            raise HTTPException(404, "no such action")
        form = await _checked(d, request, action)
        name = form.get("name")
        if not isinstance(name, str) or not name:
            raise HTTPException(400, "which queue? (the form has no name)")
        try:
            async with d.conn() as conn:
                if action == "pause":
                    await d.client.pause_queue(name, conn=conn, create=False)
                else:
                    await d.client.resume_queue(name, conn=conn, create=False)
        except PgtasqError as exc:
            return _redirect(request, form, "/queues", f"Not done: {exc}")
        log.info("%s: %s queue %r", _security.who(request), action, name)
        return _redirect(request, form, "/queues", f"Queue {name!r} {_PAST[action]}.")

    return endpoint


def _bulk_filter(form: FormData) -> tuple[TaskFilter, str]:
    """The tasks a bulk form selects: its checked ids (scope "selected"), or everything its
    filter fields match (scope "matching")."""
    scope = form.get("scope")
    if scope == "selected":
        words = [w for w in form.getlist("ids") if isinstance(w, str)]
        if not words:
            raise InvalidFilter("no task selected")
        try:
            ids = [int(w) for w in words]
        except ValueError:
            raise InvalidFilter("ids: expected task ids") from None
        return TaskFilter().ids(*ids), "selected"
    if scope == "matching":
        fields = {k: v for k in _forms.FILTER_FIELDS if isinstance(v := form.get(k), str)}
        query = _forms.task_query(fields)
        if query.error is not None:
            raise InvalidFilter(query.error)
        return query.task_filter, "matching"
    raise InvalidFilter("scope must be 'selected' or 'matching'")


def bulk_action(d: Dashboard) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        form = await request.form()
        action = form.get("action")
        if not isinstance(action, str) or action not in BULK_ACTIONS:
            raise HTTPException(400, "unknown bulk action")
        form = await _checked(d, request, action)
        try:
            task_filter, scope = _bulk_filter(form)
        except InvalidFilter as exc:
            return _redirect(request, form, "/tasks", f"Not done: {exc}")
        narrowed = eligible(task_filter, action)
        if form.get("confirm") != "yes":
            count = 0
            if narrowed is not None:
                async with d.conn() as conn:
                    page = await d.client.list_tasks(narrowed.limit(1), count="exact", conn=conn)
                count = page.total or 0
            fields = [
                (k, v)
                for k, v in form.multi_items()
                if k not in (_security.CSRF_FIELD, "confirm") and isinstance(v, str)
            ]
            return d.render(
                request,
                "confirm.html",
                action=action,
                scope=scope,
                count=count,
                fields=fields,
                back=_forms.safe_next(
                    nxt if isinstance(nxt := form.get("next"), str) else None,
                    request.scope.get("root_path", "") + "/tasks",
                ),
            )
        try:
            expected = max(0, int(str(form.get("expected") or 0)))
        except ValueError:
            expected = 0
        method = {
            "cancel": d.client.cancel_tasks,
            "retry": d.client.retry_tasks,
            "delete": d.client.delete_tasks,
        }[action]

        async def run(progress: Callable[[int], None]) -> int:
            if narrowed is None:
                return 0
            async with d.conn() as conn:
                return await method(task_filter, conn=conn, progress=progress)

        job = d.jobs.start(
            action=action,
            who=_security.who(request),
            described=f"{scope}: {_describe(task_filter)}",
            expected=expected,
            run=run,
        )
        root = request.scope.get("root_path", "")
        nxt = form.get("next")
        back = _forms.safe_next(nxt if isinstance(nxt, str) else None, root + "/tasks")
        target = f"{root}/jobs/{job.id}?{urlencode({'back': back})}"
        return RedirectResponse(target, status_code=303)

    return endpoint


def _describe(f: TaskFilter) -> str:
    """The filter in a few words, for the action log."""
    parts = []
    for label, values in (
        ("states", f.state_names),
        ("queues", f.queue_names),
        ("types", f.type_names),
        ("ids", f.task_ids[:20]),
    ):
        if values:
            more = "…" if label == "ids" and len(f.task_ids) > 20 else ""
            parts.append(f"{label}={','.join(map(str, values))}{more}")
    if f.created_from is not None:
        parts.append(f"created>={f.created_from.isoformat()}")
    if f.created_until is not None:
        parts.append(f"created<{f.created_until.isoformat()}")
    return " ".join(parts) or "all tasks"
