"""When to run a failed task again: plain functions, no I/O.

The default is exponential backoff with "equal jitter" and a cap: attempt n waits between
half and all of ``min(cap, base * 2**(n-1))`` seconds. Jitter keeps a burst of failures
from coming back as a burst of retries. Pass your own ``retry_delay(info, exc) -> seconds``
to the Consumer to override it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgtasq.errors import TaskValidationError

if TYPE_CHECKING:
    from pgtasq.models import TaskInfo

BACKOFF_BASE_DEFAULT = 1.0
BACKOFF_CAP_DEFAULT = 3600.0

RetryDelay = Callable[["TaskInfo", BaseException], float]
"""A user function: the task (with its attempt count) and the error -> seconds to wait."""


def exponential_backoff(
    attempt: int,
    *,
    base: float = BACKOFF_BASE_DEFAULT,
    cap: float = BACKOFF_CAP_DEFAULT,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based)."""
    if attempt < 1:
        raise TaskValidationError("attempt", f"1-based (the first attempt is 1), got {attempt!r}")
    # Cap the exponent first: 2**1000 would overflow a float.
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return ceiling / 2 + rand() * ceiling / 2


def default_retry_delay(info: TaskInfo, exc: BaseException) -> float:
    """The Consumer's default `RetryDelay`: grows with the failed attempts so far (errors
    that did not count as failures still lengthen the wait)."""
    return exponential_backoff(max(info.attempts, len(info.errors) + 1))
