"""Query strings and forms as pgtasq values, with no I/O: the tasks page's filter, the
``next`` address an action returns to, and the notice it carries."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pgtasq.filters import ORDER_FIELDS, Cursor, InvalidFilter, TaskFilter

PAGE_SIZE_DEFAULT = 50
# The tabs of the tasks page: every state a filter knows, and "all".
TABS = ("all", "pending", "scheduled", "retry", "running", "completed", "failed", "cancelled")
# The query parameters that select tasks (the rest are paging and display).
FILTER_FIELDS = ("state", "queue", "type", "id", "created_after", "created_before")
# How a page is ordered (any order the Client knows; newest first by default).
ORDER_DEFAULT = ("id", "desc")
ORDERS = ORDER_FIELDS
_SPLIT = re.compile(r"[\s,]+")


@dataclasses.dataclass(frozen=True)
class TaskQuery:
    """The tasks page's query string: what the form shows back, and the filter it means."""

    values: dict[str, str]  # the filter fields as given (shown back in the form)
    task_filter: TaskFilter  # without the page: no cursor, no limit applied
    error: str | None = None

    def page(self, after: Cursor | None, size: int) -> TaskFilter:
        return self.task_filter.limit(size).after(after)

    def query_string(self, **extra: str) -> str:
        """The filter fields (non-empty ones) plus ``extra``, as a query string."""
        pairs = {k: v for k, v in self.values.items() if v}
        pairs.update({k: v for k, v in extra.items() if v})
        return urlencode(pairs)


def _time(name: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidFilter(
            f"{name}: expected a date and time such as 2026-01-31T12:00, got {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _ids(text: str) -> tuple[int, ...]:
    out = []
    for word in _SPLIT.split(text.strip()):
        if not word:
            continue
        try:
            out.append(int(word.lstrip("#")))
        except ValueError:
            raise InvalidFilter(f"id: expected task ids (numbers), got {word!r}") from None
    return tuple(out)


def _names(text: str) -> tuple[str, ...]:
    return tuple(word for word in (w.strip() for w in text.split(",")) if word)


def task_query(params: Mapping[str, str]) -> TaskQuery:
    """The filter a query string asks for (newest first). A bad value gives the unfiltered
    query with the error to show, never an exception."""
    values = {name: (params.get(name) or "").strip() for name in FILTER_FIELDS}
    if values["state"] == "all":
        values["state"] = ""
    order = (params.get("order") or ORDER_DEFAULT[0]).strip()
    direction = (params.get("dir") or ORDER_DEFAULT[1]).strip()
    if order not in ORDER_FIELDS or direction not in ("asc", "desc"):
        order, direction = ORDER_DEFAULT
    if (order, direction) != ORDER_DEFAULT:
        values["order"], values["dir"] = order, direction
    f = TaskFilter().order_by(order, direction)  # type: ignore[arg-type]
    try:
        if values["state"]:
            if values["state"] not in TABS:
                raise InvalidFilter(f"state: unknown {values['state']!r}")
            f = f.statuses(values["state"])
        if values["queue"]:
            f = f.queues(*_names(values["queue"]))
        if values["type"]:
            f = f.types(*_names(values["type"]))
        if values["id"]:
            f = f.ids(*_ids(values["id"]))
        if values["created_after"]:
            f = f.created_after(_time("created_after", values["created_after"]))
        if values["created_before"]:
            f = f.created_before(_time("created_before", values["created_before"]))
    except InvalidFilter as exc:
        return TaskQuery(values, TaskFilter().order_by(order, direction), str(exc))  # type: ignore[arg-type]
    return TaskQuery(values, f)


def cursor(text: str | None, order_field: str) -> Cursor | None:
    """The ``after`` parameter (a `Cursor` in text form, for a page in that order), None if
    absent; InvalidFilter if malformed."""
    if not text:
        return None
    return Cursor.from_text(text, order_field)


def safe_next(target: str | None, fallback: str) -> str:
    """Where an action returns to: a path of this site (``/…``, never ``//host`` or a
    scheme), else ``fallback``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target


def with_notice(target: str, notice: str) -> str:
    """``target`` with its ``notice`` parameter set to ``notice`` (replacing an old one)."""
    parts = urlsplit(target)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "notice"]
    pairs.append(("notice", notice))
    return urlunsplit(("", "", parts.path, urlencode(pairs), ""))
