"""The scheduler's core without a database: parsing, ticks, keys, missed-tick policies."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pgtasq import InvalidSchedule, PgtasqError, Schedule, Scheduler, Task, TaskValidationError
from pgtasq._cron import ENTRY_ID_MAX_LENGTH, check_cron, due, entry_key_prefix
from pgtasq.models import IDEMPOTENCY_KEY_MAX_LENGTH, RESERVED_KEY_PREFIX
from pgtasq.scheduler import SchedulerConfig

UTC = timezone.utc


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    "cron", ["*/5 * * * *", "0 9 * * 1-5", "*/10 * * * * *", "@hourly", "@daily"]
)
def test_valid_expressions(cron: str) -> None:
    assert Schedule(cron, Task("t")).id == f"t:{cron}"


@pytest.mark.parametrize(
    "cron", ["", "bad", "61 * * * *", "* * * *", "* * * * * * *", "@often", "0 0 30 2 *"]
)
def test_invalid_expressions_are_refused(cron: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        Schedule(cron, Task("t"))
    assert isinstance(info.value, ValueError) and isinstance(info.value, PgtasqError)
    assert info.value.field == "cron"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd"])
def test_invalid_zones_are_refused(zone: str) -> None:
    with pytest.raises(InvalidSchedule, match="timezone"):
        Scheduler().register("* * * * *", Task("t"), timezone=zone or " ")


def test_per_tick_options_are_refused() -> None:
    with pytest.raises(InvalidSchedule, match="idempotency_key"):
        Schedule("* * * * *", Task("t", idempotency_key="k"))
    with pytest.raises(InvalidSchedule, match="id"):
        Schedule("* * * * *", Task("t"), id="x" * (ENTRY_ID_MAX_LENGTH + 1))


def test_unique_keys_are_refused_not_dropped() -> None:
    """Schedules do not store unique keys: refused rather than silently lost."""
    for task in (Task("t", unique_key="k"), Task("t", {"a": 1}, unique_key=True, unique_for=60)):
        with pytest.raises(InvalidSchedule, match="cannot set unique_key"):
            Schedule("* * * * *", task)


def test_six_fields_have_seconds_first() -> None:
    assert check_cron("*/15 * * * * *") and not check_cron("* * * * *")
    entry = Schedule("*/15 * * * * *", Task("t"))
    assert entry.next_after(at(2026, 1, 1, 0, 0, 0)) == at(2026, 1, 1, 0, 0, 15)
    assert entry.next_after(at(2026, 1, 1, 0, 0, 50)) == at(2026, 1, 1, 0, 1, 0)


def test_key_and_default_id() -> None:
    entry = Schedule("0 3 * * *", Task("report"), timezone="Europe/Berlin")
    assert entry.id == "report:0 3 * * *@Europe/Berlin"
    tick = entry.next_after(at(2026, 1, 1))
    assert tick == at(2026, 1, 1, 2)
    assert (
        entry.key(tick)
        == "pgtasq:schedule:30:report:0 3 * * *@Europe/Berlin:2026-01-01T02:00:00+00:00"
    )


def test_tick_keys_are_reserved_and_name_their_entry_exactly() -> None:
    tick = at(2026, 1, 1)
    rep, rep_eu = (Schedule("0 * * * *", Task("t"), id=i) for i in ("rep", "rep:eu"))
    assert rep.key(tick).startswith(RESERVED_KEY_PREFIX)
    assert not rep_eu.key(tick).startswith(entry_key_prefix("rep"))
    assert not rep.key(tick).startswith(entry_key_prefix("rep:eu"))
    longest = Schedule("0 * * * *", Task("t"), id="x" * ENTRY_ID_MAX_LENGTH)
    assert len(longest.key(at(2026, 1, 1))) <= IDEMPOTENCY_KEY_MAX_LENGTH


@pytest.mark.parametrize("key", ["pgtasq:schedule:3:rep:2026-01-01T00:00:00+00:00", "pgtasq:x"])
def test_producers_cannot_take_reserved_keys(key: str) -> None:
    with pytest.raises(TaskValidationError) as info:
        Task("t", idempotency_key=key)
    assert info.value.field == "idempotency_key"
    with pytest.raises(TaskValidationError):
        Task("t").with_options(idempotency_key=key)
    assert Task("t", idempotency_key="pgtasq-schedule:x").idempotency_key  # other keys pass


@pytest.mark.parametrize(
    "cron",
    [
        "R * * * *",
        "0 r * * *",
        "R(0-29) * * * *",
        "R/5 * * * *",
        "H * * * *",
        "h(0-29)/5 * * * *",
        "0 0 * * * R",
    ],
)
def test_drawn_fields_are_refused(cron: str) -> None:
    """croniter's R draws its value per process: schedulers would not agree on the ticks."""
    with pytest.raises(InvalidSchedule, match="not supported") as info:
        Schedule(cron, Task("t"))
    assert info.value.field == "cron"


@pytest.mark.parametrize("cron", ["0 0 * MAR,APR FRI", "0 0 * * THU", "0 0 * mar *"])
def test_names_with_r_and_h_still_pass(cron: str) -> None:
    check_cron(cron)


def test_latest_at_includes_now() -> None:
    entry = Schedule("0 * * * *", Task("t"))
    assert entry.latest_at(at(2026, 1, 1, 5)) == at(2026, 1, 1, 5)
    assert entry.latest_at(at(2026, 1, 1, 5, 30)) == at(2026, 1, 1, 5)


def test_due_while_running_enqueues_every_tick_up_to_the_cap() -> None:
    entry = Schedule("* * * * *", Task("t"))
    d = due(entry, at(2026, 1, 1, 0, 1), None, at(2026, 1, 1, 0, 3, 30), "skip")
    assert d.ticks == (at(2026, 1, 1, 0, 1), at(2026, 1, 1, 0, 2), at(2026, 1, 1, 0, 3))
    assert d.next_due == at(2026, 1, 1, 0, 4)
    capped = due(entry, at(2026, 1, 1, 0, 1), None, at(2026, 1, 1, 5), "skip", max_ticks=2)
    assert len(capped.ticks) == 2 and capped.dropped and capped.next_due == at(2026, 1, 1, 5, 1)


def test_missed_policies_when_taking_an_entry_up() -> None:
    entry = Schedule("0 * * * *", Task("t"))
    now, last = at(2026, 1, 1, 5, 30), at(2026, 1, 1, 1)
    assert due(entry, None, last, now, "skip").ticks == ()
    assert due(entry, None, last, now, "once").ticks == (at(2026, 1, 1, 5),)
    assert due(entry, None, at(2026, 1, 1, 5), now, "once").ticks == ()  # ran already
    assert due(entry, None, None, now, "once").ticks == ()  # never ran: nothing to catch up
    assert due(entry, None, last, now, "once").next_due == at(2026, 1, 1, 6)


def test_dst_spring_forward_moves_the_tick_to_after_the_gap() -> None:
    entry = Schedule("30 2 * * *", Task("t"), timezone="Europe/Berlin")
    tick = entry.next_after(at(2026, 3, 28, 12))
    assert tick == at(2026, 3, 29, 1)  # 03:00 CEST: 02:30 does not exist that day
    assert entry.next_after(tick) == at(2026, 3, 30, 0, 30)  # 02:30 CEST


def test_dst_fall_back_runs_both_occurrences() -> None:
    entry = Schedule("30 2 * * *", Task("t"), timezone="Europe/Berlin")
    first = entry.next_after(at(2026, 10, 24, 12))
    second = entry.next_after(first)
    assert (first, second) == (at(2026, 10, 25, 0, 30), at(2026, 10, 25, 1, 30))
    assert entry.next_after(second) == at(2026, 10, 26, 1, 30)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="missed"):
        SchedulerConfig(missed="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="provider_interval"):
        Scheduler(provider=list, provider_interval=0)
    assert Scheduler().config.missed == "skip"


def test_seconds_to_next() -> None:
    s = Scheduler(clock=lambda: at(2026, 1, 1), sleep_max=30)
    assert s.seconds_to_next() == 30
    s.register("* * * * *", Task("t"))
    assert s.seconds_to_next() == 0  # not taken up yet
