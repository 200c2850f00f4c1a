
WITH expired AS (
    SELECT id AS expired_id FROM pgtasq.tasks
    WHERE status = 'running' AND locked_until < now()
    ORDER BY locked_until
    LIMIT CAST(%(limit)s AS int)
    FOR UPDATE SKIP LOCKED
),
done AS (
UPDATE pgtasq.tasks t
SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed'
                  ELSE 'pending' END::pgtasq.task_status,
    errors = (
        SELECT CASE WHEN m < 20 THEN a ELSE
            jsonb_build_array(a -> 0, CASE WHEN jsonb_typeof(c) = 'object' THEN c || d
                                      ELSE jsonb_build_object('entry', c) || d END)
            || jsonb_path_query_array(a, '$[$from to last]',
                                      jsonb_build_object('from', m - 17))
        END || jsonb_build_array(jsonb_build_object('attempt', t.attempts, 'at', now(), 'error', 'LeaseExpired', 'message', 'lease expired: worker ' || coalesce(t.locked_by, '?') || ' stopped heartbeating'))
        FROM (SELECT a, m, a -> (m - 18) AS c, jsonb_build_object('dropped_before',
                CASE WHEN jsonb_typeof(a -> 1 -> 'dropped_before') = 'number' THEN (a -> 1 -> 'dropped_before')::numeric ELSE 0 END
                + (m - 19)) AS d
              FROM (SELECT a, jsonb_array_length(a) AS m
                    FROM (SELECT CASE WHEN jsonb_typeof(t.errors) = 'array' THEN t.errors
                                 ELSE jsonb_build_array(t.errors) END AS a) arrayed) counted
        ) trimmed
    ),
    finalized_at = CASE WHEN t.attempts >= t.max_attempts THEN now() END,
    -- run_at and priority kept: the task keeps its place in line, ahead of later arrivals
    locked_by = NULL, locked_until = NULL, updated_at = now()
WHERE t.id = ANY(ARRAY(SELECT expired_id FROM expired))  -- by primary key, as in task_claim
RETURNING t.id, t.queue, t.status::text AS status, true AS counted
),
stats AS (
    INSERT INTO pgtasq.queue_daily_stats AS d (queue, day, completed, failed, retried)
    SELECT queue, (now() AT TIME ZONE 'UTC')::date,
           count(*) FILTER (WHERE status = 'completed'),
           count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status = 'pending' AND counted)
    FROM done GROUP BY queue ORDER BY queue
    ON CONFLICT (queue, day) DO UPDATE
    SET completed = d.completed + excluded.completed, failed = d.failed + excluded.failed,
        retried = d.retried + excluded.retried
)
SELECT id, status FROM done WHERE true AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
