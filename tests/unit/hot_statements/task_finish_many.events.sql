
WITH m AS MATERIALIZED (
    SELECT m.*, CAST(%(worker)s AS text) AS worker, CAST('running' AS pgtasq.task_status) AS running FROM unnest(
        CAST(%(id)s AS bigint[]), CAST(%(claimed_at)s AS timestamptz[]),
        CAST(%(status)s AS text[]), CAST(%(delay)s AS float8[]), CAST(%(refund)s AS int[]),
        CAST(%(error)s AS text[]), CAST(%(result)s AS text[])
    ) AS m(id, claimed_at, status, delay, refund, error, result)
),
done AS (
UPDATE pgtasq.tasks t
SET status = m.status::pgtasq.task_status,
    run_at = CASE WHEN m.status = 'pending'
                  THEN now() + make_interval(secs => least(greatest(m.delay, 0), 3155760000.0)) ELSE t.run_at END,
    attempts = greatest(t.attempts - m.refund, 0),  -- total on any stored count
    errors = CASE WHEN m.error IS NULL THEN t.errors
                  ELSE (
        SELECT CASE WHEN m < 20 THEN a ELSE
            jsonb_build_array(a -> 0, CASE WHEN jsonb_typeof(c) = 'object' THEN c || d
                                      ELSE jsonb_build_object('entry', c) || d END)
            || jsonb_path_query_array(a, '$[$from to last]',
                                      jsonb_build_object('from', m - 17))
        END || jsonb_build_array(jsonb_set(m.error::jsonb, '{at}', to_jsonb(now())))
        FROM (SELECT a, m, a -> (m - 18) AS c, jsonb_build_object('dropped_before',
                CASE WHEN jsonb_typeof(a -> 1 -> 'dropped_before') = 'number' THEN (a -> 1 -> 'dropped_before')::numeric ELSE 0 END
                + (m - 19)) AS d
              FROM (SELECT a, jsonb_array_length(a) AS m
                    FROM (SELECT CASE WHEN jsonb_typeof(t.errors) = 'array' THEN t.errors
                                 ELSE jsonb_build_array(t.errors) END AS a) arrayed) counted
        ) trimmed
    ) END,
    result = CASE WHEN m.result IS NULL THEN t.result ELSE m.result::jsonb END,
    locked_by = NULL, locked_until = NULL,
    finalized_at = CASE WHEN m.status = 'pending' THEN NULL ELSE now() END,
    updated_at = now()
FROM m
WHERE t.id = m.id AND t.status = m.running AND t.locked_by = m.worker AND t.attempted_at = m.claimed_at
RETURNING t.id, t.queue, m.status, m.error IS NOT NULL AS counted
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
),
events AS (
    SELECT pg_notify('pgtasq_e_pgtasq', json_build_object(
        'event', kind, 'count', count(*),
        'ids', (array_agg(id ORDER BY id))[1:300])::text)
    FROM (SELECT CASE status WHEN 'pending' THEN 'retried' ELSE status END AS kind, id FROM done) e GROUP BY kind
)
SELECT id, queue, status FROM done WHERE (SELECT count(*) FROM events) >= 0 AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
