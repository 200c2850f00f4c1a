"""The one place a `TaskFilter` becomes SQL (its values only ever become params): a page of
tasks, the planner's estimate, one batch of a bulk change (`pgtasq._transitions`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgtasq._columns import TASK_COLUMNS, TASK_COLUMNS_PREVIEW
from pgtasq._sql_common import (
    EMIT,
    Statement,
    events_channel,
    events_cte,
    notify_channel,
    wake_rows,
)
from pgtasq._transitions import TRANSITIONS, states_sql
from pgtasq.filters import COUNT_EXACT_MAX
from pgtasq.tables import check_schema_name

if TYPE_CHECKING:
    from pgtasq.filters import TaskFilter

_ORDER_CASTS = {
    "id": "bigint",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "run_at": "timestamptz",
    "priority": "smallint",
    "attempts": "int",
}


def task_filter_where(schema: str, f: TaskFilter) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (without ``WHERE``) and the params of a filter."""
    check_schema_name(schema)
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if f.state_names:
        stored = [name for name in f.state_names if name not in ("scheduled", "retry")]
        either = []
        if stored:
            either.append(f"status = ANY(CAST(%(states)s AS {schema}.task_status[]))")
            params["states"] = stored
        if "scheduled" in f.state_names:
            either.append("(status = 'pending' AND run_at > now())")
        if "retry" in f.state_names:
            either.append("(status = 'pending' AND attempts > 0)")
        clauses.append("(" + " OR ".join(either) + ")")
    if f.type_names:
        clauses.append("type = ANY(CAST(%(types)s AS text[]))")
        params["types"] = list(f.type_names)
    if f.queue_names:
        clauses.append("queue = ANY(CAST(%(queues)s AS text[]))")
        params["queues"] = list(f.queue_names)
    if f.task_ids:
        clauses.append("id = ANY(CAST(%(ids)s AS bigint[]))")
        params["ids"] = list(f.task_ids)
    if f.created_from is not None:
        clauses.append("created_at >= CAST(%(created_from)s AS timestamptz)")
        params["created_from"] = f.created_from
    if f.created_until is not None:
        clauses.append("created_at < CAST(%(created_until)s AS timestamptz)")
        params["created_until"] = f.created_until
    return " AND ".join(clauses) or "true", params


def task_list(
    schema: str, f: TaskFilter, *, count: str = "exact", full: bool = True
) -> tuple[Statement, dict[str, Any]]:
    """A page of tasks with the count of what the filter selects (ignoring the page).

    ``full=False``: the rows in `TASK_COLUMNS_PREVIEW` (previews of payload and result, the
    latest error), for a listing that shows a column of each.

    One statement, so the page and the total come from one snapshot and agree even while
    other sessions write. Every row carries ``total``; an empty page is one row whose task
    columns are NULL. The page has up to ``limit + 1`` rows: the one past the page only says
    that there is a next page. ``count`` (see `pgtasq.filters.COUNT_MODES`): ``exact`` counts
    every selected row, which costs what a separate ``count(*)`` would; ``capped`` stops
    counting at ``COUNT_EXACT_MAX + 1`` rows; ``none`` counts nothing (``total`` is NULL).
    """
    where, params = task_filter_where(schema, f)
    field = f.order_field
    cast = _ORDER_CASTS[field]  # KeyError here means the filter let an unknown field through
    direction = "DESC" if f.order_direction == "desc" else "ASC"
    page_where = where
    if f.cursor is not None:
        sign = "<" if direction == "DESC" else ">"
        page_where += (
            f" AND ({field}, id) {sign} "
            f"(CAST(%(after_value)s AS {cast}), CAST(%(after_id)s AS bigint))"
        )
        params = {**params, "after_value": f.cursor.value, "after_id": f.cursor.id}
    counted = {
        "exact": f"SELECT count(*) AS total FROM {schema}.tasks WHERE {where}",
        "capped": (
            f"SELECT count(*) AS total FROM (SELECT 1 FROM {schema}.tasks WHERE {where} "
            f"LIMIT {COUNT_EXACT_MAX + 1}) AS capped"
        ),
        "none": "SELECT CAST(NULL AS bigint) AS total",
    }[count]
    text = f"""
WITH page AS (
    SELECT {TASK_COLUMNS if full else TASK_COLUMNS_PREVIEW} FROM {schema}.tasks WHERE {page_where}
    ORDER BY {field} {direction}, id {direction}
    LIMIT {int(f.limit_rows) + 1} OFFSET {int(f.offset_rows)}
),
counted AS ({counted})
SELECT counted.total, page.* FROM counted LEFT JOIN page ON true
ORDER BY page.{field} {direction}, page.id {direction}
"""
    return Statement("task_list" if full else "task_list_preview", text), params


def task_count_estimate(schema: str, f: TaskFilter) -> tuple[Statement, dict[str, Any]]:
    """The planner's estimate of how many rows the filter selects: EXPLAIN, nothing read.

    One row, ``QUERY PLAN``: a JSON list whose ``[0]["Plan"]["Plan Rows"]`` is the estimate.
    """
    where, params = task_filter_where(schema, f)
    text = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {schema}.tasks WHERE {where}"
    return Statement("task_count_estimate", text), params


def task_bulk(schema: str, action: str, f: TaskFilter) -> tuple[Statement, dict[str, Any]]:
    """One batch of a bulk change (cancel, retry, delete, run): the first %(batch)s rows past
    id %(after)s.

    The caller runs it with ``after`` set to the largest id of the previous batch (keyset),
    so each batch starts where the last one stopped instead of reading the rows already
    changed again; a filter by ids gets its ids in sorted slices (``ids``), one per batch.
    The change reaches its rows by primary key (``= ANY(ARRAY(…))``), never by a scan of
    the table. Returns the changed ids. The transition (`pgtasq._transitions`) is the one
    `task_cancel`, `task_retry`, `task_delete` or `task_run` makes, with the same events.
    """
    t = TRANSITIONS[action]
    where, params = task_filter_where(schema, f)
    batch = (
        f"SELECT id AS batch_id FROM {schema}.tasks WHERE {where} "
        f"AND {states_sql('status', t.from_states)} "
        + (f"AND {t.guard} " if t.guard is not None else "")
        + "AND id > CAST(%(after)s AS bigint) "
        "ORDER BY id LIMIT CAST(%(batch)s AS int) FOR UPDATE SKIP LOCKED"
    )
    by_id = "t.id = ANY(ARRAY(SELECT batch_id FROM batch))"
    returning = "t.id, t.queue" if t.wake else "t.id"
    if t.sets is None:
        change = f"DELETE FROM {schema}.tasks t WHERE {by_id} RETURNING {returning}"
    else:
        change = f"UPDATE {schema}.tasks t SET {t.sets} WHERE {by_id} RETURNING {returning}"
    ctes = [f"batch AS ({batch})", f"changed AS ({change})"]
    final = "SELECT changed.id FROM changed"
    if t.wake:
        ctes.append(f"woken AS ({wake_rows(notify_channel(schema), 'changed')})")
        final += " LEFT JOIN woken ON true"
    if t.event is not None:
        ctes.append(events_cte(events_channel(schema), "changed", f"'{t.event}'"))
        final += f" WHERE {EMIT}"
    return Statement(f"task_bulk_{action}", f"WITH {', '.join(ctes)} {final}"), params
