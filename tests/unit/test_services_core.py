"""The background services without a database: their configs, and the loops around
`run_once()` driven by an injected sleep and jitter source."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import psycopg
import pytest

from pgtasq import ConfigurationError, _sql
from pgtasq._services import (
    CLEAN_INTERVAL_DEFAULT,
    HEARTBEAT_INTERVAL_DEFAULT,
    LEASE_DEFAULT,
    RESCUE_INTERVAL_DEFAULT,
    RETENTION_DEFAULT,
    BackgroundLoops,
    CleanCounts,
    Cleaner,
    CleanerConfig,
    Heartbeat,
    HeartbeatConfig,
    HeartbeatCounts,
    RescueCounts,
    Rescuer,
    RescuerConfig,
    jittered,
)
from pgtasq.consumer import Consumer

STMTS = _sql.statements("pgtasq")


class Stop(Exception):
    """Ends a loop under test."""


class FakeTime:
    """An injected sleep: records the delays and stops the loop after ``rounds`` sleeps."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if len(self.slept) > self.rounds:
            raise Stop


def test_configs_have_named_defaults_and_check_values() -> None:
    assert HeartbeatConfig() == HeartbeatConfig(HEARTBEAT_INTERVAL_DEFAULT, LEASE_DEFAULT)
    assert RescuerConfig().interval == RESCUE_INTERVAL_DEFAULT
    assert CleanerConfig() == CleanerConfig(CLEAN_INTERVAL_DEFAULT, RETENTION_DEFAULT)
    consumer = Consumer()  # the consumer's defaults are the services'
    assert (consumer.settings.lease, consumer.settings.heartbeat_interval) == (30.0, 1.0)
    assert (consumer.settings.rescue_interval, consumer.settings.clean_interval) == (10.0, 60.0)
    assert consumer.settings.retention_default == 86400.0
    with pytest.raises(ConfigurationError, match="under half the lease"):
        HeartbeatConfig(interval=1.0, lease=2.0)
    with pytest.raises(ConfigurationError, match="interval must be from 1e-06 s"):
        RescuerConfig(interval=0.0)
    with pytest.raises(ConfigurationError, match="batch must be >= 1"):
        CleanerConfig(batch=0)
    with pytest.raises(ConfigurationError, match="retention_default must be from 1e-06 s"):
        CleanerConfig(retention_default=float("nan"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        RescuerConfig().interval = 1.0  # type: ignore[misc]


def test_jitter_is_a_quarter_either_way() -> None:
    assert jittered(10.0, lambda: 0.0) == 7.5
    assert jittered(10.0, lambda: 1.0) == 12.5


async def test_rescuer_loop_starts_at_a_random_point_then_jitters() -> None:
    clock = FakeTime(rounds=3)
    draws = iter([0.5, 0.0, 1.0, 0.25])
    rescuer = Rescuer(
        pool=None,  # type: ignore[arg-type] - run_once is replaced below
        stmts=STMTS,
        config=RescuerConfig(interval=8.0),
        sleep=clock.sleep,
        rand=lambda: next(draws),
    )
    rounds: list[str] = []

    async def run_once() -> RescueCounts:
        rounds.append("ok" if len(rounds) != 1 else "lost")
        if len(rounds) == 2:
            raise psycopg.OperationalError("the database went away")
        return RescueCounts()

    rescuer.run_once = run_once  # type: ignore[method-assign]
    with pytest.raises(Stop):
        await rescuer.run()
    # 0.5 * 8 first, then 8 * (0.75 + draw / 2); a lost database does not end the loop.
    assert clock.slept == [4.0, 6.0, 10.0, 7.0]
    assert rounds == ["ok", "lost", "ok"]


async def test_cleaner_loop_survives_a_lost_database() -> None:
    clock = FakeTime(rounds=2)
    cleaner = Cleaner(
        pool=None,  # type: ignore[arg-type]
        stmts=STMTS,
        config=CleanerConfig(interval=4.0),
        sleep=clock.sleep,
        rand=lambda: 0.5,
    )
    calls = 0

    async def run_once() -> CleanCounts:
        nonlocal calls
        calls += 1
        raise psycopg.OperationalError("gone")

    cleaner.run_once = run_once  # type: ignore[method-assign]
    with pytest.raises(Stop):
        await cleaner.run()
    assert clock.slept == [2.0, 4.0, 4.0] and calls == 2


async def test_heartbeat_loop_sleeps_one_interval_before_each_beat() -> None:
    clock = FakeTime(rounds=2)
    heartbeat = Heartbeat(
        pool=None,  # type: ignore[arg-type]
        stmts=STMTS,
        worker={},
        held=dict,
        on_lost=lambda task_id, claimed_at: None,
        config=HeartbeatConfig(interval=0.5, lease=2.0),
        sleep=clock.sleep,
    )
    beats = 0

    async def run_once() -> HeartbeatCounts:
        nonlocal beats
        beats += 1
        return HeartbeatCounts()

    heartbeat.run_once = run_once  # type: ignore[method-assign]
    with pytest.raises(Stop):
        await heartbeat.run()
    assert clock.slept == [0.5, 0.5, 0.5] and beats == 2


async def test_a_bug_in_a_round_is_not_swallowed() -> None:
    """Only a lost database is retried; anything else ends the loop, as it did before the
    services were split out of the Engine."""
    rescuer = Rescuer(pool=None, stmts=STMTS, sleep=FakeTime(rounds=5).sleep)  # type: ignore[arg-type]

    async def run_once() -> Any:
        raise KeyError("bug")

    rescuer.run_once = run_once  # type: ignore[method-assign]
    with pytest.raises(KeyError):
        await rescuer.run()


async def test_background_loops_report_a_loop_that_ends(caplog: pytest.LogCaptureFixture) -> None:
    """A loop that raises, returns or is cancelled by someone else is logged at ERROR and
    reported once; the loops `close` cancels are not."""
    crashes: list[str] = []
    loops = BackgroundLoops(crashes.append)

    async def raises() -> None:
        await asyncio.sleep(0)
        raise KeyError("bug")

    async def returns() -> None:
        return None

    async def forever() -> None:
        await asyncio.Event().wait()

    loops.start("a", raises())
    loops.start("b", returns())
    stray = loops.start("c", forever())
    loops.start("d", forever())
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(crashes) == ["a", "b"]
    assert loops.crashed is not None and loops.crashed[0] == crashes[0]
    logged = {
        r.getMessage(): r.exc_info[1] if r.exc_info else None
        for r in caplog.records
        if r.levelno == logging.ERROR
    }
    raised = "the a loop stopped (raised KeyError: 'bug'); stopping the worker"
    returned = "the b loop stopped (returned); stopping the worker"
    assert set(logged) == {raised, returned}
    assert isinstance(logged[raised], KeyError) and logged[returned] is None
    stray.cancel()  # not by close(): a crash too
    for _ in range(3):
        await asyncio.sleep(0)
    assert crashes[2:] == ["c"]
    await loops.close()
    assert crashes[3:] == []  # d was cancelled by close: not a crash
