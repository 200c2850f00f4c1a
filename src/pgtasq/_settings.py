"""How one consumer process works (`Settings`), checked in one place.

`Consumer(...)`, `Consumer.configure(...)` and the options of ``pgtasq worker`` all end in
`Settings.build`, which checks every value and derives what was left to the lease:

- ``heartbeat_interval``: a sixth of the lease, at most `HEARTBEAT_INTERVAL_DEFAULT` (1 s);
  a lease is extended once a third of it has passed, so two beats may be lost in a row;
- ``rescue_interval``: a quarter of the lease, at most `RESCUE_INTERVAL_DEFAULT` (1 s); a
  dead worker's tasks are pending again at most about lease + 1.25 s (the jitter) after its
  last heartbeat.

So any lease of at least `LEASE_MIN` seconds works with the defaults. The rescue statement
reaches the expired leases through the partial index on running rows' ``locked_until``, so
running it every second costs an index probe that finds nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pgtasq._dsn import normalize
from pgtasq._limits import duration_problem, text_problem
from pgtasq._records import RESULT_MAX_BYTES_LIMIT
from pgtasq._services import HEARTBEAT_INTERVAL_DEFAULT, RESCUE_INTERVAL_DEFAULT
from pgtasq.errors import ConfigurationError
from pgtasq.models import NAME_MAX_LENGTH

LEASE_MIN = 1.0
CONCURRENCY_MAX = 10_000
BATCH_SIZE_MAX = 10_000

Queues = str | Sequence[str] | Mapping[str, int]


def heartbeat_interval_for(lease: float) -> float:
    """The heartbeat interval a lease gets when none is given."""
    return min(HEARTBEAT_INTERVAL_DEFAULT, lease / 6)


def rescue_interval_for(lease: float) -> float:
    """The rescue interval a lease gets when none is given."""
    return min(RESCUE_INTERVAL_DEFAULT, lease / 4)


def parse_queues(queues: Queues) -> tuple[tuple[str, int], ...]:
    """``"a"``, ``["a", "b"]``, ``{"a": 6, "b": 1}`` or ``"a=6,b=1"`` -> ((name, weight), …)."""
    if isinstance(queues, str):
        items: list[tuple[str, int]] = []
        for part in queues.split(","):
            name, _, weight_text = part.strip().partition("=")
            try:
                items.append((name.strip(), int(weight_text) if weight_text else 1))
            except ValueError:
                raise ConfigurationError(f"queue weight must be an integer: {part!r}") from None
    elif isinstance(queues, Mapping):
        items = [(str(k), v) for k, v in queues.items()]
    else:
        items = [(str(q), 1) for q in queues]
    if not items:
        raise ConfigurationError("a consumer needs at least one queue")
    seen: set[str] = set()
    for name, weight in items:
        if not name or len(name) > NAME_MAX_LENGTH or text_problem(name) is not None:
            raise ConfigurationError(f"invalid queue name {name!r}")
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise ConfigurationError(
                f"queue {name!r}: weight must be an integer >= 1, got {weight!r}"
            )
        if name in seen:
            raise ConfigurationError(f"queue {name!r} is listed twice")
        seen.add(name)
    return tuple(items)


def _seconds(name: str, value: object, *, minimum: float = 0.0, zero: bool = False) -> float:
    """A finite number of seconds above ``minimum`` (or equal to it with ``zero``)."""
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= minimum if zero or minimum > 0 else value > minimum)
    )
    if not ok:
        bound = f">= {minimum:g}" if zero or minimum > 0 else f"> {minimum:g}"
        raise ConfigurationError(f"{name} must be a number of seconds {bound}, got {value!r}")
    problem = None if value == 0 else duration_problem(value)  # at most 100 years
    if problem is not None:
        raise ConfigurationError(f"{name} {problem}")
    return float(value)  # type: ignore[arg-type]


def _count(name: str, value: object, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise ConfigurationError(f"{name} must be an integer from 1 to {maximum}, got {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def _listen_dsn(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError("listen_dsn must be a non-empty DSN string, or None")
    return None if value is None else normalize(value)  # checked, and never echoed


@dataclasses.dataclass(frozen=True)
class Settings:
    """How one consumer process works; build it with `build`, which checks every value."""

    queues: tuple[tuple[str, int], ...]
    strict: bool
    concurrency: int
    batch_size: int
    lease: float
    heartbeat_interval: float
    poll_interval: float
    flush_interval: float
    shutdown_timeout: float
    rescue_interval: float
    listen: bool
    clean_interval: float
    retention_default: float
    events: bool
    result_max_bytes: int
    listen_dsn: str | None
    prepare: bool

    @classmethod
    def build(
        cls,
        *,
        queues: Queues,
        heartbeat_interval: float | None,
        rescue_interval: float | None,
        **options: Any,
    ) -> Settings:
        """Check every value; a ``heartbeat_interval`` or ``rescue_interval`` of None is
        derived from the lease (`heartbeat_interval_for`, `rescue_interval_for`)."""
        lease = _seconds("lease", options.pop("lease"), minimum=LEASE_MIN, zero=True)
        if heartbeat_interval is None:
            heartbeat = heartbeat_interval_for(lease)
        else:
            heartbeat = _seconds("heartbeat_interval", heartbeat_interval)
            if heartbeat >= lease / 2:
                raise ConfigurationError(
                    f"heartbeat_interval ({heartbeat:g} s) must be under half the lease "
                    f"({lease:g} s), or leases expire while the worker is alive"
                )
        if rescue_interval is None:
            rescue = rescue_interval_for(lease)
        else:
            rescue = _seconds("rescue_interval", rescue_interval)
        return cls(
            queues=parse_queues(queues),
            strict=bool(options.pop("strict")),
            concurrency=_count("concurrency", options.pop("concurrency"), CONCURRENCY_MAX),
            batch_size=_count("batch_size", options.pop("batch_size"), BATCH_SIZE_MAX),
            lease=lease,
            heartbeat_interval=heartbeat,
            rescue_interval=rescue,
            shutdown_timeout=_seconds(
                "shutdown_timeout", options.pop("shutdown_timeout"), zero=True
            ),
            poll_interval=_seconds("poll_interval", options.pop("poll_interval")),
            flush_interval=_seconds("flush_interval", options.pop("flush_interval")),
            clean_interval=_seconds("clean_interval", options.pop("clean_interval")),
            retention_default=_seconds("retention_default", options.pop("retention_default")),
            listen=bool(options.pop("listen")),
            events=bool(options.pop("events")),
            result_max_bytes=_count(
                "result_max_bytes", options.pop("result_max_bytes"), RESULT_MAX_BYTES_LIMIT
            ),
            listen_dsn=_listen_dsn(options.pop("listen_dsn")),
            prepare=_flag("prepare", options.pop("prepare")),
            **options,  # nothing left: an unknown option is a TypeError here
        )
