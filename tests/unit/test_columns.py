"""Every place that spells out the task's columns by hand agrees with `_columns.COLUMNS`.

Adding a column (or a Task option) is a row in `pgtasq._columns.COLUMNS`; each test here
that then fails names the place left to edit. tests/integration/test_columns.py compares
the table with a migrated database.
"""

from __future__ import annotations

import dataclasses
import inspect
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pgtasq import Schedule, Task, TaskInfo, _columns, _enqueue, _sql
from pgtasq.models import _pending_info
from pgtasq.tables import TASKS_TABLE, metadata

OPTIONS = _columns.TASK_OPTIONS
BUT_DELAY = tuple(name for name in OPTIONS if name != "delay")  # run_at or delay, not both
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _values() -> dict[str, Any]:
    """A valid, non-default value for every Task option (run_at and delay exclude each
    other: `_task_setting` picks one)."""
    return {
        "queue": "q",
        "type": "t",
        "payload": {"a": 1},
        "priority": 3,
        "run_at": NOW,
        "delay": 5.0,
        "max_attempts": 7,
        "timeout": 11.0,
        "deadline": NOW + timedelta(days=1),
        "idempotency_key": "k",
        "retention": 13.0,
        "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "unique_key": "u",
        "unique_for": 17.0,
    }


def _task_setting(*names: str) -> Task:
    """A task that sets these options (beyond its type and payload) and no other."""
    values = _values()
    missing = set(OPTIONS) - set(values)
    assert not missing, f"add a value for {sorted(missing)} to _values() in this test"
    options = {n: values[n] for n in names if n not in ("type", "payload")}
    return Task(values["type"], values["payload"], **options)


def test_task_fields_are_the_insert_params() -> None:
    fields = tuple(f.name for f in dataclasses.fields(Task))
    assert set(fields) == set(OPTIONS), (
        "edit models.Task (its fields) or the params of _columns.COLUMNS: "
        f"Task has {sorted(set(fields) - set(OPTIONS))}, "
        f"the table {sorted(set(OPTIONS) - set(fields))}"
    )


def test_task_init_takes_and_stores_every_option() -> None:
    signature = inspect.signature(Task.__init__)
    params = [p for p in signature.parameters if p != "self"]
    assert set(params) == set(OPTIONS), (
        "edit models.Task.__init__ (written by hand): its parameters must be the Task fields"
    )
    defaults = {f.name: f.default for f in dataclasses.fields(Task)}
    for name in params[2:]:
        assert signature.parameters[name].default == defaults[name], (
            f"edit models.Task.__init__: the default of {name} differs from the field's"
        )
    task = _task_setting(*BUT_DELAY)
    assert set(task.__dict__) == set(OPTIONS), (
        "edit models.Task.__init__: the dict it stores must hold every field"
    )
    for name in set(OPTIONS) - {"delay"}:
        assert getattr(task, name) == _values()[name], f"edit models.Task.__init__: {name}"


def test_task_info_fields_are_the_columns() -> None:
    fields = tuple(f.name for f in dataclasses.fields(TaskInfo) if f.name != "created")
    assert fields == _columns.NAMES, (
        "edit models.TaskInfo (its fields, in the table's order) and TaskInfo.from_row"
    )


def test_task_info_reads_a_row_of_every_column() -> None:
    row = {name: None for name in _columns.NAMES}
    row.update(payload="1", status="pending", errors="[]", result=None, id=1)
    info = TaskInfo.from_row(row)
    assert set(info.__dict__) == {*_columns.NAMES, "created"}, "edit models.TaskInfo.from_row"


def test_pending_info_sets_every_field() -> None:
    task = _task_setting(*BUT_DELAY)
    info = _pending_info(task, 1, NOW, NOW)
    fields = {f.name for f in dataclasses.fields(TaskInfo)}
    assert set(info.__dict__) == fields, (
        "edit models._pending_info (and _PENDING_FIELDS): it must set every TaskInfo field, "
        f"missing {sorted(fields - set(info.__dict__))}"
    )
    for name in set(OPTIONS) - {"type", "payload", "delay", "run_at", "unique_for"}:
        expected = getattr(task, name)
        if isinstance(getattr(info, name), timedelta):
            expected = timedelta(seconds=expected)
        assert getattr(info, name) == expected, f"edit models._pending_info: {name}"
    # unique_for (a period) is stored as the moment it ends, counted from created_at
    assert info.unique_until == NOW + timedelta(seconds=17), "edit models._pending_info"


def test_insert_arrays_are_the_statement_arrays() -> None:
    task = _task_setting(*BUT_DELAY)
    arrays = _enqueue.insert_arrays([task], ['{"a":1}'])
    assert list(arrays) == [name for name, _ in _columns.INSERT_ARRAYS], (
        "edit _enqueue.insert_arrays: one array per _columns.INSERT_ARRAYS, in that order"
    )
    for name in set(OPTIONS) - {"payload", "delay"}:
        assert arrays[name] != [None], f"edit _enqueue.insert_arrays: {name} is not sent"


def test_one_params_are_the_statement_params() -> None:
    task = _task_setting(*BUT_DELAY)
    params = _enqueue.one_params(task, '{"a":1}')
    assert set(params) == set(OPTIONS), "edit _enqueue.one_params: one entry per Task option"
    for name in set(OPTIONS) - {"payload", "delay"}:
        assert params[name] is not None, f"edit _enqueue.one_params: {name} is not sent"
    text = _sql.statements("pgtasq").task_insert_one.text
    for name in OPTIONS:
        assert f"%({name})s" in text


@pytest.mark.parametrize("column", _columns.COPY_COLUMNS_OPTIONAL)
def test_copy_sends_an_optional_column_when_a_task_sets_it(column: str) -> None:
    spec = next(c for c in _columns.COLUMNS if c.name == column)
    for param in spec.params:
        task = _task_setting(param.name)
        columns = _enqueue.copy_columns([task, Task("t")])
        assert columns == (*_columns.COPY_COLUMNS, column), (
            f"edit _enqueue.copy_columns: a task setting {param.name} needs the column {column}"
        )
        (row,) = "".join(
            _enqueue.copy_chunks(
                [task], ["1"], [1], columns, [NOW], {"q": "q", "t": "t", "default": "default"}
            )
        ).splitlines()
        assert len(row.split("\t")) == len(columns), (
            "edit _enqueue.copy_chunks / copy_optional: one field per COPY column"
        )
        assert row.split("\t")[-1] != "\\N", f"edit _enqueue.copy_optional: {column} not sent"


def test_copy_sends_the_columns_every_row_has() -> None:
    (row,) = "".join(
        _enqueue.copy_chunks(
            [Task("t")], ["1"], [1], _columns.COPY_COLUMNS, None, {"t": "t", "default": "default"}
        )
    ).splitlines()
    assert row.split("\t") == ["1", "default", "t", "1", "0", "5"], (
        "edit _enqueue.copy_chunks: its row must be _columns.COPY_COLUMNS, in that order"
    )
    assert _enqueue.copy_columns([Task("t")]) == _columns.COPY_COLUMNS


def test_every_option_reaches_an_enqueue_of_each_kind() -> None:
    """A Task option that no column takes would be dropped silently."""
    for column in _columns.INSERTED:
        assert column.value and column.bulk, f"_columns.COLUMNS: {column.name} needs both"
        assert column.copy is not None or column.name in _columns.KEY_COLUMNS, (
            f"_columns.COLUMNS: say how task_insert_copy sends {column.name}, "
            "and edit _enqueue.copy_columns / copy_optional"
        )


def test_schedule_options_are_the_table_s() -> None:
    entry = Schedule("* * * * *", _task_setting("queue", "priority", "max_attempts"))
    assert set(entry.options()) == set(_columns.SCHEDULE_OPTIONS), (
        "edit scheduler.Schedule.options (and what the scheduler reads back from it), or the "
        "schedule flag of the column's Param in _columns.COLUMNS"
    )


def test_tables_describe_the_columns() -> None:
    table = metadata("pgtasq").tables[f"pgtasq.{TASKS_TABLE}"]
    assert tuple(table.columns.keys()) == _columns.NAMES, (
        "edit tables.metadata (the tasks table, in the order of _columns.COLUMNS), then write "
        "a migration (tests/integration/test_columns.py compares the database)"
    )


def test_preview_reads_the_same_columns() -> None:
    assert [c.previewed.split(" AS ")[-1] for c in _columns.COLUMNS] == list(_columns.NAMES)
    assert [c.selected.split(" AS ")[-1] for c in _columns.COLUMNS] == list(_columns.NAMES)


def test_architecture_doc_lists_the_columns() -> None:
    text = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    section = text.split("One table per schema, `<schema>.tasks`:", 1)[1].split("\n\n")[1]
    named = [
        name.strip(" `")
        for line in section.splitlines()[2:]
        for name in line.split("|")[1].split(",")
    ]
    assert named == list(_columns.NAMES), (
        "edit docs/architecture.md (The row): one line per column of _columns.COLUMNS"
    )


# Task options `pgtasq enqueue` does not offer (yet): a new option lands here or in the CLI.
CLI_NOT_OFFERED = {"run_at", "timeout", "deadline", "retention"}


def test_cli_enqueue_offers_the_options() -> None:
    from pgtasq._cli_tasks import enqueue

    offered = {"type" if p.name == "task_type" else p.name for p in enqueue.params}
    offered -= {"as_json"}
    assert offered | CLI_NOT_OFFERED == set(OPTIONS), (
        "edit _cli_tasks.enqueue (an option and its PGTASQ_ENQUEUE_* variable), or list the "
        f"option in CLI_NOT_OFFERED in this test: {sorted(set(OPTIONS) - offered)}"
    )
    assert not offered & CLI_NOT_OFFERED, "the CLI offers it now: drop it from CLI_NOT_OFFERED"
