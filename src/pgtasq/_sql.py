"""Every SQL statement pgtasq runs, named entity-first, in one place.

Statements are written once with psycopg's named placeholders (``%(name)s``); the same
text serves SQLAlchemy (``:name``) through `Statement.sqlalchemy`. Every placeholder carries
an explicit ``CAST``, so psycopg, psycopg2 and asyncpg all bind the same types. The schema
name is validated to a plain identifier (`tables.check_schema_name`) before it is placed in
the text; nothing else a user passes is ever part of the SQL text.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from typing import TYPE_CHECKING, Any

from pgtasq._limits import DURATION_MAX_SECONDS, TIMESTAMP_MAX, TIMESTAMP_MIN
from pgtasq.filters import COUNT_EXACT_MAX
from pgtasq.tables import ALEMBIC_VERSION_TABLE, TASKS_ID_SEQUENCE, check_schema_name

if TYPE_CHECKING:
    from sqlalchemy import TextClause

    from pgtasq.filters import TaskFilter

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")

# A row of the tasks table as TaskInfo.from_row reads it. jsonb and the enum travel as text,
# so every driver returns the same Python types.
TASK_COLUMNS = """id, queue, type, payload::text AS payload, priority, status::text AS status,
    run_at, attempts, max_attempts, timeout, deadline, idempotency_key,
    errors::text AS errors, result::text AS result, locked_by, locked_until,
    created_at, updated_at, attempted_at, finalized_at, retention"""

# The row as `list_tasks(full=False)` reads it: the same columns, but of the payload and the
# result only their first PREVIEW_CHARS + 1 characters of JSON text (the one past says
# that there is more), and of the errors only the latest, without its traceback. A listing
# then costs what it shows, whatever the tasks carry.
PREVIEW_CHARS = 200


def _preview_columns() -> str:
    columns = TASK_COLUMNS
    for full, light in (
        ("payload::text AS payload", f"left(payload::text, {PREVIEW_CHARS + 1}) AS payload"),
        ("result::text AS result", f"left(result::text, {PREVIEW_CHARS + 1}) AS result"),
        (
            "errors::text AS errors",
            "CASE WHEN errors = '[]' THEN '[]' "
            "ELSE jsonb_build_array((errors -> -1) - 'traceback')::text END AS errors",
        ),
    ):
        if full not in columns:  # TASK_COLUMNS changed: say so at import, not in a listing
            raise AssertionError(f"TASK_COLUMNS has no {full!r}")
        columns = columns.replace(full, light)
    return columns


TASK_COLUMNS_PREVIEW = _preview_columns()

# The columns of one enqueue, in the order of the unnest() in task_insert.
INSERT_ARRAYS = (
    ("queue", "text"),
    ("type", "text"),
    ("payload", "text"),
    ("priority", "smallint"),
    ("run_at", "timestamptz"),
    ("delay", "float8"),
    ("max_attempts", "int"),
    ("timeout", "float8"),
    ("deadline", "timestamptz"),
    ("idempotency_key", "text"),
    ("retention", "float8"),
)

# The columns `task_insert_copy` always sends, and those it sends only when a task of the
# batch sets them (a column left out costs the server nothing: its default is now() or NULL).
COPY_COLUMNS = ("id", "queue", "type", "payload", "priority", "max_attempts")
COPY_COLUMNS_OPTIONAL = ("run_at", "timeout", "deadline", "retention")

# Durations added to now() (a lease, a retry's backoff) are clamped to this in the statement
# itself: whatever a handler, a setting or a stored row says, the sum stays a timestamp that
# PostgreSQL and Python can hold (make_interval() and timestamp arithmetic raise on overflow).
SECONDS_MAX = DURATION_MAX_SECONDS  # 100 years: the longest duration pgtasq accepts anywhere
# Retentions beyond this keep a task "forever": the cleaner's cut-off now() - retention must
# stay a valid timestamp, however large a stored retention is.
RETENTION_CUTOFF_MAX = "interval '1000 years'"
# The `errors` history a task keeps: the first attempt's entry and the latest ERRORS_KEPT - 1.
# When entries were dropped, the second entry carries "dropped_before": how many.
ERRORS_KEPT = 20


def _seconds(value: str, cap: float = SECONDS_MAX) -> str:
    """``make_interval`` of ``value`` seconds (float8), clamped to 0..cap (NaN: cap)."""
    return f"make_interval(secs => least(greatest({value}, 0), {cap!r}))"


def _errors_append(entry: str) -> str:
    """``t.errors`` with ``entry`` (a jsonb object) appended, bounded to `ERRORS_KEPT`
    entries: the first one, then the latest, the first of which says how many were dropped
    before it (``dropped_before``, counted across every trim). Trimmed before appending, so
    a history at jsonb's size limit still takes the entry. Total on whatever a row holds:
    a non-array ``errors`` becomes the first entry of an array, a non-object one is wrapped.
    """
    k = ERRORS_KEPT
    before = "a -> 1 -> 'dropped_before'"
    return f"""(
        SELECT CASE WHEN m < {k} THEN a ELSE
            jsonb_build_array(a -> 0, CASE WHEN jsonb_typeof(c) = 'object' THEN c || d
                                      ELSE jsonb_build_object('entry', c) || d END)
            || jsonb_path_query_array(a, '$[$from to last]',
                                      jsonb_build_object('from', m - {k - 3}))
        END || jsonb_build_array({entry})
        FROM (SELECT a, m, a -> (m - {k - 2}) AS c, jsonb_build_object('dropped_before',
                CASE WHEN jsonb_typeof({before}) = 'number' THEN ({before})::numeric ELSE 0 END
                + (m - {k - 1})) AS d
              FROM (SELECT a, jsonb_array_length(a) AS m
                    FROM (SELECT CASE WHEN jsonb_typeof(t.errors) = 'array' THEN t.errors
                                 ELSE jsonb_build_array(t.errors) END AS a) arrayed) counted
        ) trimmed
    )"""


# What a worker reads of a task's own limits is clamped to what Python can load: a deadline of
# 'infinity' or after year 9999, an interval past timedelta's range (or PostgreSQL 17's
# infinite ones, which psycopg reads as 0) would fail the claim after it took the rows.
_DEADLINE_MAX = f"timestamptz '{TIMESTAMP_MAX.isoformat()}'"
_DEADLINE_MIN = f"timestamptz '{TIMESTAMP_MIN.isoformat()}'"
_INTERVAL_MAX = "interval '1000 years'"


def _loadable(columns: str) -> str:
    """``columns`` (`TASK_COLUMNS` with the ``t.`` prefix) with the task's deadline, timeout
    and retention clamped (NULL stays NULL)."""
    clamps = {
        "t.deadline": f"CASE WHEN t.deadline > {_DEADLINE_MAX} THEN {_DEADLINE_MAX} "
        f"WHEN t.deadline < {_DEADLINE_MIN} THEN {_DEADLINE_MIN} ELSE t.deadline END",
        "t.timeout": f"CASE WHEN t.timeout > {_INTERVAL_MAX} THEN {_INTERVAL_MAX} "
        "ELSE t.timeout END",
        "t.retention": f"CASE WHEN t.retention > {_INTERVAL_MAX} THEN {_INTERVAL_MAX} "
        "ELSE t.retention END",
    }
    names = [c.strip() for c in columns.split(",")]
    assert set(clamps) <= set(names), "TASK_COLUMNS changed: update _loadable"
    return ", ".join(f"{clamps[c]} AS {c[2:]}" if c in clamps else c for c in names)


# At most this many ids per event notification (NOTIFY payloads are limited to 8000 bytes);
# "count" always says how many tasks the event covers.
EVENT_IDS_MAX = 300
# A wake-up's queue list longer than this says "*" (any queue) instead: with EVENT_IDS_MAX
# ids of up to 20 characters the payload stays under NOTIFY's 8000 bytes.
NOTIFY_QUEUES_MAX = 1500
# The idempotency keys of scheduler ticks start with this (see `scheduler.entry_key_prefix`).
SCHEDULE_KEY_PREFIX = "pgtasq:schedule:"


def _wake(channel: str, queues: str, count: str, ids: str) -> str:
    """The wake-up NOTIFY, which is also the ``enqueued`` event: a JSON object with the queues
    (a JSON array, or "*" when it would be too long), how many tasks and their first ids.
    ``queues`` and ``ids`` are json expressions, ``count`` an integer one. Each statement's
    payload names its own ids, so PostgreSQL never folds two statements' wake-ups into one
    (it drops identical notifications of one transaction) and the counts add up."""
    return (
        f"pg_notify('{channel}', json_build_object("
        f"'queues', CASE WHEN octet_length(CAST({queues} AS text)) <= {NOTIFY_QUEUES_MAX} "
        f"""THEN {queues} ELSE '"*"'::json END, 'count', {count}, 'ids', {ids})::text)"""
    )


_FIRST_IDS = f"to_json((array_agg(id ORDER BY id))[1:{EVENT_IDS_MAX}])"


def _wake_rows(channel: str, source: str) -> str:
    """The wake-up for the rows (id, queue) of ``source``: one per statement, none for no rows."""
    return (
        f"SELECT {_wake(channel, 'json_agg(DISTINCT queue)', 'count(*)', _FIRST_IDS)} "
        f"FROM {source} HAVING count(*) > 0"
    )


# The arbiter of ON CONFLICT: the partial unique index on idempotency_key. Naming its
# predicate is what lets PostgreSQL pick a partial index.
_ON_KEY_CONFLICT = "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"


def _insert_one(s: str, channel: str, *, keyed: bool) -> str:
    """`task_insert_one` (with the key and ON CONFLICT) or `task_insert_one_keyless`."""
    key_column = "idempotency_key, " if keyed else ""
    key_value = "CAST(%(idempotency_key)s AS text),\n    " if keyed else ""
    return f"""
INSERT INTO {s}.tasks
    (queue, type, payload, priority, run_at, max_attempts, timeout, deadline,
     {key_column}retention)
VALUES (
    CAST(%(queue)s AS text), CAST(%(type)s AS text), CAST(%(payload)s AS jsonb),
    CAST(%(priority)s AS smallint),
    coalesce(CAST(%(run_at)s AS timestamptz),
             now() + make_interval(secs => coalesce(CAST(%(delay)s AS float8), 0))),
    CAST(%(max_attempts)s AS int), make_interval(secs => CAST(%(timeout)s AS float8)),
    CAST(%(deadline)s AS timestamptz),
    {key_value}make_interval(secs => CAST(%(retention)s AS float8)))
{_ON_KEY_CONFLICT if keyed else ""}
RETURNING id, {"idempotency_key, " if keyed else ""}run_at, created_at,
          {_wake(channel, "json_build_array(queue)", "1", "json_build_array(id)")} AS notified
"""


@dataclasses.dataclass(frozen=True)
class Statement:
    name: str
    text: str

    @functools.cached_property
    def sqlalchemy(self) -> TextClause:
        """The statement as a SQLAlchemy ``text()`` with ``:name`` placeholders."""
        from sqlalchemy import text

        return text(_PLACEHOLDER.sub(r":\1", self.text))


# The worker's own bookkeeping (claims, heartbeats, outcomes, release, rescue) does not wait
# for fsync. The setting is local to the statement's implicit transaction (the worker's
# connections are autocommit), so nothing is left on the connection (a transaction-mode
# PgBouncer would hand a session setting to other clients).
# Safe under at-least-once delivery: if PostgreSQL crashes, the last few claims or outcomes
# may be forgotten, and those tasks run again.
#
# Written into the final SELECT of each hot worker statement (claim, heartbeat, outcomes,
# release, rescue) as a qual that references no row: PostgreSQL makes it the plan's
# One-Time Filter, evaluated once whether or not the statement returns rows. So the setting
# costs no extra message or round trip (it was a second statement in a pipeline: ~5 us of
# client CPU per task in the drain), and it ends with the statement's implicit transaction.
# `task_finish_many_in_tx`, which runs in a handler's own transaction (`ctx.complete`), has
# no such qual: the user's transaction keeps the durability it asked for.
ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) = 'off'"


# A worker's check that LISTEN works on its connection: a NOTIFY from another connection
# that must come back (through PgBouncer in transaction mode it never does).
listen_probe = Statement(
    "listen_probe", "SELECT pg_notify(CAST(%(channel)s AS text), CAST(%(payload)s AS text))"
)


# The channels of a schema: one per purpose, ``pgtasq_<purpose>_<schema>``. A schema name is
# lower-case letters, digits and "_", so a name too long for PostgreSQL's 63-byte limit is
# replaced by a hash behind "#" (a character no schema name has): a hashed channel never
# equals a plain one, and the purpose letter sits at a fixed place, so no two schemas and no
# two purposes ever share a channel.
CHANNEL_PURPOSES = {"wake": "w", "events": "e"}
_CHANNEL_MAX = 63


def channel_name(purpose: str, schema: str) -> str:
    """The LISTEN/NOTIFY channel of one purpose (``wake``, ``events``) of one schema."""
    check_schema_name(schema)
    head = f"pgtasq_{CHANNEL_PURPOSES[purpose]}"
    channel = f"{head}_{schema}"
    if len(channel) > _CHANNEL_MAX:
        digest = hashlib.sha256(schema.encode()).hexdigest()
        channel = f"{head}#{digest[: _CHANNEL_MAX - len(head) - 1]}"
    return channel


def notify_channel(schema: str) -> str:
    """The channel that wakes a schema's idle workers (its payload: the queues)."""
    return channel_name("wake", schema)


def events_channel(schema: str) -> str:
    """The channel task events go out on (see `Client.events`)."""
    return channel_name("events", schema)


def _events_cte(channel: str, source: str, kind: str) -> str:
    """A CTE sending one notification per kind of event among ``source``'s rows."""
    return f"""events AS (
    SELECT pg_notify('{channel}', json_build_object(
        'event', kind, 'count', count(*),
        'ids', (array_agg(id ORDER BY id))[1:{EVENT_IDS_MAX}])::text)
    FROM (SELECT {kind} AS kind, id FROM {source}) e GROUP BY kind
)"""


# Appended to a statement's final SELECT so that its `events` CTE runs (a CTE that only
# SELECTs runs when it is referenced; this uncorrelated subquery runs once).
_EMIT = "(SELECT count(*) FROM events) >= 0"


# Bounds the statements after it in the same transaction (the worker's teardown uses it).
setting_statement_timeout_local = Statement(
    "setting_statement_timeout_local",
    "SELECT set_config('statement_timeout', %(milliseconds)s, true)",
)


@dataclasses.dataclass(frozen=True)
class Statements:
    """The statements of one schema."""

    schema: str
    channel: str
    task_insert: Statement
    task_insert_one: Statement
    task_insert_one_keyless: Statement
    task_insert_copy_ids: Statement
    task_select_by_keys: Statement
    task_select: Statement
    task_select_many: Statement
    task_count_by_status: Statement
    task_claim: Statement
    queue_ready: Statement
    task_heartbeat: Statement
    task_finish_many: Statement
    task_finish_many_in_tx: Statement
    task_release_many: Statement
    task_rescue_expired: Statement
    worker_register: Statement
    worker_unregister: Statement
    worker_delete_stale: Statement
    listen: Statement
    listen_events: Statement
    task_cancel: Statement
    task_retry: Statement
    task_delete: Statement
    queue_list: Statement
    queue_pause: Statement
    queue_history: Statement
    worker_list: Statement
    task_clean: Statement
    stats_snapshot: Statement
    schedule_upsert: Statement
    schedule_delete: Statement
    schedule_list: Statement


@functools.lru_cache(maxsize=64)
def statements(schema: str, *, worker_events: bool = False) -> Statements:
    """The statements of one schema. ``worker_events``: the worker's claim, outcome and rescue
    statements also send task events (started, completed, retried, failed); they cost a few
    percent of throughput, so workers send them only when asked (``Consumer(events=True)``)."""
    s = check_schema_name(schema)
    channel = notify_channel(schema)
    events = events_channel(schema)

    def worker_event_cte(source: str, kind: str) -> str:
        return ",\n" + _events_cte(events, source, kind) if worker_events else ""

    emit = _EMIT if worker_events else "true"
    # Per-queue daily counters (UTC days) from the rows of a `done` CTE (queue, status,
    # counted). Rows are locked in queue order, so two workers' statements never deadlock.
    daily_stats = f"""stats AS (
    INSERT INTO {s}.queue_daily_stats AS d (queue, day, completed, failed, retried)
    SELECT queue, (now() AT TIME ZONE 'UTC')::date,
           count(*) FILTER (WHERE status = 'completed'),
           count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status = 'pending' AND counted)
    FROM done GROUP BY queue ORDER BY queue
    ON CONFLICT (queue, day) DO UPDATE
    SET completed = d.completed + excluded.completed, failed = d.failed + excluded.failed,
        retried = d.retried + excluded.retried
)"""
    outcome_kind = "CASE status WHEN 'pending' THEN 'retried' ELSE status END"
    arrays = ",\n        ".join(f"CAST(%({name})s AS {kind}[])" for name, kind in INSERT_ARRAYS)
    names = ", ".join(name for name, _ in INSERT_ARRAYS)

    # One statement enqueues a whole batch: the arrays become rows, rows with a taken
    # idempotency key are skipped (the caller then selects them), and one NOTIFY goes out
    # for the statement, delivered at commit.
    task_insert = Statement(
        "task_insert",
        f"""
WITH input AS (
    SELECT * FROM unnest(
        {arrays}
    ) WITH ORDINALITY AS i ({names}, ord)
),
inserted AS (
    INSERT INTO {s}.tasks
        (queue, type, payload, priority, run_at, max_attempts, timeout, deadline,
         idempotency_key, retention)
    SELECT queue, type, payload::jsonb, priority,
           coalesce(run_at, now() + make_interval(secs => coalesce(delay, 0))),
           max_attempts, make_interval(secs => timeout), deadline,
           idempotency_key, make_interval(secs => retention)
    FROM input
    ORDER BY ord
    {_ON_KEY_CONFLICT}
    RETURNING id, queue, idempotency_key, run_at, created_at
),
woken AS ({_wake_rows(channel, "inserted")})
SELECT id, idempotency_key, run_at, created_at
FROM inserted LEFT JOIN woken ON true
""",
    )
    # One task: the same columns as scalars, so the plan is a plain INSERT … VALUES (no
    # unnest, no CTE), and the NOTIFY rides on the RETURNING of the row it announces.
    task_insert_one = Statement("task_insert_one", _insert_one(s, channel, keyed=True))
    # One task without an idempotency key: no ON CONFLICT, so PostgreSQL inserts the row
    # directly instead of speculatively (no arbiter check, no extra WAL record to confirm it).
    task_insert_one_keyless = Statement(
        "task_insert_one_keyless", _insert_one(s, channel, keyed=False)
    )
    # The first half of a COPY enqueue, in the transaction of the COPY: the transaction's
    # now() (which the rows' created_at, updated_at and default run_at will equal), one id per
    # row in order, and the NOTIFY for the rows to come, delivered at commit. The ids are
    # usually consecutive; then only the first is sent back (parsing 1000 ids costs the
    # client more than drawing them costs the server), else all of them.
    copy_wake = _wake(
        channel,
        "to_json(CAST(%(queues)s AS text[]))",
        "cardinality(ids)",
        f"to_json(ids[1:{EVENT_IDS_MAX}])",
    )
    task_insert_copy_ids = Statement(
        "task_insert_copy_ids",
        f"""
WITH drawn AS (
    SELECT ARRAY(SELECT nextval('{s}.{TASKS_ID_SEQUENCE}')
                 FROM generate_series(1, CAST(%(count)s AS int))) AS ids
)
SELECT now() AS now, ids[1] AS first_id,
       CASE WHEN ids[cardinality(ids)] - ids[1] + 1 = cardinality(ids) THEN NULL
            ELSE ids END AS ids,
       {copy_wake} AS notified
FROM drawn
""",
    )
    task_select_by_keys = Statement(
        "task_select_by_keys",
        f"SELECT {TASK_COLUMNS} FROM {s}.tasks "
        "WHERE idempotency_key = ANY(CAST(%(keys)s AS text[]))",
    )
    task_select = Statement(
        "task_select",
        f"SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE id = CAST(%(id)s AS bigint)",
    )
    task_select_many = Statement(
        "task_select_many",
        f"SELECT {TASK_COLUMNS} FROM {s}.tasks "
        "WHERE id = ANY(CAST(%(ids)s AS bigint[])) ORDER BY id",
    )
    task_count_by_status = Statement(
        "task_count_by_status",
        f"SELECT status::text AS status, count(*) AS count FROM {s}.tasks "
        "GROUP BY status ORDER BY status",
    )
    claimed = ", ".join("t." + c.strip() for c in TASK_COLUMNS.replace("\n", " ").split(","))
    claimed_loadable = _loadable(claimed)
    # The fence every worker write carries: still running, still ours, same claim.
    #
    # Plans that cannot go bad (docs/architecture.md): the tasks a worker holds are reached
    # by primary key only, one probe per element of its array, whatever the statistics say.
    # So every condition of the fence compares the row with a column of the array's
    # MATERIALIZED CTE (`m.running`, `m.worker`, `m.claimed_at`), never with a constant:
    # a condition on the tasks table alone (`t.status = 'running'`, `t.locked_by = $1`)
    # would be estimated from statistics that say nothing runs, and the planner would then
    # start from the tasks table (tasks_lease_idx, or a sequential scan "for one row") and
    # rescan the array for every row: O(running x batch), or O(table + batch^2), seconds per
    # statement. With every condition a join condition, the tasks table has no cheap access
    # of its own, and the only plan that is not a scan of the whole table is one primary-key
    # probe per element. tests/integration/test_plans.py holds every worker statement to it,
    # under generic and custom plans.
    fence = "t.status = m.running AND t.locked_by = m.worker AND t.attempted_at = m.claimed_at"
    # The array's own columns, then the fence's.
    fenced = f"CAST(%(worker)s AS text) AS worker, CAST('running' AS {s}.task_status) AS running"
    mine = (
        f"SELECT m.*, {fenced} FROM unnest(CAST(%(id)s AS bigint[]), "
        "CAST(%(claimed_at)s AS timestamptz[])) AS m(id, claimed_at)"
    )
    # Claim up to `limit` ready rows of one queue, in claim order, skipping rows other
    # workers hold. Walks tasks_claim_idx; a paused queue yields nothing.
    task_claim = Statement(
        "task_claim",
        f"""
WITH ready AS (
    SELECT id AS ready_id FROM {s}.tasks
    WHERE status = 'pending' AND queue = CAST(%(queue)s AS text) AND run_at <= now()
      AND type = ANY(CAST(%(types)s AS text[]))
      AND NOT EXISTS (SELECT FROM {s}.queues q WHERE q.name = CAST(%(queue)s AS text) AND q.paused)
    ORDER BY priority DESC, run_at, id
    LIMIT CAST(%(limit)s AS int)
    FOR UPDATE SKIP LOCKED
),
claimed AS (
UPDATE {s}.tasks t
SET status = 'running', attempted_at = now(), updated_at = now(),
    attempts = least(t.attempts, 2147483646) + 1,  -- an int: total on any stored count
    locked_by = %(worker)s, locked_until = now() + {_seconds("CAST(%(lease)s AS float8)")}
-- by primary key, from the array of what `ready` locked: a join to `ready` would be planned
-- from LIMIT's row estimate, which a generic plan guesses from the statistics
WHERE t.id = ANY(ARRAY(SELECT ready_id FROM ready))
RETURNING {claimed_loadable}
){worker_event_cte("claimed", "'started'")}
SELECT * FROM claimed WHERE {emit} AND {ASYNC_COMMIT}
""",
    )
    # Which of a worker's queues have a task it can run now (and are not paused): one
    # statement instead of one claim per queue, so that an idle worker on many queues polls
    # cheaply. One probe per queue through tasks_claim_idx (LATERAL with LIMIT: never a
    # join over every pending row), each stopping at the first ready row, as the claim does.
    queue_ready = Statement(
        "queue_ready",
        f"""
SELECT q.name FROM unnest(CAST(%(queues)s AS text[])) AS q(name)
CROSS JOIN LATERAL (
    SELECT 1 FROM {s}.tasks t
    WHERE t.status = 'pending' AND t.queue = q.name AND t.run_at <= now()
      AND t.type = ANY(CAST(%(types)s AS text[]))
    -- the claim's order, which only tasks_claim_idx gives without a sort: without it, a
    -- LIMIT 1 may be planned as a sequential scan "that stops at the first match", which
    -- on an empty queue reads the whole table
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT 1
) ready
WHERE NOT EXISTS (SELECT FROM {s}.queues p WHERE p.name = q.name AND p.paused)
""",
    )
    # Once a tick: extend the leases that are due (a third of the lease used), refresh the
    # worker row (re-created if it was cleaned away), and return the ids this worker no
    # longer owns (cancelled, rescued, deleted).
    task_heartbeat = Statement(
        "task_heartbeat",
        f"""
WITH mine AS MATERIALIZED (
    SELECT *, now() + {_seconds("CAST(%(lease)s AS float8) / 3 * 2")} AS due_before
    FROM ({mine}) m
),
due AS (
    -- SKIP LOCKED: a row a handler's own transaction holds (ctx.complete, not yet committed)
    -- must not stall the heartbeat of every other task; it is extended on a later tick.
    SELECT t.id FROM mine m JOIN {s}.tasks t ON t.id = m.id
    WHERE {fence} AND t.locked_until < m.due_before
    FOR UPDATE OF t SKIP LOCKED
),
extended AS (
    UPDATE {s}.tasks t SET locked_until = now() + {_seconds("CAST(%(lease)s AS float8)")}
    FROM due WHERE t.id = due.id
),
alive AS (
    INSERT INTO {s}.workers (id, host, pid, queues, concurrency, metadata)
    VALUES (%(worker)s, %(host)s, %(pid)s, CAST(%(queues)s AS jsonb), %(concurrency)s,
            CAST(%(metadata)s AS jsonb))
    ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
)
-- Not ours in the statement's snapshot. (A row `due` extends passed the fence in that
-- same snapshot first, so it is never reported.)
SELECT m.id FROM mine m
WHERE NOT EXISTS (SELECT FROM {s}.tasks t WHERE t.id = m.id AND {fence}) AND {ASYNC_COMMIT}
""",
    )
    finish_errors = _errors_append("jsonb_set(m.error::jsonb, '{at}', to_jsonb(now()))")
    rescue_errors = _errors_append(
        "jsonb_build_object('attempt', t.attempts, 'at', now(), 'error', 'LeaseExpired', "
        "'message', 'lease expired: worker ' || coalesce(t.locked_by, '?') "
        "|| ' stopped heartbeating')"
    )
    # Record many outcomes in one statement. status: completed | failed | pending (retry).
    # refund 1 gives the attempt back (RetryIn, errors that are not failures).
    finish_many = f"""
WITH m AS MATERIALIZED (
    SELECT m.*, {fenced} FROM unnest(
        CAST(%(id)s AS bigint[]), CAST(%(claimed_at)s AS timestamptz[]),
        CAST(%(status)s AS text[]), CAST(%(delay)s AS float8[]), CAST(%(refund)s AS int[]),
        CAST(%(error)s AS text[]), CAST(%(result)s AS text[])
    ) AS m(id, claimed_at, status, delay, refund, error, result)
),
done AS (
UPDATE {s}.tasks t
SET status = m.status::{s}.task_status,
    run_at = CASE WHEN m.status = 'pending'
                  THEN now() + {_seconds("m.delay")} ELSE t.run_at END,
    attempts = greatest(t.attempts - m.refund, 0),  -- total on any stored count
    errors = CASE WHEN m.error IS NULL THEN t.errors
                  ELSE {finish_errors} END,
    result = CASE WHEN m.result IS NULL THEN t.result ELSE m.result::jsonb END,
    locked_by = NULL, locked_until = NULL,
    finalized_at = CASE WHEN m.status = 'pending' THEN NULL ELSE now() END,
    updated_at = now()
FROM m
WHERE t.id = m.id AND {fence}
RETURNING t.id, t.queue, m.status, m.error IS NOT NULL AS counted
),
{daily_stats}{worker_event_cte("done", outcome_kind)}
SELECT id, queue, status FROM done WHERE {emit}"""
    task_finish_many = Statement("task_finish_many", f"{finish_many} AND {ASYNC_COMMIT}\n")
    # The same, in a handler's own transaction (`ctx.complete`): durable as the user asked.
    task_finish_many_in_tx = Statement("task_finish_many_in_tx", finish_many + "\n")
    # Graceful shutdown: hand unfinished tasks back, the attempt not counted, and wake others.
    # They keep their run_at and priority, so they are claimed before tasks enqueued since.
    task_release_many = Statement(
        "task_release_many",
        f"""
WITH mine AS MATERIALIZED ({mine}),
released AS (
    UPDATE {s}.tasks t
    SET status = 'pending', attempts = greatest(t.attempts - 1, 0),
        locked_by = NULL, locked_until = NULL,
        updated_at = now()  -- run_at and priority kept: the task keeps its place in line
    FROM mine m
    WHERE t.id = m.id AND {fence}
    RETURNING t.id, t.queue
),
woken AS ({_wake_rows(channel, "released")})
SELECT id FROM released LEFT JOIN woken ON true WHERE {ASYNC_COMMIT}
""",
    )
    # Leases that ran out (the worker died or lost the database): back to pending, or to
    # failed when no attempt is left. SKIP LOCKED: rescuers never wait on one another.
    task_rescue_expired = Statement(
        "task_rescue_expired",
        f"""
WITH expired AS (
    SELECT id AS expired_id FROM {s}.tasks
    WHERE status = 'running' AND locked_until < now()
    ORDER BY locked_until
    LIMIT CAST(%(limit)s AS int)
    FOR UPDATE SKIP LOCKED
),
done AS (
UPDATE {s}.tasks t
SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed'
                  ELSE 'pending' END::{s}.task_status,
    errors = {rescue_errors},
    finalized_at = CASE WHEN t.attempts >= t.max_attempts THEN now() END,
    -- run_at and priority kept: the task keeps its place in line, ahead of later arrivals
    locked_by = NULL, locked_until = NULL, updated_at = now()
WHERE t.id = ANY(ARRAY(SELECT expired_id FROM expired))  -- by primary key, as in task_claim
RETURNING t.id, t.queue, t.status::text AS status, true AS counted
),
{daily_stats}{worker_event_cte("done", outcome_kind)}
SELECT id, status FROM done WHERE {emit} AND {ASYNC_COMMIT}
""",
    )
    worker_register = Statement(
        "worker_register",
        f"""
INSERT INTO {s}.workers (id, host, pid, queues, concurrency, metadata)
VALUES (%(worker)s, %(host)s, %(pid)s, CAST(%(queues)s AS jsonb), %(concurrency)s,
        CAST(%(metadata)s AS jsonb))
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
""",
    )
    worker_unregister = Statement(
        "worker_unregister", f"DELETE FROM {s}.workers WHERE id = %(worker)s"
    )
    worker_delete_stale = Statement(
        "worker_delete_stale",
        f"DELETE FROM {s}.workers WHERE heartbeat_at < "
        f"now() - {_seconds('CAST(%(older_than)s AS float8)')} RETURNING id",
    )
    listen = Statement("listen", f'LISTEN "{channel}"')

    # -- the Client: one conditional statement per change. `target` locks the row and
    # reads it (as its latest committed version, once the lock is ours); the change happens
    # only from the states it may leave. The statement returns the state the row was in
    # (`before`) and the row as the statement left it: the changed row, or, when nothing
    # changed, the row `target` locked. So one statement decides and reports; the Client
    # never reads the row again (a second read could see a later change).
    target = (
        f"SELECT status AS before, {TASK_COLUMNS} FROM {s}.tasks "
        "WHERE id = CAST(%(id)s AS bigint) FOR UPDATE"
    )
    names = ", ".join(
        c.strip().split(" AS ")[-1].split("::")[0]
        for c in TASK_COLUMNS.replace("\n", " ").split(",")
    )
    reported = f"""SELECT target.before::text AS before, r.*
FROM target, (
    SELECT {names} FROM changed
    UNION ALL
    SELECT {names} FROM target WHERE NOT EXISTS (SELECT FROM changed)
) r"""
    task_cancel = Statement(
        "task_cancel",
        f"""
WITH target AS ({target}),
changed AS (
    UPDATE {s}.tasks t
    SET status = 'cancelled', finalized_at = now(), locked_by = NULL, locked_until = NULL,
        updated_at = now()
    FROM target
    WHERE t.id = target.id AND target.before IN ('pending', 'running', 'failed')
    RETURNING {claimed}
),
{_events_cte(events, "changed", "'cancelled'")}
{reported}
WHERE {_EMIT}
""",
    )
    task_retry = Statement(
        "task_retry",
        f"""
WITH target AS ({target}),
changed AS (
    UPDATE {s}.tasks t
    SET status = 'pending', finalized_at = NULL, run_at = now(), updated_at = now(),
        max_attempts = greatest(t.max_attempts, t.attempts + 1),
        -- already NULL for failed/cancelled rows; said again so that the CHECKs hold for
        -- the row PostgreSQL builds before it re-reads one a worker changed concurrently
        locked_by = NULL, locked_until = NULL
    FROM target
    WHERE t.id = target.id AND target.before IN ('failed', 'cancelled')
    RETURNING {claimed}
),
woken AS ({_wake_rows(channel, "changed")})
{reported}
LEFT JOIN woken ON true
""",
    )
    task_delete = Statement(
        "task_delete",
        f"""
WITH target AS ({target}),
changed AS (
    DELETE FROM {s}.tasks t USING target
    WHERE t.id = target.id AND target.before <> 'running'
    RETURNING {claimed}
),
{_events_cte(events, "changed", "'deleted'")}
{reported}
WHERE {_EMIT}
""",
    )
    queue_list = Statement(
        "queue_list",
        f"""
WITH counts AS (
    SELECT queue AS name,
        -- each pending task counted once: retry (after a failed attempt, due or not), else
        -- scheduled (run_at in the future), else pending (ready now)
        count(*) FILTER (WHERE status = 'pending' AND attempts = 0 AND run_at <= now())
            AS pending,
        count(*) FILTER (WHERE status = 'pending' AND attempts = 0 AND run_at > now())
            AS scheduled,
        count(*) FILTER (WHERE status = 'pending' AND attempts > 0) AS retry,
        count(*) FILTER (WHERE status = 'running') AS running,
        count(*) FILTER (WHERE status = 'completed') AS completed,
        count(*) FILTER (WHERE status = 'failed') AS failed,
        count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
        min(run_at) FILTER (WHERE status = 'pending' AND run_at <= now()) AS oldest_ready
    FROM {s}.tasks GROUP BY queue
),
daily AS (
    SELECT queue AS name,
        sum(completed + failed + retried)
            FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date) AS processed_today,
        sum(failed + retried)
            FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date) AS failed_today,
        sum(completed + failed + retried) AS processed_total,
        sum(failed + retried) AS failed_total
    FROM {s}.queue_daily_stats GROUP BY queue
),
names AS (
    SELECT name FROM counts UNION SELECT name FROM {s}.queues UNION SELECT name FROM daily
)
SELECT n.name, coalesce(q.paused, false) AS paused,
    coalesce(c.pending, 0) AS pending, coalesce(c.scheduled, 0) AS scheduled,
    coalesce(c.retry, 0) AS retry, coalesce(c.running, 0) AS running,
    coalesce(c.completed, 0) AS completed, coalesce(c.failed, 0) AS failed,
    coalesce(c.cancelled, 0) AS cancelled,
    coalesce(now() - c.oldest_ready, interval '0') AS latency,
    coalesce(d.processed_today, 0)::bigint AS processed_today,
    coalesce(d.failed_today, 0)::bigint AS failed_today,
    coalesce(d.processed_total, 0)::bigint AS processed_total,
    coalesce(d.failed_total, 0)::bigint AS failed_total
FROM names n
LEFT JOIN counts c ON c.name = n.name
LEFT JOIN {s}.queues q ON q.name = n.name
LEFT JOIN daily d ON d.name = n.name
ORDER BY n.name
""",
    )
    queue_pause = Statement(
        "queue_pause",
        f"""
INSERT INTO {s}.queues (name, paused, paused_at)
SELECT CAST(%(name)s AS text), CAST(%(paused)s AS boolean),
       CASE WHEN CAST(%(paused)s AS boolean) THEN now() END
WHERE CAST(%(create)s AS boolean)
   OR EXISTS (SELECT 1 FROM {s}.queues WHERE name = CAST(%(name)s AS text))
   OR EXISTS (SELECT 1 FROM {s}.tasks WHERE queue = CAST(%(name)s AS text))
ON CONFLICT (name) DO UPDATE
SET paused = excluded.paused, paused_at = excluded.paused_at, updated_at = now()
RETURNING name
""",
    )
    queue_history = Statement(
        "queue_history",
        f"""
SELECT queue, day, completed, failed, retried FROM {s}.queue_daily_stats
WHERE (CAST(%(queue)s AS text) IS NULL OR queue = CAST(%(queue)s AS text))
  AND day > (now() AT TIME ZONE 'UTC')::date - CAST(%(days)s AS int)
ORDER BY day DESC, queue
""",
    )
    worker_list = Statement(
        "worker_list",
        f"""
SELECT w.id, w.host, w.pid, w.queues::text AS queues, w.concurrency, w.started_at,
       w.heartbeat_at,
       coalesce((SELECT array_agg(t.id ORDER BY t.id) FROM {s}.tasks t
                 WHERE t.status = 'running' AND t.locked_by = w.id), '{{}}') AS running
FROM {s}.workers w ORDER BY w.host, w.pid, w.id
""",
    )
    # Finished tasks past their retention (or the default), oldest first, up to %(batch)s
    # of each kind. The advisory lock lets one cleaner at a time work; the others find
    # nothing to do. Each kind is one index range, so a round costs what it deletes, not
    # the history (docs/architecture.md, "Plans that cannot go bad"): rows without a
    # retention of their own, from tasks_finalized_idx; rows with one, from
    # tasks_retention_idx, one range per distinct retention (`kept` skips from one to the
    # next through the index). A cut-off never goes past 1000 years back, so no stored
    # retention can overflow it.
    cutoff = "now() - least({}, " + RETENTION_CUTOFF_MAX + ")"
    task_clean = Statement(
        "task_clean",
        f"""
WITH RECURSIVE lock AS (SELECT pg_try_advisory_xact_lock(hashtext('pgtasq.clean.{s}')) AS got),
kept AS (
    (SELECT retention FROM {s}.tasks
     WHERE finalized_at IS NOT NULL AND retention IS NOT NULL AND (SELECT got FROM lock)
     ORDER BY retention LIMIT 1)
    UNION ALL
    SELECT (SELECT t.retention FROM {s}.tasks t
            WHERE t.finalized_at IS NOT NULL AND t.retention > kept.retention
            ORDER BY t.retention LIMIT 1)
    FROM kept WHERE kept.retention IS NOT NULL
),
by_default AS (
    SELECT id FROM {s}.tasks
    WHERE finalized_at IS NOT NULL AND retention IS NULL
      AND finalized_at < {cutoff.format(_seconds("CAST(%(retention)s AS float8)", 3.2e10))}
      AND (SELECT got FROM lock)
    ORDER BY finalized_at
    LIMIT CAST(%(batch)s AS int)
    FOR UPDATE SKIP LOCKED
),
by_own AS (
    SELECT due.id FROM kept CROSS JOIN LATERAL (
        SELECT t.id FROM {s}.tasks t
        WHERE t.finalized_at IS NOT NULL AND t.retention = kept.retention
          AND t.finalized_at < {cutoff.format("kept.retention")}
        ORDER BY t.finalized_at
        LIMIT CAST(%(batch)s AS int)
        FOR UPDATE OF t SKIP LOCKED
    ) due
    WHERE kept.retention IS NOT NULL
    LIMIT CAST(%(batch)s AS int)
)
DELETE FROM {s}.tasks t
WHERE t.id = ANY(ARRAY(SELECT id FROM by_default UNION ALL SELECT id FROM by_own))
RETURNING t.id
""",
    )
    stats_snapshot = Statement(
        "stats_snapshot",
        f"""
SELECT
    (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {s}.{TASKS_ID_SEQUENCE})
        AS enqueued,
    (SELECT coalesce(sum(completed), 0)::bigint FROM {s}.queue_daily_stats) AS completed,
    (SELECT coalesce(sum(failed), 0)::bigint FROM {s}.queue_daily_stats) AS failed,
    (SELECT coalesce(sum(retried), 0)::bigint FROM {s}.queue_daily_stats) AS retried,
    count(*) FILTER (WHERE status = 'pending') AS pending_now,
    count(*) FILTER (WHERE status = 'running') AS running_now,
    count(*) FILTER (WHERE status = 'completed') AS completed_now,
    count(*) FILTER (WHERE status = 'failed') AS failed_now,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled_now
FROM {s}.tasks
""",
    )
    # A scheduler's entry, written with the tasks of its tick in one transaction. Racing
    # schedulers queue on the row lock; last_run_at only moves forward, and next_run_at too
    # unless the cron expression or its zone changed.
    schedule_upsert = Statement(
        "schedule_upsert",
        f"""
INSERT INTO {s}.schedules AS sc
    (id, cron, timezone, task_type, payload, options, last_run_at, next_run_at)
VALUES (CAST(%(id)s AS text), CAST(%(cron)s AS text), CAST(%(timezone)s AS text),
    CAST(%(task_type)s AS text), CAST(CAST(%(payload)s AS text) AS jsonb),
    CAST(CAST(%(options)s AS text) AS jsonb), CAST(%(last_run_at)s AS timestamptz),
    CAST(%(next_run_at)s AS timestamptz))
ON CONFLICT (id) DO UPDATE SET
    cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, task_type = EXCLUDED.task_type,
    payload = EXCLUDED.payload, options = EXCLUDED.options,
    last_run_at = greatest(sc.last_run_at, EXCLUDED.last_run_at),
    next_run_at = CASE WHEN sc.cron = EXCLUDED.cron AND sc.timezone = EXCLUDED.timezone
        THEN greatest(sc.next_run_at, EXCLUDED.next_run_at) ELSE EXCLUDED.next_run_at END,
    updated_at = now()
RETURNING id, last_run_at, next_run_at
""",
    )
    schedule_delete = Statement(
        "schedule_delete",
        f"DELETE FROM {s}.schedules WHERE id = CAST(%(id)s AS text) RETURNING id",
    )
    # Every entry, or those of %(ids)s (NULL: all).
    schedule_list = Statement(
        "schedule_list",
        f"""
SELECT id, cron, timezone, task_type, payload::text AS payload, options::text AS options,
       last_run_at, next_run_at, created_at, updated_at,
       -- the tasks this entry enqueued: their keys start with scheduler.entry_key_prefix,
       -- which names the entry exactly (length-prefixed, so `rep` never matches `rep:eu`)
       coalesce((SELECT array_agg(t.id ORDER BY t.id DESC) FROM {s}.tasks t
                 WHERE starts_with(t.idempotency_key, '{SCHEDULE_KEY_PREFIX}'
                                   || char_length(sc.id) || ':' || sc.id || ':')),
                '{{}}') AS task_ids
FROM {s}.schedules sc
WHERE CAST(%(ids)s AS text[]) IS NULL OR id = ANY(CAST(%(ids)s AS text[]))
ORDER BY id
""",
    )
    return Statements(
        schema=s,
        channel=channel,
        task_insert=task_insert,
        task_insert_one=task_insert_one,
        task_insert_one_keyless=task_insert_one_keyless,
        task_insert_copy_ids=task_insert_copy_ids,
        task_select_by_keys=task_select_by_keys,
        task_select=task_select,
        task_select_many=task_select_many,
        task_count_by_status=task_count_by_status,
        task_claim=task_claim,
        queue_ready=queue_ready,
        task_heartbeat=task_heartbeat,
        task_finish_many=task_finish_many,
        task_finish_many_in_tx=task_finish_many_in_tx,
        task_release_many=task_release_many,
        task_rescue_expired=task_rescue_expired,
        worker_register=worker_register,
        worker_unregister=worker_unregister,
        worker_delete_stale=worker_delete_stale,
        listen=listen,
        listen_events=Statement("listen_events", f'LISTEN "{events}"'),
        task_cancel=task_cancel,
        task_retry=task_retry,
        task_delete=task_delete,
        queue_list=queue_list,
        queue_pause=queue_pause,
        queue_history=queue_history,
        worker_list=worker_list,
        task_clean=task_clean,
        stats_snapshot=stats_snapshot,
        schedule_upsert=schedule_upsert,
        schedule_delete=schedule_delete,
        schedule_list=schedule_list,
    )


@functools.lru_cache(maxsize=256)
def task_insert_copy(schema: str, columns: tuple[str, ...]) -> Statement:
    """The COPY of a keyless batch into the tasks table, sending these columns (text format).

    ``columns`` is `COPY_COLUMNS` plus those of `COPY_COLUMNS_OPTIONAL` the batch uses. The
    ids come from `task_insert_copy_ids`, run in the same transaction just before.
    """
    s = check_schema_name(schema)
    allowed = COPY_COLUMNS + COPY_COLUMNS_OPTIONAL
    if columns[: len(COPY_COLUMNS)] != COPY_COLUMNS or not set(columns) <= set(allowed):
        raise ValueError(f"COPY columns must be {COPY_COLUMNS} and some of {COPY_COLUMNS_OPTIONAL}")
    return Statement("task_insert_copy", f"COPY {s}.tasks ({', '.join(columns)}) FROM STDIN")


# -- filters (the one place a TaskFilter becomes SQL; its values only ever become params) --

_ORDER_CASTS = {
    "id": "bigint",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "run_at": "timestamptz",
    "priority": "smallint",
    "attempts": "int",
}
_BULK_FROM_STATES = {
    "cancel": "status IN ('pending', 'running', 'failed')",
    "retry": "status IN ('failed', 'cancelled')",
    "delete": "status <> 'running'",
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
    """One batch of a bulk cancel / retry / delete: the first %(batch)s rows past id %(after)s.

    The caller runs it with ``after`` set to the largest id of the previous batch (keyset),
    so each batch starts where the last one stopped instead of reading the rows already
    changed again; a filter by ids gets its ids in sorted slices (``ids``), one per batch.
    The change reaches its rows by primary key (``= ANY(ARRAY(…))``), never by a scan of
    the table. Returns the changed ids.
    """
    where, params = task_filter_where(schema, f)
    batch = (
        f"SELECT id AS batch_id FROM {schema}.tasks WHERE {where} AND {_BULK_FROM_STATES[action]} "
        "AND id > CAST(%(after)s AS bigint) "
        "ORDER BY id LIMIT CAST(%(batch)s AS int) FOR UPDATE SKIP LOCKED"
    )
    by_id = "t.id = ANY(ARRAY(SELECT batch_id FROM batch))"
    if action == "delete":
        change = f"DELETE FROM {schema}.tasks t WHERE {by_id} RETURNING t.id"
    elif action == "cancel":
        change = (
            f"UPDATE {schema}.tasks t SET status = 'cancelled', finalized_at = now(), "
            "locked_by = NULL, locked_until = NULL, updated_at = now() "
            f"WHERE {by_id} RETURNING t.id"
        )
    else:
        change = (
            f"UPDATE {schema}.tasks t SET status = 'pending', finalized_at = NULL, run_at = now(), "
            "updated_at = now(), max_attempts = greatest(t.max_attempts, t.attempts + 1), "
            "locked_by = NULL, locked_until = NULL "
            f"WHERE {by_id} RETURNING t.id, t.queue"
        )
    channel = notify_channel(schema)
    text = (
        f"WITH batch AS ({batch}), changed AS ({change}), "
        f"woken AS ({_wake_rows(channel, 'changed')}) "
        "SELECT changed.id FROM changed LEFT JOIN woken ON true"
        if action == "retry"
        else f"WITH batch AS ({batch}), changed AS ({change}), "
        + _events_cte(
            events_channel(schema), "changed", "'deleted'" if action == "delete" else "'cancelled'"
        )
        + f" SELECT id FROM changed WHERE {_EMIT}"
    )
    return Statement(f"task_bulk_{action}", text), params


# -- observability: what the metrics exporter and `pgtasq health` ask --------------------------


@dataclasses.dataclass(frozen=True)
class ObserveStatements:
    """The statements of `pgtasq.metrics`' database collector and of `pgtasq health`.

    Each reaches only the rows it reports on through an index, never the history of finished
    tasks: pending rows through ``tasks_claim_idx``, running ones through ``tasks_lease_idx``.
    """

    metrics_queue_tasks: Statement
    metrics_queues: Statement
    metrics_workers: Statement
    metrics_schedules: Statement
    schema_version: Statement
    worker_heartbeat_age: Statement
    queue_oldest_ready_age: Statement


@functools.lru_cache(maxsize=64)
def observe_statements(schema: str) -> ObserveStatements:
    s = check_schema_name(schema)
    # Per queue: ready and scheduled pending tasks and the age of the oldest ready one (one
    # pass over tasks_claim_idx, which holds the pending rows only), and the running tasks
    # (from tasks_lease_idx, the running rows only). Finished tasks are not counted here:
    # that would read the whole history; queue_daily_stats has their totals.
    metrics_queue_tasks = Statement(
        "metrics_queue_tasks",
        f"""
SELECT queue, 'pending' AS state,
    count(*) FILTER (WHERE run_at <= now()) AS ready,
    count(*) FILTER (WHERE run_at > now()) AS scheduled,
    coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())), 0)::float8
        AS oldest_ready_age
FROM {s}.tasks WHERE status = 'pending' GROUP BY queue
UNION ALL
SELECT queue, 'running', count(*), 0, 0::float8
FROM {s}.tasks WHERE status = 'running' AND locked_until IS NOT NULL GROUP BY queue
""",
    )
    # Every queue named in the queues table (paused or not) with its processed totals from
    # the daily counters (one row per queue and day: small).
    metrics_queues = Statement(
        "metrics_queues",
        f"""
WITH totals AS (
    SELECT queue AS name, sum(completed)::bigint AS completed, sum(failed)::bigint AS failed,
        sum(retried)::bigint AS retried
    FROM {s}.queue_daily_stats GROUP BY queue
),
names AS (SELECT name FROM totals UNION SELECT name FROM {s}.queues)
SELECT n.name, coalesce(q.paused, false) AS paused, coalesce(t.completed, 0) AS completed,
    coalesce(t.failed, 0) AS failed, coalesce(t.retried, 0) AS retried
FROM names n LEFT JOIN {s}.queues q ON q.name = n.name LEFT JOIN totals t ON t.name = n.name
""",
    )
    # Registered workers: how many heartbeat within %(alive)s seconds, and the age of the
    # freshest heartbeat (NULL: none registered).
    metrics_workers = Statement(
        "metrics_workers",
        f"""
SELECT count(*) AS registered,
    count(*) FILTER (WHERE heartbeat_at > now() - make_interval(secs => CAST(%(alive)s AS float8)))
        AS alive,
    sum(concurrency) FILTER (
        WHERE heartbeat_at > now() - make_interval(secs => CAST(%(alive)s AS float8)))
        AS concurrency,
    extract(epoch FROM now() - max(heartbeat_at))::float8 AS heartbeat_age
FROM {s}.workers
""",
    )
    metrics_schedules = Statement(
        "metrics_schedules",
        f"""
SELECT id, extract(epoch FROM last_run_at)::float8 AS last_run,
    extract(epoch FROM next_run_at)::float8 AS next_run
FROM {s}.schedules ORDER BY id
""",
    )
    schema_version = Statement(
        "schema_version", f"SELECT version_num FROM {s}.{ALEMBIC_VERSION_TABLE}"
    )
    worker_heartbeat_age = Statement(
        "worker_heartbeat_age",
        f"SELECT extract(epoch FROM now() - max(heartbeat_at))::float8 AS age FROM {s}.workers",
    )
    # The oldest ready task of one queue: its pending rows through tasks_claim_idx.
    queue_oldest_ready_age = Statement(
        "queue_oldest_ready_age",
        f"""
SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8 AS age, count(*) AS ready
FROM {s}.tasks
WHERE status = 'pending' AND queue = CAST(%(queue)s AS text) AND run_at <= now()
""",
    )
    return ObserveStatements(
        metrics_queue_tasks=metrics_queue_tasks,
        metrics_queues=metrics_queues,
        metrics_workers=metrics_workers,
        metrics_schedules=metrics_schedules,
        schema_version=schema_version,
        worker_heartbeat_age=worker_heartbeat_age,
        queue_oldest_ready_age=queue_oldest_ready_age,
    )
