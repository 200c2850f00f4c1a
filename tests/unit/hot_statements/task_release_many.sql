
WITH mine AS MATERIALIZED (SELECT m.*, CAST(%(worker)s AS text) AS worker, CAST('running' AS pgtasq.task_status) AS running FROM unnest(CAST(%(id)s AS bigint[]), CAST(%(claimed_at)s AS timestamptz[])) AS m(id, claimed_at)),
released AS (
    UPDATE pgtasq.tasks t
    SET status = 'pending', attempts = greatest(t.attempts - 1, 0),
        locked_by = NULL, locked_until = NULL,
        updated_at = now()  -- run_at and priority kept: the task keeps its place in line
    FROM mine m
    WHERE t.id = m.id AND t.status = m.running AND t.locked_by = m.worker AND t.attempted_at = m.claimed_at
    RETURNING t.id, t.queue
),
woken AS (SELECT pg_notify('pgtasq_w_pgtasq', json_build_object('queues', CASE WHEN octet_length(CAST(json_agg(DISTINCT queue) AS text)) <= 1500 THEN json_agg(DISTINCT queue) ELSE '"*"'::json END, 'count', count(*), 'ids', to_json((array_agg(id ORDER BY id))[1:300]))::text) FROM released HAVING count(*) > 0)
SELECT id FROM released LEFT JOIN woken ON true WHERE (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
