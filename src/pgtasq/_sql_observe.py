"""What `pgtasq.metrics`' database collector and `pgtasq health` ask."""

from __future__ import annotations

from pgtasq._sql_common import SchemaStatements, statement
from pgtasq.tables import ALEMBIC_VERSION_TABLE


class ObserveStatements(SchemaStatements):
    """The statements of `pgtasq.metrics`' database collector and of `pgtasq health`.

    Each reaches only the rows it reports on through an index, never the history of finished
    tasks: pending rows through ``tasks_claim_idx``, running ones through ``tasks_lease_idx``.
    """

    @statement
    def metrics_queue_tasks(self) -> str:
        """Per queue: ready and scheduled pending tasks and the age of the oldest ready
        one (one pass over tasks_claim_idx, which holds the pending rows only), and the
        running tasks (from tasks_lease_idx, the running rows only). Finished tasks are
        not counted here: that would read the whole history; queue_daily_stats has their
        totals."""
        s = self.schema
        return f"""
SELECT queue, 'pending' AS state,
    count(*) FILTER (WHERE run_at <= now()) AS ready,
    count(*) FILTER (WHERE run_at > now()) AS scheduled,
    coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())), 0)::float8
        AS oldest_ready_age
FROM {s}.tasks WHERE status = 'pending' GROUP BY queue
UNION ALL
SELECT queue, 'running', count(*), 0, 0::float8
FROM {s}.tasks WHERE status = 'running' AND locked_until IS NOT NULL GROUP BY queue
"""

    @statement
    def metrics_queues(self) -> str:
        """Every queue named in the queues table (paused or not) with its processed
        totals from the daily counters (one row per queue and day: small)."""
        s = self.schema
        return f"""
WITH totals AS (
    SELECT queue AS name, sum(completed)::bigint AS completed, sum(failed)::bigint AS failed,
        sum(retried)::bigint AS retried
    FROM {s}.queue_daily_stats GROUP BY queue
),
names AS (SELECT name FROM totals UNION SELECT name FROM {s}.queues)
SELECT n.name, coalesce(q.paused, false) AS paused, coalesce(t.completed, 0) AS completed,
    coalesce(t.failed, 0) AS failed, coalesce(t.retried, 0) AS retried
FROM names n LEFT JOIN {s}.queues q ON q.name = n.name LEFT JOIN totals t ON t.name = n.name
"""

    @statement
    def metrics_workers(self) -> str:
        """Registered workers: how many heartbeat within %(alive)s seconds, and the age
        of the freshest heartbeat (NULL: none registered)."""
        s = self.schema
        return f"""
SELECT count(*) AS registered,
    count(*) FILTER (WHERE heartbeat_at > now() - make_interval(secs => CAST(%(alive)s AS float8)))
        AS alive,
    sum(concurrency) FILTER (
        WHERE heartbeat_at > now() - make_interval(secs => CAST(%(alive)s AS float8)))
        AS concurrency,
    extract(epoch FROM now() - max(heartbeat_at))::float8 AS heartbeat_age
FROM {s}.workers
"""

    @statement
    def metrics_schedules(self) -> str:
        s = self.schema
        return f"""
SELECT id, extract(epoch FROM last_run_at)::float8 AS last_run,
    extract(epoch FROM next_run_at)::float8 AS next_run
FROM {s}.schedules ORDER BY id
"""

    @statement
    def schema_version(self) -> str:
        s = self.schema
        return f"SELECT version_num FROM {s}.{ALEMBIC_VERSION_TABLE}"

    @statement
    def worker_heartbeat_age(self) -> str:
        s = self.schema
        return (
            f"SELECT extract(epoch FROM now() - max(heartbeat_at))::float8 AS age FROM {s}.workers"
        )

    @statement
    def queue_oldest_ready_age(self) -> str:
        """The oldest ready task of one queue: its pending rows through
        tasks_claim_idx."""
        s = self.schema
        return f"""
SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8 AS age, count(*) AS ready
FROM {s}.tasks
WHERE status = 'pending' AND queue = CAST(%(queue)s AS text) AND run_at <= now()
"""
