"""The statements on queues, workers, schedules and the history: the Client's and the
services' (cleaner, scheduler, stats)."""

from __future__ import annotations

from pgtasq._sql_common import (
    RETENTION_CUTOFF_MAX,
    SCHEDULE_KEY_PREFIX,
    SchemaStatements,
    seconds,
    statement,
)
from pgtasq.tables import TASKS_ID_SEQUENCE


class AdminStatements(SchemaStatements):
    """Queues, workers, schedules, cleaning and totals."""

    @statement
    def queue_list(self) -> str:
        s = self.schema
        return f"""
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
"""

    @statement
    def queue_pause(self) -> str:
        s = self.schema
        return f"""
INSERT INTO {s}.queues (name, paused, paused_at)
SELECT CAST(%(name)s AS text), CAST(%(paused)s AS boolean),
       CASE WHEN CAST(%(paused)s AS boolean) THEN now() END
WHERE CAST(%(create)s AS boolean)
   OR EXISTS (SELECT 1 FROM {s}.queues WHERE name = CAST(%(name)s AS text))
   OR EXISTS (SELECT 1 FROM {s}.tasks WHERE queue = CAST(%(name)s AS text))
ON CONFLICT (name) DO UPDATE
SET paused = excluded.paused, paused_at = excluded.paused_at, updated_at = now()
RETURNING name
"""

    @statement
    def queue_history(self) -> str:
        s = self.schema
        return f"""
SELECT queue, day, completed, failed, retried FROM {s}.queue_daily_stats
WHERE (CAST(%(queue)s AS text) IS NULL OR queue = CAST(%(queue)s AS text))
  AND day > (now() AT TIME ZONE 'UTC')::date - CAST(%(days)s AS int)
ORDER BY day DESC, queue
"""

    @statement
    def worker_list(self) -> str:
        s = self.schema
        return f"""
SELECT w.id, w.host, w.pid, w.queues::text AS queues, w.concurrency, w.started_at,
       w.heartbeat_at,
       coalesce((SELECT array_agg(t.id ORDER BY t.id) FROM {s}.tasks t
                 WHERE t.status = 'running' AND t.locked_by = w.id), '{{}}') AS running
FROM {s}.workers w ORDER BY w.host, w.pid, w.id
"""

    @statement
    def task_clean(self) -> str:
        """Finished tasks past their retention (or the default), oldest first, up to
        %(batch)s of each kind. The advisory lock lets one cleaner at a time work; the
        others find nothing to do. Each kind is one index range, so a round costs what
        it deletes, not the history (docs/architecture.md, "Plans that cannot go bad"):
        rows without a retention of their own, from tasks_finalized_idx; rows with one,
        from tasks_retention_idx, one range per distinct retention (`kept` skips from
        one to the next through the index). A cut-off never goes past 1000 years back,
        so no stored retention can overflow it."""
        s = self.schema
        cutoff = "now() - least({}, " + RETENTION_CUTOFF_MAX + ")"
        return f"""
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
      AND finalized_at < {cutoff.format(seconds("CAST(%(retention)s AS float8)", 3.2e10))}
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
"""

    @statement
    def stats_snapshot(self) -> str:
        s = self.schema
        return f"""
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
"""

    @statement
    def schedule_upsert(self) -> str:
        """A scheduler's entry, written with the tasks of its tick in one transaction.
        Racing schedulers queue on the row lock; last_run_at only moves forward, and
        next_run_at too unless the cron expression or its zone changed."""
        s = self.schema
        return f"""
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
"""

    @statement
    def schedule_delete(self) -> str:
        s = self.schema
        return f"DELETE FROM {s}.schedules WHERE id = CAST(%(id)s AS text) RETURNING id"

    @statement
    def schedule_list(self) -> str:
        """Every entry, or those of %(ids)s (NULL: all)."""
        s = self.schema
        return f"""
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
"""
