"""A tasks table as production has one: a history of finished rows, a backlog, statistics.

Used by ``run.py`` (``--history``, ``--backlog``) and ``churn.py``. Everything is one
``INSERT … SELECT generate_series`` per kind of row, so a million rows take seconds.

History rows are what a worker leaves behind: ~97 % completed, 2 % failed (out of attempts,
their errors recorded), 1 % cancelled; 5 % of the completed ones after a retry. They are
spread over 4 queues (half of them ``default``), 5 types (one of them ``noop``, the drain's
type) and the last 7 days, oldest first, so ids grow with time as they do in a real table.

Backlog rows are pending tasks that are not part of the measured work:

- ``queue``: ready now, in queue ``backlog``, which the measured worker does not serve;
- ``scheduled``: in the drained queue (``default``), type ``noop``, due in a day or more;
- ``mixed`` (default): half of each.

Either kind sits in the claim index (pending rows), and a worker must never step over it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgtasq.models import MAX_ATTEMPTS_DEFAULT

BACKLOG_KINDS = ("mixed", "queue", "scheduled")

_HISTORY = """
INSERT INTO {s}.tasks (queue, type, payload, priority, status, run_at, attempts, max_attempts,
                       errors, result, created_at, updated_at, attempted_at, finalized_at)
SELECT (ARRAY['default', 'default', 'default', 'default', 'mail', 'mail', 'reports',
              'webhooks'])[1 + i %% 8],
       (ARRAY['noop', 'send_email', 'resize_image', 'sync_account', 'deliver_webhook'])
           [1 + (i / 8) %% 5],
       jsonb_build_object('user_id', i %% 50000, 'email', 'user' || i %% 50000 || '@example.com',
                          'template', 'welcome'),
       CASE WHEN i %% 17 = 0 THEN 10 ELSE 0 END,
       st.status::{s}.task_status,
       created,
       CASE WHEN st.status = 'failed' THEN {max_attempts}
            WHEN st.status = 'cancelled' THEN 0
            WHEN i %% 20 = 3 THEN 2 ELSE 1 END,
       {max_attempts},
       CASE WHEN st.status = 'failed' OR (st.status = 'completed' AND i %% 20 = 3)
            THEN jsonb_build_array(jsonb_build_object(
                'attempt', 1, 'at', created + interval '20 ms',
                'error', 'TimeoutError: upstream did not answer in 30 s',
                'traceback', 'Traceback (most recent call last): ...'))
            ELSE '[]'::jsonb END,
       CASE WHEN st.status = 'completed' AND i %% 3 = 0
            THEN jsonb_build_object('ok', true, 'ms', i %% 500) END,
       created,
       created + (20 + i %% 500) * interval '1 ms',
       CASE WHEN st.status = 'cancelled' THEN NULL ELSE created + interval '20 ms' END,
       created + (20 + i %% 500) * interval '1 ms'
FROM (SELECT CAST(%(n)s AS int) AS n) AS total,
     generate_series(1, total.n) AS i,
     LATERAL (SELECT now() - interval '1 minute'
                     - interval '7 days' * ((total.n - i)::float8 / total.n) AS created) AS c,
     LATERAL (SELECT CASE WHEN i %% 50 = 7 THEN 'failed'
                          WHEN i %% 100 = 11 THEN 'cancelled'
                          ELSE 'completed' END AS status) AS st
"""

_BACKLOG_QUEUE = """
INSERT INTO {s}.tasks (queue, type, payload, max_attempts, run_at, created_at, updated_at)
SELECT 'backlog', 'noop', jsonb_build_object('n', i), {max_attempts},
       now() - interval '1 hour' + i * interval '1 ms', now() - interval '1 hour',
       now() - interval '1 hour'
FROM generate_series(1, CAST(%(n)s AS int)) AS i
"""

_BACKLOG_SCHEDULED = """
INSERT INTO {s}.tasks (queue, type, payload, max_attempts, run_at)
SELECT 'default', 'noop', jsonb_build_object('n', i), {max_attempts},
       now() + interval '1 day' + i * interval '1 s'
FROM generate_series(1, CAST(%(n)s AS int)) AS i
"""


def _run(conn: psycopg.Connection[Any], template: str, schema: str, n: int) -> None:
    if n > 0:
        text = template.format(s=schema, max_attempts=MAX_ATTEMPTS_DEFAULT)
        conn.execute(text.encode(), {"n": n})


def add_history(conn: psycopg.Connection[Any], schema: str, n: int) -> None:
    """``n`` finished rows (see the module docstring)."""
    _run(conn, _HISTORY, schema, n)


def add_backlog(conn: psycopg.Connection[Any], schema: str, n: int, kind: str = "mixed") -> None:
    """``n`` pending rows that the measured worker must leave alone."""
    if kind not in BACKLOG_KINDS:
        raise ValueError(f"backlog kind must be one of {BACKLOG_KINDS}, got {kind!r}")
    in_queue = {"queue": n, "scheduled": 0, "mixed": n - n // 2}[kind]
    _run(conn, _BACKLOG_QUEUE, schema, in_queue)
    _run(conn, _BACKLOG_SCHEDULED, schema, n - in_queue)


def vacuum_analyze(conn: psycopg.Connection[Any], schema: str) -> None:
    """What autovacuum would have done by now on a table with that history."""
    conn.execute(f"VACUUM ANALYZE {schema}.tasks".encode())


def counts_by_status(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    rows = conn.execute(
        f"SELECT status::text, count(*) FROM {schema}.tasks GROUP BY 1".encode()
    ).fetchall()
    return {status: int(n) for status, n in rows}


def prepare(
    dsn: str, schema: str, *, history: int, backlog: int, backlog_kind: str = "mixed"
) -> dict[str, Any]:
    """Fill a migrated, empty schema; VACUUM ANALYZE when anything was added. Returns what
    the JSON line reports about the table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        add_history(conn, schema, history)
        add_backlog(conn, schema, backlog, backlog_kind)
        if history or backlog:
            if conn.info.server_version >= 150000:
                # A backend reports its row counts at most once a second: flush them now, or
                # the inserts could arrive after the VACUUM and count as not vacuumed yet.
                conn.execute("SELECT pg_stat_force_next_flush()")
                conn.execute("SELECT 1")
            vacuum_analyze(conn, schema)
        counts = counts_by_status(conn, schema)
    return {
        "history": history,
        "backlog": backlog,
        "backlog_kind": backlog_kind if backlog else None,
        "table_before": counts,
    }
