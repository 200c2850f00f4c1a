"""The statements on tasks by id: the enqueues, the reads, and the Client's changes."""

from __future__ import annotations

import functools

from pgtasq._columns import (
    COPY_COLUMNS,
    COPY_COLUMNS_OPTIONAL,
    INSERT_ARRAYS,
    KEY_COLUMNS,
    TASK_COLUMN_NAMES,
    TASK_COLUMNS,
    TASK_COLUMNS_T,
    UNIQUE_COLUMNS,
    insert_columns,
    insert_select,
    insert_values,
    wrap,
)
from pgtasq._sql_common import (
    EMIT,
    EVENT_IDS_MAX,
    ON_KEY_CONFLICT,
    SchemaStatements,
    Statement,
    events_cte,
    statement,
    wake,
    wake_rows,
)
from pgtasq._transitions import TRANSITIONS, states_sql
from pgtasq.tables import TASKS_ID_SEQUENCE, UNIQUE_ACTIVE, UNIQUE_HELD, check_schema_name


class TaskStatements(SchemaStatements):
    """Enqueue, read, cancel, retry, delete and run tasks."""

    def _released(self, keys: str) -> str:
        """The CTE ``released``: the final rows whose unique_until has passed give their key
        up (unique_until = NULL takes them out of the index), before the INSERT arbitrates.
        ``keys`` is a set of text expressions the key is matched against (``= ANY``)."""
        return f"""released AS (
    UPDATE {self.schema}.tasks SET unique_until = NULL
    WHERE unique_key = ANY({keys}) AND unique_until <= now()
      AND NOT ({UNIQUE_ACTIVE}) AND ({UNIQUE_HELD})
    RETURNING 1
)"""

    def _insert_values(self, omit: frozenset[str], conflict: str, returned: str) -> str:
        notified = wake(self.channel, "json_build_array(queue)", "1", "json_build_array(id)")
        return f"""
INSERT INTO {self.schema}.tasks
    ({insert_columns(omit=omit)})
VALUES (
    {insert_values(omit=omit)}){conflict}
RETURNING id, {returned}run_at, created_at,
          {notified} AS notified
"""

    @statement
    def task_insert(self) -> str:
        """One statement enqueues a whole batch: the arrays become rows, rows with a taken
        idempotency key are skipped (the caller then selects them), and one NOTIFY goes out
        for the statement, delivered at commit."""
        arrays = ",\n        ".join(f"CAST(%({name})s AS {kind}[])" for name, kind in INSERT_ARRAYS)
        names = wrap([name for name, _ in INSERT_ARRAYS] + ["ord"], "        ")
        return f"""
WITH input AS (
    SELECT * FROM unnest(
        {arrays}
    ) WITH ORDINALITY AS i ({names})
),
{self._released("ARRAY(SELECT unique_key FROM input WHERE unique_key IS NOT NULL)")},
inserted AS (
    INSERT INTO {self.schema}.tasks
        ({insert_columns(indent="         ")})
    SELECT {insert_select()}
    FROM input, (SELECT count(*) FROM released) r
    ORDER BY ord
    {ON_KEY_CONFLICT}
    RETURNING id, queue, idempotency_key, unique_key, run_at, created_at
),
woken AS ({wake_rows(self.channel, "inserted")})
SELECT id, idempotency_key, unique_key, run_at, created_at
FROM inserted LEFT JOIN woken ON true
"""

    @statement
    def task_insert_one(self) -> str:
        """One task with a unique key (and perhaps an idempotency key): the same columns as
        scalars, without an unnest; first the release of the key's holder whose unique_until
        has passed (docs/unique.md: the INSERT reads released's count, so the release has
        run before it arbitrates), and the NOTIFY rides on the RETURNING of the row it
        announces."""
        notified = wake(self.channel, "json_build_array(queue)", "1", "json_build_array(id)")
        return f"""
WITH {self._released("ARRAY[CAST(%(unique_key)s AS text)]")}
INSERT INTO {self.schema}.tasks
    ({insert_columns()})
SELECT
    {insert_values()}
FROM (SELECT count(*) FROM released) r
{ON_KEY_CONFLICT}
RETURNING id, idempotency_key, unique_key, run_at, created_at,
          {notified} AS notified
"""

    @statement
    def task_insert_one_idempotent(self) -> str:
        """One task with an idempotency key only: a plain INSERT … VALUES (no unnest, no
        CTE), ON CONFLICT DO NOTHING, the NOTIFY on the RETURNING of the row it announces."""
        return self._insert_values(UNIQUE_COLUMNS, f"\n{ON_KEY_CONFLICT}", "idempotency_key, ")

    @statement
    def task_insert_one_keyless(self) -> str:
        """One task without a key: no ON CONFLICT, so PostgreSQL inserts the row directly
        instead of speculatively (no arbiter check, no extra WAL record)."""
        return self._insert_values(KEY_COLUMNS, "\n", "")

    @statement
    def task_insert_copy_ids(self) -> str:
        """The first half of a COPY enqueue, in the transaction of the COPY: the
        transaction's now() (which the rows' created_at, updated_at and default run_at will
        equal), one id per row in order, and the NOTIFY for the rows to come, delivered at
        commit. The ids are usually consecutive; then only the first is sent back (parsing
        1000 ids costs the client more than drawing them costs the server), else all."""
        notified = wake(
            self.channel,
            "to_json(CAST(%(queues)s AS text[]))",
            "cardinality(ids)",
            f"to_json(ids[1:{EVENT_IDS_MAX}])",
        )
        return f"""
WITH drawn AS (
    SELECT ARRAY(SELECT nextval('{self.schema}.{TASKS_ID_SEQUENCE}')
                 FROM generate_series(1, CAST(%(count)s AS int))) AS ids
)
SELECT now() AS now, ids[1] AS first_id,
       CASE WHEN ids[cardinality(ids)] - ids[1] + 1 = cardinality(ids) THEN NULL
            ELSE ids END AS ids,
       {notified} AS notified
FROM drawn
"""

    @statement
    def task_update_pending(self) -> str:
        """``on_conflict="update"``: the holders of taken keys that are still pending take the
        new task's priority, and its run_at (or now() + delay) when it gives one. The WHERE
        names the one state it changes; a holder that started running meanwhile is left as
        it is. One wake-up for the changed rows (a run_at moved earlier must wake a worker)."""
        return f"""
WITH input AS (
    SELECT * FROM unnest(
        CAST(%(id)s AS bigint[]), CAST(%(priority)s AS smallint[]),
        CAST(%(run_at)s AS timestamptz[]), CAST(%(delay)s AS float8[])
    ) AS i (id, priority, run_at, delay)
),
changed AS (
    UPDATE {self.schema}.tasks t
    SET priority = i.priority,
        run_at = CASE WHEN i.run_at IS NULL AND i.delay IS NULL THEN t.run_at
                      ELSE coalesce(i.run_at, now() + make_interval(secs => i.delay)) END,
        updated_at = now()
    FROM input i
    WHERE t.id = i.id AND t.status = 'pending'
    RETURNING {TASK_COLUMNS_T}
),
woken AS ({wake_rows(self.channel, "changed")})
SELECT {TASK_COLUMN_NAMES} FROM changed LEFT JOIN woken ON true
"""

    @statement
    def task_select_by_keys(self) -> str:
        """The rows holding these idempotency keys, and those holding these unique keys (the
        index's predicate repeated, so each side is an index scan)."""
        return f"""
SELECT {TASK_COLUMNS} FROM {self.schema}.tasks
WHERE idempotency_key = ANY(CAST(%(keys)s AS text[]))
UNION ALL
SELECT {TASK_COLUMNS} FROM {self.schema}.tasks
WHERE unique_key = ANY(CAST(%(unique_keys)s AS text[])) AND ({UNIQUE_HELD})
"""

    @statement
    def task_select(self) -> str:
        return f"SELECT {TASK_COLUMNS} FROM {self.schema}.tasks WHERE id = CAST(%(id)s AS bigint)"

    @statement
    def task_select_many(self) -> str:
        return (
            f"SELECT {TASK_COLUMNS} FROM {self.schema}.tasks "
            "WHERE id = ANY(CAST(%(ids)s AS bigint[])) ORDER BY id"
        )

    @statement
    def task_count_by_status(self) -> str:
        return (
            f"SELECT status::text AS status, count(*) AS count FROM {self.schema}.tasks "
            "GROUP BY status ORDER BY status"
        )

    # -- the Client: one conditional statement per change (`pgtasq._transitions`). `target`
    # locks the row and reads it (as its latest committed version, once the lock is ours);
    # the change happens only from the states it may leave. The statement returns the state
    # the row was in (`before`) and the row as the statement left it: the changed row, or,
    # when nothing changed, the row `target` locked. So one statement decides and reports;
    # the Client never reads the row again (a second read could see a later change).
    def _transition(self, action: str) -> str:
        s = self.schema
        t = TRANSITIONS[action]
        leaves = states_sql("target.before", t.from_states)
        if t.guard is not None:
            leaves += " AND target.ready"
        if t.sets is None:
            change = f"""DELETE FROM {s}.tasks t USING target
    WHERE t.id = target.id AND {leaves}"""
        else:
            change = f"""UPDATE {s}.tasks t
    SET {t.sets}
    FROM target
    WHERE t.id = target.id AND {leaves}"""
        tail = []
        if t.event is not None:
            tail.append(events_cte(self.events, "changed", f"'{t.event}'"))
        if t.wake:
            tail.append(f"woken AS ({wake_rows(self.channel, 'changed')})")
        ctes = "".join(",\n" + cte for cte in tail)
        joined = " LEFT JOIN woken ON true" if t.wake else ""
        emitted = f" WHERE {EMIT}" if t.event else ""
        return f"""
WITH target AS (
    SELECT status AS before, {t.guard or "true"} AS ready, {TASK_COLUMNS} FROM {s}.tasks
    WHERE id = CAST(%(id)s AS bigint) FOR UPDATE
),
changed AS (
    {change}
    RETURNING {TASK_COLUMNS_T}
){ctes}
SELECT target.before::text AS before, target.ready, r.*
FROM target, (
    SELECT {TASK_COLUMN_NAMES} FROM changed
    UNION ALL
    SELECT {TASK_COLUMN_NAMES} FROM target WHERE NOT EXISTS (SELECT FROM changed)
) r{joined}{emitted}
"""

    @statement
    def task_cancel(self) -> str:
        return self._transition("cancel")

    @statement
    def task_retry(self) -> str:
        return self._transition("retry")

    @statement
    def task_delete(self) -> str:
        return self._transition("delete")

    @statement
    def task_run(self) -> str:
        return self._transition("run")


@functools.lru_cache(maxsize=256)
def task_insert_copy(schema: str, columns: tuple[str, ...]) -> Statement:
    """The COPY of a keyless batch into the tasks table, sending these columns (text format).

    ``columns`` is `COPY_COLUMNS` plus those of `COPY_COLUMNS_OPTIONAL` the batch uses. The
    ids come from `task_insert_copy_ids`, run in the same transaction just before.
    """
    s = check_schema_name(schema)
    allowed = COPY_COLUMNS + COPY_COLUMNS_OPTIONAL
    if columns[: len(COPY_COLUMNS)] != COPY_COLUMNS or not set(columns) <= set(allowed):
        raise ValueError(f"COPY columns must be {COPY_COLUMNS} and some of {COPY_COLUMNS_OPTIONAL}")
    return Statement("task_insert_copy", f"COPY {s}.tasks ({', '.join(columns)}) FROM STDIN")
