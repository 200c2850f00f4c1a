"""What becomes of a claimed task when its handler ends: the worker's outcome policy, as
plain functions of plain values (no I/O, no clock: ``now`` is passed in).

`decide` maps how a run ended (`Ended`) and the task as claimed to the write that records it
(an `Outcome` for `pgtasq._outcomes.OutcomeWriter`), or to None when nothing may be written:

======================  =======================================================================
how the run ended       the write
======================  =======================================================================
``RETURNED``            completed, with the result (and a note entry if it was cleaned)
``COMMITTED``           nothing: `TaskContext.complete` committed it in the handler's transaction
``RETRY_IN``            pending after the handler's delay (clamped), the attempt given back
``RAISED``              failed when ``final`` or, if the error counts, when no attempt is left;
                        else pending after ``retry_delay()`` (clamped) with the error entry, the
                        attempt given back when the error does not count (``is_failure``)
``TIMED_OUT``           as ``RAISED`` with an error that always counts; failed at once when the
                        task's deadline has passed (``now``)
``CANCELLED``           release: back to pending, the attempt given back (a shutdown)
``LOST``                nothing: the task was taken away, another claim owns it
======================  =======================================================================

`time_limit` gives the seconds a handler may run (its timeout and its deadline). What calls
the user's hooks (``on_error``, ``is_failure``, ``retry_delay``) and formats error entries is
`pgtasq._finishing.Finisher`; it hands the results here.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from pgtasq._outcomes import Outcome, clamp_delay

if TYPE_CHECKING:
    from pgtasq.models import TaskInfo


class How(enum.Enum):
    """How a run of a handler ended (see the module docstring's table)."""

    RETURNED = "returned"
    COMMITTED = "committed"
    RETRY_IN = "retry_in"
    RAISED = "raised"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"


RETURNED = How.RETURNED
COMMITTED = How.COMMITTED
RETRY_IN = How.RETRY_IN
RAISED = How.RAISED
TIMED_OUT = How.TIMED_OUT
CANCELLED = How.CANCELLED
LOST = How.LOST


@dataclasses.dataclass(slots=True)
class Ended:
    """How one run of a handler ended, with what `decide` needs besides the task.

    ``result``: the stored JSON of a ``RETURNED`` run. ``error``: the ``errors`` entry
    (``RAISED``, ``TIMED_OUT``; for ``RETURNED`` a note, such as characters replaced).
    ``counts``: the error counts as a failed attempt (``is_failure``). ``final``: fail
    whatever attempts are left (`SkipRetry`, a result that cannot be stored, a deadline
    passed before the start). ``delay``: a ``RETRY_IN`` run's seconds.
    """

    how: How
    result: str | None = None
    error: str | None = None
    counts: bool = True
    final: bool = False
    delay: float = 0.0


def decide(
    ended: Ended,
    task: TaskInfo,
    now: datetime,
    retry_delay: Callable[[], float] | None = None,
) -> Outcome | None:
    """The write that records ``ended`` for ``task`` (as claimed: its ``attempted_at`` is
    the claim's fence), or None when nothing may be written. See the module docstring.

    ``retry_delay()`` is called only when the task is to run again after an error, so a
    user's hook runs only when its answer is used; any float it returns is clamped to what
    the row can hold (`clamp_delay`). Without one, such a retry is due at once.
    """
    how = ended.how
    if how is RETURNED:
        return returned(task, ended.result, ended.error)
    claimed_at = task.attempted_at
    assert claimed_at is not None, "a claimed task has attempted_at"
    if how is RAISED or how is TIMED_OUT:
        final = ended.final or (
            how is TIMED_OUT and task.deadline is not None and task.deadline <= now
        )
        counts = ended.counts or how is TIMED_OUT
        if final or (counts and task.attempts >= task.max_attempts):
            return Outcome(task.id, claimed_at, "failed", error=ended.error, attempt=task.attempts)
        delay = 0.0 if retry_delay is None else clamp_delay(float(retry_delay()))
        return Outcome(
            task.id,
            claimed_at,
            "pending",
            delay=delay,
            refund=0 if counts else 1,
            error=ended.error,
            attempt=task.attempts,
        )
    if how is RETRY_IN:
        return Outcome(task.id, claimed_at, "pending", delay=clamp_delay(ended.delay), refund=1)
    if how is CANCELLED:
        return Outcome(task.id, claimed_at, "release")
    assert how is LOST or how is COMMITTED, how
    return None


def returned(task: TaskInfo, result: str | None, note: str | None) -> Outcome:
    """``decide(Ended(RETURNED, result=result, error=note), task, now)``, without the
    `Ended`: the worker's hot path (a test pins the two together)."""
    claimed_at = task.attempted_at
    assert claimed_at is not None, "a claimed task has attempted_at"
    return Outcome(
        task.id, claimed_at, "completed", result=result, error=note, attempt=task.attempts
    )


def time_limit(task: TaskInfo, now: datetime) -> float | None:
    """Seconds ``task``'s handler may run from ``now``: the shorter of its timeout and the
    time left to its deadline (0 when that has passed), or None when it has neither."""
    limits = []
    if task.timeout is not None:
        limits.append(task.timeout.total_seconds())
    if task.deadline is not None:
        limits.append((task.deadline - now).total_seconds())
    return max(0.0, min(limits)) if limits else None
