"""The hot statements (claim, finish, heartbeat, enqueue) are pinned, byte for byte.

They are rendered from tables (`pgtasq._columns`) and builders; an edit of either that
changes one of them fails here with the difference. If the change is meant: measure
``bench/run.py --workload drain -n 20000`` and ``enqueue1``/``enqueueB`` before and after,
run tests/integration/test_plans.py, then rewrite the pinned texts with
``PGTASQ_UPDATE_PINNED=1 pytest tests/unit/test_hot_statements.py``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from pgtasq import _sql

PINNED = Path(__file__).parent / "hot_statements"
HOT = (
    "task_claim",
    "queue_ready",
    "task_heartbeat",
    "task_finish_many",
    "task_finish_many_in_tx",
    "task_release_many",
    "task_rescue_expired",
    "task_insert",
    "task_insert_one",
    "task_insert_one_idempotent",
    "task_insert_one_keyless",
    "task_insert_copy_ids",
)


@pytest.mark.parametrize("events", [False, True])
@pytest.mark.parametrize("name", HOT)
def test_hot_statement_is_pinned(name: str, events: bool) -> None:
    text = getattr(_sql.statements("pgtasq", worker_events=events), name).text
    path = PINNED / (f"{name}.events.sql" if events else f"{name}.sql")
    if events and text == _sql.statements("pgtasq").__getattribute__(name).text:
        path = PINNED / f"{name}.sql"  # the same with and without worker events
    if os.environ.get("PGTASQ_UPDATE_PINNED"):
        PINNED.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no pinned text for {name}: see this module's docstring"
    pinned = path.read_text()
    diff = "\n".join(difflib.unified_diff(pinned.splitlines(), text.splitlines(), lineterm=""))
    assert text == pinned, f"{name} changed (see this module's docstring):\n{diff}"


def test_copy_statement_is_pinned() -> None:
    columns = _sql.COPY_COLUMNS + _sql.COPY_COLUMNS_OPTIONAL
    assert _sql.task_insert_copy("pgtasq", columns).text == (
        "COPY pgtasq.tasks (id, queue, type, payload, priority, max_attempts, run_at, timeout, "
        "deadline, retention, headers) FROM STDIN"
    )
