"""What the claim loop decides, as plain functions: which queues to claim from, in which
order, and how many tasks a claim may take (backpressure). `pgtasq._runtime` runs them."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

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
