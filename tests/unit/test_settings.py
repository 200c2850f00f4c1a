"""`Settings.build`: every consumer setting checked in one place, and the heartbeat and
rescue intervals derived from the lease when not given."""

from __future__ import annotations

from typing import Any

import pytest

from pgtasq import ConfigurationError, Consumer
from pgtasq._settings import Settings, heartbeat_interval_for, rescue_interval_for


def test_intervals_follow_a_short_lease_and_stop_at_one_second() -> None:
    assert (heartbeat_interval_for(1.0), rescue_interval_for(1.0)) == (1 / 6, 0.25)
    assert (heartbeat_interval_for(2.0), rescue_interval_for(2.0)) == (1 / 3, 0.5)
    assert (heartbeat_interval_for(30.0), rescue_interval_for(30.0)) == (1.0, 1.0)
    assert (heartbeat_interval_for(3600.0), rescue_interval_for(3600.0)) == (1.0, 1.0)


@pytest.mark.parametrize("lease", [1, 1.5, 2, 5, 30, 86400])
def test_any_lease_of_a_second_or_more_works_with_the_defaults(lease: float) -> None:
    settings = Consumer(lease=lease).settings
    assert settings.lease == lease
    assert 0 < settings.heartbeat_interval < lease / 2
    # A dead worker's tasks come back within about lease + 1 s (+ 25 % jitter).
    assert settings.rescue_interval <= min(1.0, lease)


def test_a_new_lease_derives_new_intervals_unless_they_were_given() -> None:
    consumer = Consumer()
    consumer.configure(lease=2)  # main refused this: the 1 s heartbeat was kept
    assert consumer.settings.heartbeat_interval == pytest.approx(1 / 3)
    assert consumer.settings.rescue_interval == 0.5
    consumer.configure(lease=60)
    assert (consumer.settings.heartbeat_interval, consumer.settings.rescue_interval) == (1, 1)

    given = Consumer(heartbeat_interval=0.7, rescue_interval=3)
    given.configure(lease=2)
    assert (given.settings.heartbeat_interval, given.settings.rescue_interval) == (0.7, 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease": 0.5}, "lease must be a number of seconds >= 1, got 0.5"),
        ({"lease": float("nan")}, "lease must be a number of seconds >= 1"),
        ({"lease": float("inf")}, "lease must be a number of seconds >= 1"),
        ({"lease": "30"}, "lease must be a number of seconds >= 1"),
        (
            {"lease": 2, "heartbeat_interval": 1},
            "heartbeat_interval (1 s) must be under half the lease (2 s)",
        ),
        ({"heartbeat_interval": 0}, "heartbeat_interval must be a number of seconds > 0"),
        ({"rescue_interval": -1}, "rescue_interval must be a number of seconds > 0"),
        ({"rescue_interval": float("nan")}, "rescue_interval must be a number of seconds > 0"),
        ({"shutdown_timeout": -1}, "shutdown_timeout must be a number of seconds >= 0"),
        ({"concurrency": 0}, "concurrency must be an integer from 1 to 10000, got 0"),
        ({"concurrency": True}, "concurrency must be an integer from 1 to 10000"),
        ({"batch_size": 10_001}, "batch_size must be an integer from 1 to 10000"),
        ({"poll_interval": 0}, "poll_interval must be a number of seconds > 0"),
    ],
)
def test_invalid_settings_name_the_setting(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Consumer(**options)
    assert message in str(caught.value)
    consumer = Consumer()
    before = consumer.settings
    with pytest.raises(ConfigurationError):
        consumer.configure(**options)
    assert consumer.settings == before  # nothing changed


def test_shutdown_timeout_zero_is_allowed_and_settings_are_frozen() -> None:
    settings = Consumer(shutdown_timeout=0).settings
    assert isinstance(settings, Settings) and settings.shutdown_timeout == 0
    with pytest.raises(AttributeError):
        settings.lease = 3  # type: ignore[misc]


def test_configure_refuses_unknown_settings() -> None:
    with pytest.raises(TypeError, match="leas"):
        Consumer().configure(leas=3)
