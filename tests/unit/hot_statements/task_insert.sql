
WITH input AS (
    SELECT * FROM unnest(
        CAST(%(queue)s AS text[]),
        CAST(%(type)s AS text[]),
        CAST(%(payload)s AS text[]),
        CAST(%(priority)s AS smallint[]),
        CAST(%(run_at)s AS timestamptz[]),
        CAST(%(delay)s AS float8[]),
        CAST(%(max_attempts)s AS int[]),
        CAST(%(timeout)s AS float8[]),
        CAST(%(deadline)s AS timestamptz[]),
        CAST(%(idempotency_key)s AS text[]),
        CAST(%(retention)s AS float8[]),
        CAST(%(headers)s AS text[]),
        CAST(%(unique_key)s AS text[]),
        CAST(%(unique_for)s AS float8[])
    ) WITH ORDINALITY AS i (queue, type, payload, priority, run_at, delay, max_attempts, timeout, deadline,
        idempotency_key, retention, headers, unique_key, unique_for, ord)
),
released AS (
    UPDATE pgtasq.tasks SET unique_until = NULL
    WHERE unique_key = ANY(ARRAY(SELECT unique_key FROM input WHERE unique_key IS NOT NULL)) AND unique_until <= now()
      AND NOT (status IN ('pending', 'running')) AND (unique_key IS NOT NULL AND (status IN ('pending', 'running') OR unique_until IS NOT NULL))
    RETURNING 1
),
inserted AS (
    INSERT INTO pgtasq.tasks
        (queue, type, payload, priority, run_at, max_attempts, timeout, deadline,
         idempotency_key, retention, headers, unique_key, unique_until)
    SELECT queue, type, payload::jsonb, priority,
           coalesce(run_at, now() + make_interval(secs => coalesce(delay, 0))),
           max_attempts, make_interval(secs => timeout), deadline, idempotency_key,
           make_interval(secs => retention), coalesce(headers::jsonb, '{}'), unique_key,
           now() + make_interval(secs => unique_for)
    FROM input, (SELECT count(*) FROM released) r
    ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING id, queue, idempotency_key, unique_key, run_at, created_at
),
woken AS (SELECT pg_notify('pgtasq_w_pgtasq', json_build_object('queues', CASE WHEN octet_length(CAST(json_agg(DISTINCT queue) AS text)) <= 1500 THEN json_agg(DISTINCT queue) ELSE '"*"'::json END, 'count', count(*), 'ids', to_json((array_agg(id ORDER BY id))[1:300]))::text) FROM inserted HAVING count(*) > 0)
SELECT id, idempotency_key, unique_key, run_at, created_at
FROM inserted LEFT JOIN woken ON true
