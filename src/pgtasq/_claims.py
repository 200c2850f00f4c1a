"""What the claim loop decides, as plain values and functions: which queues to claim from,
in which order, how many tasks a claim may take (backpressure), when to claim again and when a
burst is drained (`ClaimPlanner`). `pgtasq._runtime` runs the claims it plans."""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Callable, Sequence

CLAIMS_IN_FLIGHT_MAX = 2  # claims under way at once (see ClaimPlanner)
# A worker on this many queues or more asks which of them have ready tasks (one statement,
# `queue_ready`) before it claims, instead of trying each queue with a claim of its own:
# an idle worker on 2000 queues then polls with one statement, not 2000.
PROBE_QUEUES_MIN = 5


def queue_order(
    queues: Sequence[tuple[str, int]], strict: bool, rand: Callable[[], float] = random.random
) -> list[str]:
    """The order to claim from queues in, for one claim.

    Strict: highest weight first, always. Weighted: a weighted draw without replacement, so
    with weights 6/3/1 each queue comes first 60/30/10 % of the time and none starves.
    """
    if strict or len(queues) == 1:
        return [name for name, _ in sorted(queues, key=lambda q: -q[1])]
    remaining = list(queues)
    order = []
    while remaining:
        pick = rand() * sum(weight for _, weight in remaining)
        index = len(remaining) - 1
        for i, (_, weight) in enumerate(remaining):
            pick -= weight
            if pick < 0:
                index = i
                break
        order.append(remaining.pop(index)[0])
    return order


def unrecorded_max(concurrency: int) -> int:
    """The most tasks a worker holds claimed and not yet recorded (backpressure).

    Running handlers (at most ``concurrency``), claims under way, and finished tasks whose
    outcome waits to be written (up to ``concurrency`` of them beyond the running ones).
    """
    return 2 * concurrency


def claim_room(*, concurrency: int, running: int, reserved: int, unwritten: int) -> int:
    """How many tasks a new claim may take now.

    Free handler slots, less the outcomes queued beyond what `unrecorded_max` allows: when
    outcome writes fall behind, the worker stops claiming until they catch up, so a slow
    database makes it slower instead of piling up running rows whose leases then run out.
    """
    return min(
        concurrency - running - reserved,
        unrecorded_max(concurrency) - running - reserved - unwritten,
    )


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim to make: up to ``want`` tasks, planned in ``generation`` (see
    `ClaimPlanner.more_ready`), while the worker was ``idle`` (nothing running or claiming)."""

    want: int
    generation: int
    idle: bool


class Burst(enum.Enum):
    """What a burst worker does next (`ClaimPlanner.burst_step`)."""

    WAIT = "wait"  # tasks run, claims are under way, or more may be ready
    CONFIRM = "confirm"  # write every outcome, then claim once more while idle
    DONE = "done"  # a claim made while idle, after every outcome was written, found nothing


@dataclasses.dataclass
class ClaimPlanner:
    """The claim loop's bookkeeping: how many claims are under way, how much capacity they
    reserved, and whether more tasks may be ready. No I/O; the engine tells it what happens.

    Up to `CLAIMS_IN_FLIGHT_MAX` claims overlap (the database's work on one with Python's on
    the other's rows). Capacity is reserved when a claim is planned, so running + reserved
    never exceeds the concurrency, nor running + reserved + unwritten outcomes
    `unrecorded_max` (`claim_room`). A busy worker waits until it can claim at least
    ``low_water`` tasks, so it claims in batches rather than one by one.
    """

    concurrency: int
    batch_size: int
    more: bool = True  # tasks may be ready: claim until a claim comes back short
    generation: int = 0  # counts `more_ready` calls: a short claim planned earlier is stale
    in_flight: int = 0
    reserved: int = 0
    empty_when_idle: bool = False  # the last claim made while idle found nothing
    confirmed_after: int = -1  # outcomes recorded when a burst last confirmed it was drained

    @property
    def low_water(self) -> int:
        return max(1, min(self.batch_size, self.concurrency) // 2)

    def more_ready(self) -> None:
        """New tasks may be ready (a notification, a poll, a rescue): claim again."""
        self.generation += 1
        self.more = True

    def plan(self, *, running: int, unwritten: int, low_water: int | None = None) -> Claim | None:
        """The next claim to make now, its capacity reserved, or None.

        ``running``: handlers running; ``unwritten``: outcomes not yet written. None when
        nothing may be ready, `CLAIMS_IN_FLIGHT_MAX` claims are under way, or there is no
        room (fewer than ``low_water`` tasks while busy; default `low_water`).
        """
        if not self.more or self.in_flight >= CLAIMS_IN_FLIGHT_MAX:
            return None
        free = claim_room(
            concurrency=self.concurrency,
            running=running,
            reserved=self.reserved,
            unwritten=unwritten,
        )
        want = min(free, self.batch_size)
        busy = running > 0 or self.in_flight > 0
        if want <= 0 or (busy and want < (self.low_water if low_water is None else low_water)):
            return None
        self.reserved += want
        self.in_flight += 1
        return Claim(want, self.generation, not busy)

    def claimed(self, claim: Claim, got: int | None) -> None:
        """``claim`` is over: it took ``got`` tasks (already counted as running), or None
        when it failed (the database was away: claim again)."""
        self.reserved -= claim.want
        self.in_flight -= 1
        if got is None:
            self.more = True
            return
        if got < claim.want and claim.generation == self.generation:
            self.more = False  # drained, unless something new arrived meanwhile
        if got:
            self.empty_when_idle = False
        elif claim.idle:
            self.empty_when_idle = True

    def burst_step(self, *, running: int, recorded: int) -> Burst:
        """Whether a burst (``run(burst=True)``) is drained, given the handlers ``running``
        and the outcomes ``recorded`` so far.

        Done when a claim made while idle, after every outcome was written, found nothing
        (and nothing was recorded since): a retry that is due now gets its turn in the same
        burst. `Burst.CONFIRM` asks the engine to write every outcome; the planner then
        claims once more.
        """
        if running or self.in_flight or self.more:
            return Burst.WAIT
        if self.empty_when_idle and recorded == self.confirmed_after:
            return Burst.DONE
        self.confirmed_after = recorded
        self.empty_when_idle = False
        self.more = True
        return Burst.CONFIRM
