
WITH ready AS (
    SELECT id AS ready_id FROM pgtasq.tasks
    WHERE status = 'pending' AND queue = CAST(%(queue)s AS text) AND run_at <= now()
      AND type = ANY(CAST(%(types)s AS text[]))
      AND NOT EXISTS (SELECT FROM pgtasq.queues q WHERE q.name = CAST(%(queue)s AS text) AND q.paused)
    ORDER BY priority DESC, run_at, id
    LIMIT CAST(%(limit)s AS int)
    FOR UPDATE SKIP LOCKED
),
claimed AS (
UPDATE pgtasq.tasks t
SET status = 'running', attempted_at = now(), updated_at = now(),
    attempts = least(t.attempts, 2147483646) + 1,  -- an int: total on any stored count
    progress = NULL,  -- a new attempt reports its own
    locked_by = %(worker)s, locked_until = now() + make_interval(secs => least(greatest(CAST(%(lease)s AS float8), 0), 3155760000.0))
-- by primary key, from the array of what `ready` locked: a join to `ready` would be planned
-- from LIMIT's row estimate, which a generic plan guesses from the statistics
WHERE t.id = ANY(ARRAY(SELECT ready_id FROM ready))
RETURNING t.id,
    t.queue,
    t.type,
    t.payload::text AS payload,
    t.priority,
    t.status::text AS status,
    t.run_at,
    t.attempts,
    t.max_attempts,
    CASE WHEN t.timeout > interval '1000 years' THEN interval '1000 years' ELSE t.timeout END AS timeout,
    CASE WHEN t.deadline > timestamptz '9999-12-30T00:00:00+00:00' THEN timestamptz '9999-12-30T00:00:00+00:00' WHEN t.deadline < timestamptz '0001-01-02T00:00:00+00:00' THEN timestamptz '0001-01-02T00:00:00+00:00' ELSE t.deadline END AS deadline,
    t.idempotency_key,
    t.errors::text AS errors,
    t.result::text AS result,
    t.locked_by,
    t.locked_until,
    t.created_at,
    t.updated_at,
    t.attempted_at,
    t.finalized_at,
    CASE WHEN t.retention > interval '1000 years' THEN interval '1000 years' ELSE t.retention END AS retention,
    t.headers::text AS headers,
    t.unique_key,
    t.unique_until
),
events AS (
    SELECT pg_notify('pgtasq_e_pgtasq', json_build_object(
        'event', kind, 'count', count(*),
        'ids', (array_agg(id ORDER BY id))[1:300])::text)
    FROM (SELECT 'started' AS kind, id FROM claimed) e GROUP BY kind
)
SELECT * FROM claimed WHERE (SELECT count(*) FROM events) >= 0 AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
