"""What the worker tells its metrics, and the recorder that does nothing with it.

The worker's engine calls one method of its `Recorder` per event (a task started, an outcome
recorded, a claim, a flush, a database error). `Recorder` itself does nothing: it is what a
worker without metrics has, so metrics off cost one empty method call per event and no
import of prometheus-client. `pgtasq.metrics.WorkerMetrics` is the one that counts.

`LabelCap` keeps label values bounded: queue and type names come from the tasks, so a
worker that meets an unbounded number of them reports the first ``limit`` and puts the rest
under `OTHER_LABEL`.
"""

from __future__ import annotations

from datetime import datetime

from pgtasq.errors import ConfigurationError

LABEL_VALUES_MAX_DEFAULT = 200
OTHER_LABEL = "other"


class Recorder:
    """The worker's metrics hooks; this base records nothing (metrics off)."""

    enabled = False

    def task_started(self, queue: str, task_type: str, run_at: datetime, claimed: datetime) -> None:
        """A handler starts: the task was due at ``run_at`` and claimed at ``claimed``."""

    def task_ended(self, queue: str, task_type: str, seconds: float) -> None:
        """A handler returned, raised or was cancelled after ``seconds``."""

    def task_outcome(self, queue: str, task_type: str, outcome: str) -> None:
        """What the worker recorded for a task: completed, failed, retried, released, or
        cancelled (the task was cancelled or taken away while its handler ran)."""

    def tasks_rescued(self, count: int) -> None:
        """This worker's rescuer took back ``count`` tasks whose lease had expired."""

    def claimed(self, count: int) -> None:
        """One claim returned ``count`` tasks."""

    def slots(self, running: int, free: int) -> None:
        """Handlers running now, and free handler slots (called often: keep it cheap)."""

    def flushed(self, seconds: float, count: int) -> None:
        """One flush wrote ``count`` outcomes in ``seconds``."""

    def database_error(self, operation: str) -> None:
        """The database was unreachable for ``operation`` (claim, flush)."""

    def database_ok(self) -> None:
        """A claim reached the database."""

    def apply(self) -> None:
        """Bring the metrics up to date with the events recorded so far (batched recorders)."""


class LabelCap:
    """The first ``limit`` distinct values pass; later new ones become `OTHER_LABEL`."""

    def __init__(self, limit: int = LABEL_VALUES_MAX_DEFAULT) -> None:
        if limit < 1:
            raise ConfigurationError(f"label_values_max must be >= 1, got {limit!r}")
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER_LABEL
        self._seen.add(value)
        return value
