"""Scheduler against a real PostgreSQL, with a fake clock: no real waiting."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgtasq import (
    Client,
    InvalidSchedule,
    Producer,
    Schedule,
    Scheduler,
    Task,
    TaskValidationError,
)
from tests.conftest import count_tasks

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _keys(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        rows = c.execute(f"SELECT idempotency_key FROM {schema}.tasks ORDER BY id").fetchall()
    return [r[0] for r in rows]


def _schedules(dsn: str, schema: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as c, c.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT * FROM {schema}.schedules").fetchall()
    return {r["id"]: r for r in rows}


def test_racing_schedulers_enqueue_one_task_per_tick(pg_dsn: str, schema: str) -> None:
    ticks = 40
    schedulers = [Scheduler(pg_dsn, schema=schema) for _ in range(3)]
    for s in schedulers:
        s.register("* * * * * *", Task("tick", {"n": 1}), name="every-second")
        s.register("*/2 * * * * *", Task("other"))
        s.run_once(T0)  # take the entries up
    barrier = threading.Barrier(3)
    totals: list[int] = []
    errors: list[BaseException] = []

    def race(s: Scheduler) -> None:
        try:
            created = 0
            for i in range(1, ticks + 1):
                barrier.wait()
                created += s.run_once(T0 + timedelta(seconds=i)).enqueued
            totals.append(created)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=race, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in schedulers:
        s.close()
    assert not errors
    assert sum(totals) == ticks + ticks // 2
    assert count_tasks(pg_dsn, schema, type="tick") == ticks
    assert count_tasks(pg_dsn, schema, type="other") == ticks // 2
    keys = _keys(pg_dsn, schema)
    assert len(set(keys)) == len(keys)
    assert "pgtasq:schedule:12:every-second:2026-01-01T00:00:01+00:00" in keys
    row = _schedules(pg_dsn, schema)["every-second"]
    assert row["last_run_at"] == T0 + timedelta(seconds=ticks)
    assert row["next_run_at"] == T0 + timedelta(seconds=ticks + 1)
    assert row["task_type"] == "tick" and row["payload"] == {"n": 1}


def test_schedules_table_and_unregister(pg_dsn: str, schema: str) -> None:
    with Scheduler(pg_dsn, schema=schema) as s:
        entry = s.register("0 * * * *", Task("hourly", queue="q", priority=3))
        assert entry == "hourly:0 * * * *"
        counts = s.run_once(T0 + timedelta(minutes=1))
        assert counts.ticks == 0
        row = _schedules(pg_dsn, schema)[entry]
        assert row["last_run_at"] is None and row["next_run_at"] == T0 + timedelta(hours=1)
        assert row["options"]["queue"] == "q" and row["options"]["priority"] == 3
        counts = s.run_once(T0 + timedelta(hours=3, minutes=1))  # late: each tick passed
        assert (counts.ticks, counts.enqueued, counts.existing) == (3, 3, 0)
        row = _schedules(pg_dsn, schema)[entry]
        assert row["last_run_at"] == T0 + timedelta(hours=3)
        assert row["next_run_at"] == T0 + timedelta(hours=4)
        assert s.unregister(entry)
        assert s.run_once(T0 + timedelta(hours=5)).removed == 1
        assert _schedules(pg_dsn, schema) == {}
        assert count_tasks(pg_dsn, schema, queue="q", priority=3) == 3


def test_a_producer_cannot_take_a_ticks_key(pg_dsn: str, schema: str) -> None:
    """A tick's key is in pgtasq's reserved namespace: a producer that tries to take it is
    refused before any SQL, and the tick is enqueued."""
    tick = T0 + timedelta(hours=1)
    key = Schedule("0 * * * *", Task("tick"), id="rep").key(tick)
    with Producer(pg_dsn, schema=schema) as producer:
        with pytest.raises(TaskValidationError) as info:
            producer.enqueue("squatter", idempotency_key=key)
        assert info.value.field == "idempotency_key"
    with Scheduler(pg_dsn, schema=schema) as s:
        s.register("0 * * * *", Task("tick"), name="rep")
        s.run_once(T0)
        assert s.run_once(tick).enqueued == 1
    assert count_tasks(pg_dsn, schema) == count_tasks(pg_dsn, schema, type="tick") == 1


def test_list_schedules_matches_entries_exactly(pg_dsn: str, schema: str) -> None:
    """Entry `rep` does not count the tasks of entry `rep:eu` (nor the reverse)."""
    with Scheduler(pg_dsn, schema=schema) as s:
        s.register("0 * * * *", Task("rep"), name="rep")
        s.register("0 * * * *", Task("rep.eu"), name="rep:eu")
        s.register("0 * * * *", Task("re"), name="re")
        s.register("0 * * * *", Task("accent"), name="ré")  # lengths in characters, not bytes
        s.run_once(T0)
        s.run_once(T0 + timedelta(hours=2))
    with Client(pg_dsn, schema=schema) as client:
        listed = {e.id: e.task_ids for e in client.list_schedules()}
        types = {entry: {client.get_task(i).type for i in ids} for entry, ids in listed.items()}
    assert {entry: len(ids) for entry, ids in listed.items()} == {
        "re": 2,
        "rep": 2,
        "rep:eu": 2,
        "ré": 2,
    }
    assert types == {"re": {"re"}, "rep": {"rep"}, "rep:eu": {"rep.eu"}, "ré": {"accent"}}


def test_invalid_entries_are_refused_before_sql(schema: str) -> None:
    s = Scheduler(schema=schema)  # no DSN: nothing could be written anyway
    with pytest.raises(InvalidSchedule, match="cron"):
        s.register("every minute", Task("t"))
    with pytest.raises(InvalidSchedule, match="timezone"):
        s.register("* * * * *", Task("t"), timezone="Europe/Atlantis")
    with pytest.raises(InvalidSchedule, match="random"):
        s.register("R * * * *", Task("t"))
    assert s.entries() == []


def test_provider_adds_changes_and_removes(pg_dsn: str, schema: str) -> None:
    current = [Schedule("0 * * * *", Task("a"), id="a")]
    now = [T0]
    s = Scheduler(
        pg_dsn, schema=schema, clock=lambda: now[0], provider=lambda: current, provider_interval=600
    )
    with s:
        s.run_once()
        assert set(_schedules(pg_dsn, schema)) == {"a"}
        current = [
            Schedule("*/30 * * * *", Task("a"), id="a"),
            Schedule("0 * * * *", Task("b"), id="b"),
        ]
        now[0] = T0 + timedelta(minutes=5)
        s.run_once()  # before provider_interval: the provider is not read again
        assert set(_schedules(pg_dsn, schema)) == {"a"}
        now[0] = T0 + timedelta(minutes=10)
        s.run_once()
        rows = _schedules(pg_dsn, schema)
        assert set(rows) == {"a", "b"} and rows["a"]["cron"] == "*/30 * * * *"
        assert rows["a"]["next_run_at"] == T0 + timedelta(minutes=30)
        now[0] = T0 + timedelta(minutes=30)
        assert s.run_once().enqueued == 1  # a at :30
        current = [Schedule("0 * * * *", Task("b"), id="b")]
        now[0] = T0 + timedelta(minutes=60)
        counts = s.run_once()
        assert counts.removed == 1 and counts.enqueued == 1  # b at 01:00; a gone
        assert set(_schedules(pg_dsn, schema)) == {"b"}
    assert count_tasks(pg_dsn, schema, type="a") == 1
    assert count_tasks(pg_dsn, schema, type="b") == 1


def test_six_field_cron(pg_dsn: str, schema: str) -> None:
    with Scheduler(pg_dsn, schema=schema) as s:
        s.register("*/20 * * * * *", Task("s"))
        s.run_once(T0)
        assert s.run_once(T0 + timedelta(minutes=1)).enqueued == 3  # :20 :40 1:00
    assert count_tasks(pg_dsn, schema, type="s") == 3


@pytest.mark.parametrize(("missed", "expected"), [("skip", 0), ("once", 1)])
def test_missed_ticks(pg_dsn: str, schema: str, missed: str, expected: int) -> None:
    with Scheduler(pg_dsn, schema=schema) as first:
        first.register("0 * * * *", Task("m"), name="m")
        first.run_once(T0)
        first.run_once(T0 + timedelta(hours=1))
    assert count_tasks(pg_dsn, schema) == 1
    # Every scheduler down from 01:00 to 05:30; a new one comes up.
    with Scheduler(pg_dsn, schema=schema, missed=missed) as second:  # type: ignore[arg-type]
        second.register("0 * * * *", Task("m"), name="m")
        counts = second.run_once(T0 + timedelta(hours=5, minutes=30))
        assert counts.enqueued == expected
        second.run_once(T0 + timedelta(hours=6))
    keys = _keys(pg_dsn, schema)
    assert len(keys) == 2 + expected
    if expected:
        assert keys[1] == "pgtasq:schedule:1:m:2026-01-01T05:00:00+00:00"


def test_dst_transitions_in_berlin(pg_dsn: str, schema: str) -> None:
    with Scheduler(pg_dsn, schema=schema) as s:
        s.register("30 2 * * *", Task("dst"), name="d", timezone="Europe/Berlin")
        s.run_once(datetime(2026, 3, 27, 12, tzinfo=UTC))
        s.run_once(datetime(2026, 3, 31, 12, tzinfo=UTC))
    with Scheduler(pg_dsn, schema=schema) as s:  # a new one, not catching up on the summer
        s.register("30 2 * * *", Task("dst"), name="d", timezone="Europe/Berlin")
        s.run_once(datetime(2026, 10, 24, 12, tzinfo=UTC))
        s.run_once(datetime(2026, 10, 26, 12, tzinfo=UTC))
    assert [k.rsplit(":d:", 1)[1] for k in _keys(pg_dsn, schema)] == [
        "2026-03-28T01:30:00+00:00",  # 02:30 CET
        "2026-03-29T01:00:00+00:00",  # 02:30 does not exist: 03:00 CEST
        "2026-03-30T00:30:00+00:00",  # 02:30 CEST
        "2026-03-31T00:30:00+00:00",
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST
        "2026-10-25T01:30:00+00:00",  # 02:30 CET: the repeated hour runs again
        "2026-10-26T01:30:00+00:00",
    ]


def test_start_and_stop_with_a_fake_clock(pg_dsn: str, schema: str) -> None:
    now = [T0]
    with Scheduler(pg_dsn, schema=schema, clock=lambda: now[0], sleep_max=0.01) as s:
        s.register("0 * * * *", Task("loop"))
        s.start()
        done = threading.Event()
        for _ in range(500):
            if _schedules(pg_dsn, schema):
                done.set()
                break
            threading.Event().wait(0.01)
        assert done.is_set()
        now[0] = T0 + timedelta(hours=1)
        for _ in range(500):
            if count_tasks(pg_dsn, schema) == 1:
                break
            threading.Event().wait(0.01)
        s.stop()
    assert count_tasks(pg_dsn, schema, type="loop") == 1


def test_run_once_on_the_callers_connection_never_commits(pg_dsn: str, schema: str) -> None:
    s = Scheduler(schema=schema)
    s.register("0 * * * *", Task("c"))
    with psycopg.connect(pg_dsn) as conn:
        s.run_once(T0, conn=conn)
        assert s.run_once(T0 + timedelta(hours=1), conn=conn).enqueued == 1
        assert count_tasks(pg_dsn, schema) == 0 and _schedules(pg_dsn, schema) == {}
        conn.commit()
    assert count_tasks(pg_dsn, schema) == 1 and len(_schedules(pg_dsn, schema)) == 1


async def test_arun_with_a_fake_clock(pg_dsn: str, schema: str) -> None:
    now = [T0]
    with Scheduler(pg_dsn, schema=schema, clock=lambda: now[0], sleep_max=0.01) as s:
        s.register("0 * * * *", Task("async"))
        runner = asyncio.create_task(s.arun())
        for _ in range(500):
            if _schedules(pg_dsn, schema):
                break
            await asyncio.sleep(0.01)
        now[0] = T0 + timedelta(hours=1)
        for _ in range(500):
            if count_tasks(pg_dsn, schema) == 1:
                break
            await asyncio.sleep(0.01)
        s.stop()
        await asyncio.wait_for(runner, 5)
    assert count_tasks(pg_dsn, schema, type="async") == 1
