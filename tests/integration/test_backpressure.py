"""Backpressure: a worker whose outcome writes are slow claims less, and fails nothing."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from pgtasq import Consumer, Producer, Task, TaskContext


def slow_completions(dsn: str, schema: str, seconds_per_row: float) -> None:
    """Make every write of a completed outcome sleep, in the database, per row."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"""CREATE FUNCTION {schema}.slow_completion() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep({seconds_per_row}); RETURN NEW; END $$"""
        )
        conn.execute(
            f"""CREATE TRIGGER slow_completion BEFORE UPDATE ON {schema}.tasks FOR EACH ROW
            WHEN (NEW.status = 'completed') EXECUTE FUNCTION {schema}.slow_completion()"""
        )


class RunningWatch:
    """Samples the number of running rows from another connection while a worker drains."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    f"SELECT count(*) FROM {self.schema}.tasks WHERE status = 'running'"
                ).fetchone()
                assert row is not None
                self.most = max(self.most, int(row[0]))
                self.samples += 1
                self._stop.wait(0.01)

    def __enter__(self) -> RunningWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_slow_outcome_writes_stop_the_claims_and_fail_nothing(pg_dsn: str, schema: str) -> None:
    concurrency = 10
    tasks = 400
    # 400 rows x 4 ms: the outcome writes take 1.6 s in all, while the handlers take no time
    # and claims a few milliseconds each: without backpressure every task is claimed (and
    # running) long before its outcome is written.
    slow_completions(pg_dsn, schema, 0.004)
    with Producer(pg_dsn, schema=schema) as producer:
        producer.enqueue_many([Task("noop", i) for i in range(tasks)])
    consumer = Consumer(
        schema=schema,
        concurrency=concurrency,
        batch_size=concurrency,
        lease=1.2,  # shorter than the whole drain's writes: only the heartbeat keeps them
        heartbeat_interval=0.2,
        rescue_interval=0.3,
        poll_interval=0.2,
    )

    @consumer.task("noop")
    async def noop(ctx: TaskContext) -> Any:
        return None

    with RunningWatch(pg_dsn, schema) as watch:
        counts = consumer.run(pg_dsn, burst=True)
    assert watch.samples > 10
    # the documented bound (docs/workers.md): concurrency running + concurrency unwritten
    assert watch.most <= 2 * concurrency, watch.most
    with psycopg.connect(pg_dsn) as conn:
        by_status = dict(
            conn.execute(f"SELECT status::text, count(*) FROM {schema}.tasks GROUP BY 1").fetchall()
        )
        expired = conn.execute(
            f"SELECT count(*) FROM {schema}.tasks WHERE errors::text LIKE '%LeaseExpired%'"
        ).fetchone()
    assert by_status == {"completed": tasks}
    assert expired == (0,)
    assert counts.completed == tasks
    assert counts.rescued == 0
