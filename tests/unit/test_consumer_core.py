"""Consumer logic without a database: queue order, backoff, settings, error entries."""

from __future__ import annotations

import collections
import random

import pytest

from pgtasq import ConfigurationError, Consumer
from pgtasq._claims import claim_room, queue_order, unrecorded_max
from pgtasq._listener import relevant
from pgtasq.consumer import parse_queues
from pgtasq.retry import exponential_backoff


def test_parse_queues_forms() -> None:
    assert parse_queues("default") == (("default", 1),)
    assert parse_queues(["a", "b"]) == (("a", 1), ("b", 1))
    assert parse_queues({"critical": 6, "low": 1}) == (("critical", 6), ("low", 1))
    assert parse_queues("critical=6, default=3,low") == (
        ("critical", 6),
        ("default", 3),
        ("low", 1),
    )


@pytest.mark.parametrize("bad", ["", "a=0", "a=x", "a,a", {"a": -1}, [], {"a": 1.5}])
def test_parse_queues_rejects(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_queues(bad)  # type: ignore[arg-type]


def test_strict_order_is_by_weight() -> None:
    assert queue_order((("low", 1), ("critical", 6), ("default", 3)), strict=True) == [
        "critical",
        "default",
        "low",
    ]


def test_weighted_order_follows_weights() -> None:
    rng = random.Random(7)
    firsts = collections.Counter(
        queue_order((("critical", 6), ("default", 3), ("low", 1)), False, rng.random)[0]
        for _ in range(20_000)
    )
    assert firsts["critical"] / 20_000 == pytest.approx(0.6, abs=0.02)
    assert firsts["default"] / 20_000 == pytest.approx(0.3, abs=0.02)
    assert firsts["low"] / 20_000 == pytest.approx(0.1, abs=0.02)
    every = queue_order((("a", 1), ("b", 1), ("c", 1)), False, rng.random)
    assert sorted(every) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("running", "reserved", "unwritten", "room"),
    [
        (0, 0, 0, 10),  # idle: a full claim
        (4, 3, 0, 3),  # free handler slots
        (4, 3, 10, 3),  # outcomes queued within the allowance: no effect
        (4, 3, 12, 1),  # beyond it: claim less
        (0, 0, 20, 0),  # writes far behind: claim nothing, even with every slot free
        (0, 0, 25, -5),
        (10, 0, 0, 0),
    ],
)
def test_claim_room_stops_claiming_when_outcomes_fall_behind(
    running: int, reserved: int, unwritten: int, room: int
) -> None:
    assert (
        claim_room(concurrency=10, running=running, reserved=reserved, unwritten=unwritten) == room
    )
    # whatever is claimed within the room keeps the worker within its bound
    assert running + reserved + unwritten + max(room, 0) <= max(
        unrecorded_max(10), running + reserved + unwritten
    )


def test_backoff_grows_with_jitter_and_cap() -> None:
    assert exponential_backoff(1, rand=lambda: 0.0) == 0.5
    assert exponential_backoff(1, rand=lambda: 1.0) == 1.0
    assert exponential_backoff(4, rand=lambda: 1.0) == 8.0
    assert exponential_backoff(10_000, rand=lambda: 1.0) == 3600.0
    assert exponential_backoff(3, base=2, cap=5, rand=lambda: 0.0) == 2.5
    with pytest.raises(ValueError, match="1-based"):
        exponential_backoff(0)


def test_consumer_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        Consumer(concurrency=0)
    with pytest.raises(ConfigurationError, match="half the lease"):
        Consumer(lease=2, heartbeat_interval=1)
    with pytest.raises(ConfigurationError, match="schema"):
        Consumer(schema="Bad")
    for bad in (0, -1, 2**40, 1.5, True, "1000"):
        with pytest.raises(ConfigurationError, match="result_max_bytes"):
            Consumer(result_max_bytes=bad)  # type: ignore[arg-type]
    assert Consumer(result_max_bytes=4096).settings.result_max_bytes == 4096
    consumer = Consumer(queues="a=2")
    consumer.configure(concurrency=5, queues="b=1,c=3", lease=None)
    assert consumer.settings.concurrency == 5
    assert consumer.settings.queues == (("b", 1), ("c", 3))


def test_registration() -> None:
    consumer = Consumer()

    @consumer.task("a")
    def a(ctx: object) -> None: ...

    with pytest.raises(ConfigurationError, match="already registered"):
        consumer.register("a", a)
    with pytest.raises(ConfigurationError, match="invalid task type"):
        consumer.register("", a)
    with pytest.raises(TypeError):
        consumer.register("b", 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no DSN"):
        consumer.run()
    with pytest.raises(ConfigurationError, match="no handlers"):
        Consumer().run("postgresql://x")


def test_which_notifications_wake_the_worker() -> None:
    mine = {"default", "mail"}
    assert relevant('["mail"]', mine)
    assert relevant('["other", "default"]', mine)
    assert not relevant('["other"]', mine)
    assert not relevant("[]", mine)
    # Not a list of queue names (a "*", someone else's payload): wake up, to be safe.
    assert relevant("*", mine)
    assert relevant('{"queue": "other"}', mine)
    # The wake-up as pgtasq sends it: an object whose queues are a list or "*".
    assert relevant('{"queues": ["mail"], "count": 1, "ids": [1]}', mine)
    assert not relevant('{"queues": ["other"], "count": 1, "ids": [1]}', mine)
    assert relevant('{"queues": "*", "count": 900, "ids": []}', mine)
    # Another worker checking that its LISTEN works: nothing to claim.
    assert not relevant('{"pgtasq_probe": "3f2a"}', mine)
    assert relevant("", mine)


@pytest.mark.parametrize(
    "payload",
    [
        '[{"a": 1}]',  # not hashable: `in` a frozenset raised TypeError
        '["other", ["mail"]]',
        "[1]",
        "[null]",
        '["other", {"a": 1}]',
        "[" * 5000 + "]" * 5000,  # deeper than the JSON parser's recursion
        "[[[[" * 2000,
    ],
    ids=["object", "list", "int", "null", "name-and-object", "deep", "deep-unclosed"],
)
@pytest.mark.parametrize("queues", [{"default", "mail"}, frozenset({"default", "mail"})])
def test_odd_notifications_wake_the_worker_and_never_raise(
    payload: str, queues: set[str] | frozenset[str]
) -> None:
    assert relevant(payload, queues) is True


def test_prepare_and_listen_dsn_are_checked_before_running() -> None:
    with pytest.raises(ConfigurationError, match="prepare must be True or False"):
        Consumer(prepare="no")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="listen_dsn"):
        Consumer(listen_dsn="")
    consumer = Consumer(prepare=False, listen_dsn="postgresql://direct/db")
    assert (consumer.settings.prepare, consumer.settings.listen_dsn) == (
        False,
        "postgresql://direct/db",
    )
    consumer.configure(prepare=None, listen_dsn=None)  # None: keep what the app said
    assert (consumer.settings.prepare, consumer.settings.listen_dsn) == (
        False,
        "postgresql://direct/db",
    )


def test_pooled_connections_never_prepare_when_asked() -> None:
    from pgtasq._pool import connection_kwargs

    assert connection_kwargs(prepare=True) == {"autocommit": True}
    assert connection_kwargs(prepare=False) == {"autocommit": True, "prepare_threshold": None}
    with pytest.raises(ConfigurationError):
        connection_kwargs(prepare=0)  # type: ignore[arg-type]
