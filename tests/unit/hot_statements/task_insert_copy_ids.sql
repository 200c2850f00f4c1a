
WITH drawn AS (
    SELECT ARRAY(SELECT nextval('pgtasq.tasks_id_seq')
                 FROM generate_series(1, CAST(%(count)s AS int))) AS ids
)
SELECT now() AS now, ids[1] AS first_id,
       CASE WHEN ids[cardinality(ids)] - ids[1] + 1 = cardinality(ids) THEN NULL
            ELSE ids END AS ids,
       pg_notify('pgtasq_w_pgtasq', json_build_object('queues', CASE WHEN octet_length(CAST(to_json(CAST(%(queues)s AS text[])) AS text)) <= 1500 THEN to_json(CAST(%(queues)s AS text[])) ELSE '"*"'::json END, 'count', cardinality(ids), 'ids', to_json(ids[1:300]))::text) AS notified
FROM drawn
