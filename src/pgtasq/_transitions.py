"""The Client's state changes, written once: from which states, what they set, what they tell.

`TRANSITIONS` is the one description of ``cancel``, ``retry``, ``delete`` and ``run``. From it
come the single-task statements (`task_cancel`, `task_retry`, `task_delete`, `task_run`) and
the bulk ones
(`pgtasq._sql.task_bulk`), the errors the Client raises for a refused change (`refusals`),
and the table of what each operation does by the task's state, which the `pgtasq.client`
docstring and docs/monitoring.md hold (tests/unit/test_transitions.py checks both).

The worker's own changes (claim, outcomes, release, rescue) fence on its claim rather than
on a state, and live with the worker's statements (`pgtasq._sql_worker`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pgtasq.errors import (
    PgtasqError,
    TaskAlreadyAvailable,
    TaskAlreadyFinalized,
    TaskNotFound,
    TaskRunning,
)
from pgtasq.models import TaskStatus

P, R, C, F, X = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)


@dataclasses.dataclass(frozen=True)
class Transition:
    """One change the Client makes, by id (`task_<action>`) or by filter (`task_bulk`).

    ``sets``: the SET list of the UPDATE (``t`` is the row), or None for a DELETE. ``event``:
    the task event sent on the events channel for the changed rows (see `Client.events`);
    ``wake``: the rows are ready again, so a wake-up goes out (which is also the
    ``enqueued`` event). ``refusals``: the error raised for a task in one of these states;
    a state neither left nor refused is a no-op that returns the task as it is.
    ``guard``: a condition on the row (SQL, its columns unqualified) that a task in one of
    ``from_states`` must also meet to change; one that does not is refused with ``unmet``.
    ``outcome`` and ``notes`` describe the result for the docs' table.
    """

    action: str
    from_states: frozenset[TaskStatus]
    sets: str | None
    event: str | None
    wake: bool
    refusals: Mapping[TaskStatus, type[PgtasqError]]
    outcome: str
    notes: Mapping[TaskStatus, str] = dataclasses.field(default_factory=dict)
    guard: str | None = None
    unmet: type[PgtasqError] | None = None

    def __post_init__(self) -> None:
        assert not self.from_states & set(self.refusals), f"{self.action}: left and refused"
        assert (self.guard is None) == (self.unmet is None), f"{self.action}: guard and unmet"

    def refused(self, state: str, ready: bool) -> type[PgtasqError] | None:
        """The error for a task found in ``state`` (a value) whose guard was ``ready``."""
        error = refusals(self.action).get(state)
        if error is None and not ready and self.unmet is not None:
            return self.unmet
        return error

    def result(self, state: TaskStatus) -> str:
        """What the operation does to a task in ``state``: its outcome, an error, no change."""
        if state in self.refusals:
            return self.refusals[state].__name__
        if state in self.from_states:
            note = self.notes.get(state)
            done = f"{self.outcome} ({note})" if note else self.outcome
            return f"{done}, else {self.unmet.__name__}" if self.unmet is not None else done
        return "no change"


TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in (
        Transition(
            "cancel",
            frozenset({P, R, F}),
            sets="status = 'cancelled', finalized_at = now(), locked_by = NULL, "
            "locked_until = NULL,\n        updated_at = now()",
            event="cancelled",
            wake=False,
            refusals={C: TaskAlreadyFinalized},
            outcome="cancelled",
            notes={R: "its handler is cancelled"},
        ),
        Transition(
            "retry",
            frozenset({F, X}),
            sets="status = 'pending', finalized_at = NULL, run_at = now(), updated_at = now(),\n"
            "        max_attempts = greatest(t.max_attempts, t.attempts + 1),\n"
            # locked_* are already NULL for failed/cancelled rows; said again so that the
            # CHECKs hold for the row PostgreSQL builds before it re-reads one a worker
            # changed concurrently
            "        locked_by = NULL, locked_until = NULL",
            event=None,
            wake=True,
            refusals={P: TaskAlreadyAvailable, R: TaskRunning, C: TaskAlreadyFinalized},
            outcome="pending",
            notes={F: "at least one attempt left", X: "at least one attempt left"},
        ),
        Transition(
            "delete",
            frozenset({P, C, F, X}),
            sets=None,
            event="deleted",
            wake=False,
            refusals={R: TaskRunning},
            outcome="deleted",
        ),
        Transition(
            "run",
            frozenset({P}),
            sets="run_at = now(), updated_at = now()",
            event=None,
            wake=True,
            refusals={
                R: TaskRunning,
                C: TaskAlreadyFinalized,
                F: TaskAlreadyFinalized,
                X: TaskAlreadyFinalized,
            },
            outcome="pending",
            notes={P: "due now, if its run_at was later"},
            guard="run_at > now()",
            unmet=TaskAlreadyAvailable,
        ),
    )
}


def states_sql(column: str, states: frozenset[TaskStatus]) -> str:
    """``column`` is one of ``states``: ``<>`` the one state left out, else ``IN (…)``."""
    others = [s for s in TaskStatus if s not in states]
    if len(others) == 1:
        return f"{column} <> '{others[0].value}'"
    listed = ", ".join(f"'{s.value}'" for s in TaskStatus if s in states)
    return f"{column} IN ({listed})"


def refusals(action: str) -> Mapping[str, type[PgtasqError]]:
    """The Client's errors for ``action``, by the state (its value) the task was in."""
    return {state.value: error for state, error in TRANSITIONS[action].refusals.items()}


MISSING = TaskNotFound


def state_table() -> list[list[str]]:
    """The table of what each operation does by state: a header row, one row per state and
    one for a missing task."""
    actions = list(TRANSITIONS)
    rows = [["status", *(f"{a}_task" for a in actions)]]
    rows += [[s.value, *(TRANSITIONS[a].result(s) for a in actions)] for s in TaskStatus]
    rows.append(["missing", *(MISSING.__name__ for _ in actions)])
    return rows


def state_table_rst() -> str:
    """`state_table` as a reStructuredText simple table (the `pgtasq.client` docstring's)."""
    rows = state_table()
    head, body = rows[0], rows[1:]
    widths = [max(len(head[i]) + 1, *(len(row[i]) for row in body)) for i in range(len(head))]
    rule = "  ".join("=" * w for w in widths)

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    header = line([f" {cell}" for cell in head])
    return "\n".join([rule, header, rule, *map(line, body), rule])


def state_table_markdown() -> str:
    """`state_table` as a Markdown table, error names as code (docs/monitoring.md's)."""
    errors = {MISSING.__name__} | {
        e.__name__ for t in TRANSITIONS.values() for e in (*t.refusals.values(), t.unmet) if e
    }

    def code(cell: str) -> str:
        if cell in errors:
            return f"`{cell}`"
        head, sep, tail = cell.rpartition(", else ")
        return f"{head}, else `{tail}`" if sep and tail in errors else cell

    rows = [[code(cell) for cell in row] for row in state_table()]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)
