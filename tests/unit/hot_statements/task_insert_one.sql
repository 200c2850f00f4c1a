
WITH released AS (
    UPDATE pgtasq.tasks SET unique_until = NULL
    WHERE unique_key = ANY(ARRAY[CAST(%(unique_key)s AS text)]) AND unique_until <= now()
      AND NOT (status IN ('pending', 'running')) AND (unique_key IS NOT NULL AND (status IN ('pending', 'running') OR unique_until IS NOT NULL))
    RETURNING 1
)
INSERT INTO pgtasq.tasks
    (queue, type, payload, priority, run_at, max_attempts, timeout, deadline,
     idempotency_key, retention, headers, unique_key, unique_until)
SELECT
    CAST(%(queue)s AS text),
    CAST(%(type)s AS text),
    CAST(%(payload)s AS jsonb),
    CAST(%(priority)s AS smallint),
    coalesce(CAST(%(run_at)s AS timestamptz),
             now() + make_interval(secs => coalesce(CAST(%(delay)s AS float8), 0))),
    CAST(%(max_attempts)s AS int),
    make_interval(secs => CAST(%(timeout)s AS float8)),
    CAST(%(deadline)s AS timestamptz),
    CAST(%(idempotency_key)s AS text),
    make_interval(secs => CAST(%(retention)s AS float8)),
    coalesce(CAST(%(headers)s AS jsonb), '{}'),
    CAST(%(unique_key)s AS text),
    now() + make_interval(secs => CAST(%(unique_for)s AS float8))
FROM (SELECT count(*) FROM released) r
ON CONFLICT DO NOTHING
RETURNING id, idempotency_key, unique_key, run_at, created_at,
          pg_notify('pgtasq_w_pgtasq', json_build_object('queues', CASE WHEN octet_length(CAST(json_build_array(queue) AS text)) <= 1500 THEN json_build_array(queue) ELSE '"*"'::json END, 'count', 1, 'ids', json_build_array(id))::text) AS notified
