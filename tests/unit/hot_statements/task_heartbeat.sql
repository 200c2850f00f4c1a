
WITH mine AS MATERIALIZED (
    SELECT *, now() + make_interval(secs => least(greatest(CAST(%(lease)s AS float8) / 3 * 2, 0), 3155760000.0)) AS due_before
    FROM (SELECT m.*, CAST(%(worker)s AS text) AS worker, CAST('running' AS pgtasq.task_status) AS running FROM unnest(CAST(%(id)s AS bigint[]), CAST(%(claimed_at)s AS timestamptz[])) AS m(id, claimed_at)) m
),
due AS (
    -- SKIP LOCKED: a row a handler's own transaction holds (ctx.complete, not yet committed)
    -- must not stall the heartbeat of every other task; it is extended on a later tick.
    SELECT t.id FROM mine m JOIN pgtasq.tasks t ON t.id = m.id
    WHERE t.status = m.running AND t.locked_by = m.worker AND t.attempted_at = m.claimed_at AND t.locked_until < m.due_before
    FOR UPDATE OF t SKIP LOCKED
),
extended AS (
    UPDATE pgtasq.tasks t SET locked_until = now() + make_interval(secs => least(greatest(CAST(%(lease)s AS float8), 0), 3155760000.0))
    FROM due WHERE t.id = due.id
),
alive AS (
    INSERT INTO pgtasq.workers (id, host, pid, queues, concurrency, metadata)
    VALUES (%(worker)s, %(host)s, %(pid)s, CAST(%(queues)s AS jsonb), %(concurrency)s,
            CAST(%(metadata)s AS jsonb))
    ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
)
-- Not ours in the statement's snapshot. (A row `due` extends passed the fence in that
-- same snapshot first, so it is never reported.)
SELECT m.id FROM mine m
WHERE NOT EXISTS (SELECT FROM pgtasq.tasks t WHERE t.id = m.id AND t.status = m.running AND t.locked_by = m.worker AND t.attempted_at = m.claimed_at) AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
