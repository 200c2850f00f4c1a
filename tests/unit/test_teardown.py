"""The stop deadline of a worker (`pgtasq._teardown.Deadline`): plain values, no I/O."""

from __future__ import annotations

import asyncio

import pytest

from pgtasq._teardown import Deadline, bounded


def test_the_first_graceful_request_sets_both_deadlines() -> None:
    deadline = Deadline(30.0, margin=5.0)
    deadline.request(100.0, force=False)
    assert (deadline.wait_until, deadline.end) == (130.0, 135.0)
    assert deadline.waiting_left(110.0) == 20.0 and deadline.left(110.0) == 25.0


def test_a_later_graceful_request_changes_nothing() -> None:
    deadline = Deadline(30.0, margin=5.0)
    deadline.request(100.0, force=False)
    deadline.request(120.0, force=False)  # the supervisor's SIGUSR1 after a group SIGINT
    assert (deadline.wait_until, deadline.end) == (130.0, 135.0)


def test_a_forced_request_moves_both_earlier_never_later() -> None:
    deadline = Deadline(30.0, margin=5.0)
    deadline.request(100.0, force=False)
    deadline.request(110.0, force=True)
    assert (deadline.wait_until, deadline.end) == (110.0, 115.0)
    deadline.request(112.0, force=False)
    assert deadline.end == 115.0
    assert deadline.waiting_left(120.0) == 0.0 and deadline.left(120.0) == 0.0


def test_without_a_request_the_margin_starts_at_the_first_reading() -> None:
    """A burst run ends without a stop request: its teardown still has a bound."""
    deadline = Deadline(30.0, margin=5.0)
    assert deadline.left(50.0) == 5.0
    assert deadline.waiting_left(51.0) == 0.0


async def test_bounded_gives_up_on_a_step_that_takes_too_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert await bounded("a quick step", asyncio.sleep(0), 1.0)
    assert not await bounded("a stuck step", asyncio.sleep(10), 0.05)
    assert "shutdown: a stuck step did not finish in 0.1 s" in caplog.text
