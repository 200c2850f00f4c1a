"""The worker's statements: claim, heartbeat, outcomes, release, rescue, its own row."""

from __future__ import annotations

from pgtasq._columns import TASK_COLUMNS_CLAIMED
from pgtasq._sql_common import (
    ASYNC_COMMIT,
    EMIT,
    SchemaStatements,
    errors_append,
    events_cte,
    seconds,
    statement,
    wake_rows,
)

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
FENCE = "t.status = m.running AND t.locked_by = m.worker AND t.attempted_at = m.claimed_at"

# What an outcome is, as a task event (see `Client.events`).
OUTCOME_KIND = "CASE status WHEN 'pending' THEN 'retried' ELSE status END"

FINISH_ERRORS = errors_append("jsonb_set(m.error::jsonb, '{at}', to_jsonb(now()))")
RESCUE_ERRORS = errors_append(
    "jsonb_build_object('attempt', t.attempts, 'at', now(), 'error', 'LeaseExpired', "
    "'message', 'lease expired: worker ' || coalesce(t.locked_by, '?') "
    "|| ' stopped heartbeating')"
)


class WorkerStatements(SchemaStatements):
    """The worker's statements. With ``worker_events``, the claim, outcome and rescue
    statements also send task events (started, completed, retried, failed)."""

    def _worker_event_cte(self, source: str, kind: str) -> str:
        return ",\n" + events_cte(self.events, source, kind) if self.worker_events else ""

    @property
    def _emit(self) -> str:
        return EMIT if self.worker_events else "true"

    @property
    def _fenced(self) -> str:
        """The array's own columns, then the fence's."""
        return (
            "CAST(%(worker)s AS text) AS worker, "
            f"CAST('running' AS {self.schema}.task_status) AS running"
        )

    @property
    def _mine(self) -> str:
        return (
            f"SELECT m.*, {self._fenced} FROM unnest(CAST(%(id)s AS bigint[]), "
            "CAST(%(claimed_at)s AS timestamptz[])) AS m(id, claimed_at)"
        )

    @property
    def _daily_stats(self) -> str:
        """Per-queue daily counters (UTC days) from the rows of a `done` CTE (queue, status,
        counted). Rows are locked in queue order, so two workers' statements never deadlock."""
        return f"""stats AS (
    INSERT INTO {self.schema}.queue_daily_stats AS d (queue, day, completed, failed, retried)
    SELECT queue, (now() AT TIME ZONE 'UTC')::date,
           count(*) FILTER (WHERE status = 'completed'),
           count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status = 'pending' AND counted)
    FROM done GROUP BY queue ORDER BY queue
    ON CONFLICT (queue, day) DO UPDATE
    SET completed = d.completed + excluded.completed, failed = d.failed + excluded.failed,
        retried = d.retried + excluded.retried
)"""

    @statement
    def task_claim(self) -> str:
        """Claim up to `limit` ready rows of one queue, in claim order, skipping rows other
        workers hold. Walks tasks_claim_idx; a paused queue yields nothing."""
        s = self.schema
        return f"""
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
    locked_by = %(worker)s, locked_until = now() + {seconds("CAST(%(lease)s AS float8)")}
-- by primary key, from the array of what `ready` locked: a join to `ready` would be planned
-- from LIMIT's row estimate, which a generic plan guesses from the statistics
WHERE t.id = ANY(ARRAY(SELECT ready_id FROM ready))
RETURNING {TASK_COLUMNS_CLAIMED}
){self._worker_event_cte("claimed", "'started'")}
SELECT * FROM claimed WHERE {self._emit} AND {ASYNC_COMMIT}
"""

    @statement
    def queue_ready(self) -> str:
        """Which of a worker's queues have a task it can run now (and are not paused): one
        statement instead of one claim per queue, so that an idle worker on many queues
        polls cheaply. One probe per queue through tasks_claim_idx (LATERAL with LIMIT:
        never a join over every pending row), each stopping at the first ready row, as the
        claim does."""
        s = self.schema
        return f"""
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
"""

    @statement
    def task_heartbeat(self) -> str:
        """Once a tick: extend the leases that are due (a third of the lease used), refresh
        the worker row (re-created if it was cleaned away), and return the ids this worker
        no longer owns (cancelled, rescued, deleted)."""
        s = self.schema
        return f"""
WITH mine AS MATERIALIZED (
    SELECT *, now() + {seconds("CAST(%(lease)s AS float8) / 3 * 2")} AS due_before
    FROM ({self._mine}) m
),
due AS (
    -- SKIP LOCKED: a row a handler's own transaction holds (ctx.complete, not yet committed)
    -- must not stall the heartbeat of every other task; it is extended on a later tick.
    SELECT t.id FROM mine m JOIN {s}.tasks t ON t.id = m.id
    WHERE {FENCE} AND t.locked_until < m.due_before
    FOR UPDATE OF t SKIP LOCKED
),
extended AS (
    UPDATE {s}.tasks t SET locked_until = now() + {seconds("CAST(%(lease)s AS float8)")}
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
WHERE NOT EXISTS (SELECT FROM {s}.tasks t WHERE t.id = m.id AND {FENCE}) AND {ASYNC_COMMIT}
"""

    def _finish_many(self) -> str:
        """Record many outcomes in one statement. status: completed | failed | pending
        (retry). refund 1 gives the attempt back (RetryIn, errors that are not failures)."""
        s = self.schema
        return f"""
WITH m AS MATERIALIZED (
    SELECT m.*, {self._fenced} FROM unnest(
        CAST(%(id)s AS bigint[]), CAST(%(claimed_at)s AS timestamptz[]),
        CAST(%(status)s AS text[]), CAST(%(delay)s AS float8[]), CAST(%(refund)s AS int[]),
        CAST(%(error)s AS text[]), CAST(%(result)s AS text[])
    ) AS m(id, claimed_at, status, delay, refund, error, result)
),
done AS (
UPDATE {s}.tasks t
SET status = m.status::{s}.task_status,
    run_at = CASE WHEN m.status = 'pending'
                  THEN now() + {seconds("m.delay")} ELSE t.run_at END,
    attempts = greatest(t.attempts - m.refund, 0),  -- total on any stored count
    errors = CASE WHEN m.error IS NULL THEN t.errors
                  ELSE {FINISH_ERRORS} END,
    result = CASE WHEN m.result IS NULL THEN t.result ELSE m.result::jsonb END,
    locked_by = NULL, locked_until = NULL,
    finalized_at = CASE WHEN m.status = 'pending' THEN NULL ELSE now() END,
    updated_at = now()
FROM m
WHERE t.id = m.id AND {FENCE}
RETURNING t.id, t.queue, m.status, m.error IS NOT NULL AS counted
),
{self._daily_stats}{self._worker_event_cte("done", OUTCOME_KIND)}
SELECT id, queue, status FROM done WHERE {self._emit}"""

    @statement
    def task_finish_many(self) -> str:
        """The worker's outcomes (see `_finish_many`), without waiting for fsync."""
        return f"{self._finish_many()} AND {ASYNC_COMMIT}\n"

    @statement
    def task_finish_many_in_tx(self) -> str:
        """The same, in a handler's own transaction (`ctx.complete`): durable as the user
        asked."""
        return self._finish_many() + "\n"

    @statement
    def task_release_many(self) -> str:
        """Graceful shutdown: hand unfinished tasks back, the attempt not counted, and wake
        others. They keep their run_at and priority, so they are claimed before tasks
        enqueued since."""
        s = self.schema
        return f"""
WITH mine AS MATERIALIZED ({self._mine}),
released AS (
    UPDATE {s}.tasks t
    SET status = 'pending', attempts = greatest(t.attempts - 1, 0),
        locked_by = NULL, locked_until = NULL,
        updated_at = now()  -- run_at and priority kept: the task keeps its place in line
    FROM mine m
    WHERE t.id = m.id AND {FENCE}
    RETURNING t.id, t.queue
),
woken AS ({wake_rows(self.channel, "released")})
SELECT id FROM released LEFT JOIN woken ON true WHERE {ASYNC_COMMIT}
"""

    @statement
    def task_rescue_expired(self) -> str:
        """Leases that ran out (the worker died or lost the database): back to pending, or
        to failed when no attempt is left. SKIP LOCKED: rescuers never wait on one another."""
        s = self.schema
        return f"""
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
    errors = {RESCUE_ERRORS},
    finalized_at = CASE WHEN t.attempts >= t.max_attempts THEN now() END,
    -- run_at and priority kept: the task keeps its place in line, ahead of later arrivals
    locked_by = NULL, locked_until = NULL, updated_at = now()
WHERE t.id = ANY(ARRAY(SELECT expired_id FROM expired))  -- by primary key, as in task_claim
RETURNING t.id, t.queue, t.status::text AS status, true AS counted
),
{self._daily_stats}{self._worker_event_cte("done", OUTCOME_KIND)}
SELECT id, status FROM done WHERE {self._emit} AND {ASYNC_COMMIT}
"""

    @statement
    def worker_register(self) -> str:
        return f"""
INSERT INTO {self.schema}.workers (id, host, pid, queues, concurrency, metadata)
VALUES (%(worker)s, %(host)s, %(pid)s, CAST(%(queues)s AS jsonb), %(concurrency)s,
        CAST(%(metadata)s AS jsonb))
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
"""

    @statement
    def worker_unregister(self) -> str:
        return f"DELETE FROM {self.schema}.workers WHERE id = %(worker)s"

    @statement
    def worker_delete_stale(self) -> str:
        return (
            f"DELETE FROM {self.schema}.workers WHERE heartbeat_at < "
            f"now() - {seconds('CAST(%(older_than)s AS float8)')} RETURNING id"
        )

    @statement
    def listen(self) -> str:
        """The wake-ups of idle workers."""
        return f'LISTEN "{self.channel}"'

    @statement
    def listen_events(self) -> str:
        """Task events (see `Client.events`)."""
        return f'LISTEN "{self.events}"'
