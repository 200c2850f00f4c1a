
SELECT q.name FROM unnest(CAST(%(queues)s AS text[])) AS q(name)
CROSS JOIN LATERAL (
    SELECT 1 FROM pgtasq.tasks t
    WHERE t.status = 'pending' AND t.queue = q.name AND t.run_at <= now()
      AND t.type = ANY(CAST(%(types)s AS text[]))
    -- the claim's order, which only tasks_claim_idx gives without a sort: without it, a
    -- LIMIT 1 may be planned as a sequential scan "that stops at the first match", which
    -- on an empty queue reads the whole table
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT 1
) ready
WHERE NOT EXISTS (SELECT FROM pgtasq.queues p WHERE p.name = q.name AND p.paused)
