"""The enqueue logic without a database: planning, row matching, COPY text, the step protocol."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pgtasq import DuplicateTask, Task, TaskInfo, TaskStatus, TaskValidationError, _sql
from pgtasq._enqueue import (
    Copy,
    Done,
    Fetch,
    atomic,
    copy_chunks,
    copy_columns,
    copy_interval,
    copy_run_at,
    copy_text,
    copy_timestamp,
    enqueue_steps,
    match,
    may_raise,
    plan,
    resume,
    single,
    single_info,
)
from pgtasq.models import _pending_info, dump_payload

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
STMTS = _sql.statements("pgtasq")


def _row(id_: int, key: str | None = None) -> dict[str, Any]:
    return {"id": id_, "idempotency_key": key, "run_at": T0, "created_at": T0}


def _existing(id_: int, key: str) -> dict[str, Any]:
    return {
        "id": id_, "queue": "default", "type": "old", "payload": '{"old": true}', "priority": 0,
        "status": "running", "run_at": T0, "attempts": 1, "max_attempts": 5, "timeout": None,
        "deadline": None, "idempotency_key": key, "errors": "[]", "result": None,
        "locked_by": "w1", "locked_until": T0, "created_at": T0, "updated_at": T0,
        "attempted_at": T0, "finalized_at": None, "retention": None, "headers": "{}",
        "unique_key": None, "unique_until": None,
    }  # fmt: skip


def test_plan_validates_every_payload_before_anything_runs() -> None:
    tasks = [Task("ok", {"i": 1}), Task("bad", {"x": object()})]
    with pytest.raises(TaskValidationError, match="payload"):
        plan(tasks, 1000, 10)
    with pytest.raises(TypeError, match="Task objects"):
        plan([Task("ok"), "not a task"], 1000, 10)  # type: ignore[list-item]


def test_plan_batches() -> None:
    tasks = [Task("t", i) for i in range(6)] + [Task("t", 6, idempotency_key="k")]
    batches = plan(tasks, 1000, 3)
    assert [len(b.tasks) for b in batches] == [3, 3, 1]
    assert batches[2].payloads == ["6"]
    assert [b.keyed for b in batches] == [False, False, True]


def test_match_pairs_keyless_rows_by_id_order_and_keys_by_key() -> None:
    tasks = [Task("a"), Task("b", idempotency_key="k1"), Task("c"), Task("d", idempotency_key="k1")]
    rows = [_row(12), _row(11, "k1"), _row(10)]  # returned in any order
    infos, taken = match(tasks, rows)
    assert [i.id if i else None for i in infos] == [10, 11, 12, None]
    assert [i.type if i else None for i in infos] == ["a", "b", "c", None]
    assert [t.idempotency_key for t in taken] == ["k1"] and taken[0] is tasks[3]


def _run(flow: Any, answers: list[Any]) -> tuple[list[TaskInfo], list[str]]:
    """Drive a flow with canned answers; returns its result and the steps' statement names."""
    names = []
    step = resume(flow, None)
    for answer in answers:
        assert not isinstance(step, Done), "the flow finished before all answers were used"
        names.append(step.stmt.name)
        step = resume(flow, answer)
    assert isinstance(step, Done), f"the flow asked for more: {step.stmt.name}"
    return step.infos, names


def test_flow_returns_existing_task_for_taken_key() -> None:
    tasks = [Task("new"), Task("dup", idempotency_key="k")]
    flow = enqueue_steps(STMTS, plan(tasks, 1000, 10), "return", copy=True)
    infos, names = _run(flow, [[_row(5)], [_existing(1, "k")]])
    assert names == ["task_insert", "task_select_by_keys"]
    assert [(i.id, i.created) for i in infos] == [(5, True), (1, False)]
    assert infos[1].status is TaskStatus.RUNNING and infos[1].payload == {"old": True}


def test_flow_raises_duplicate_in_raise_mode() -> None:
    flow = enqueue_steps(
        STMTS, plan([Task("dup", idempotency_key="k")], 1000, 10), "raise", copy=True
    )
    with pytest.raises(DuplicateTask) as info:
        _run(flow, [[], [_existing(1, "k")]])
    assert info.value.task_id == 1 and info.value.idempotency_key == "k"


def test_flow_reinserts_when_key_holder_vanished() -> None:
    tasks = [Task("a", idempotency_key="k"), Task("b")]
    flow = enqueue_steps(STMTS, plan(tasks, 1000, 10), "return", copy=False)
    # first insert: key taken; the select finds nothing (deleted); the retry inserts it alone.
    infos, names = _run(flow, [[_row(7)], [], [_row(8, "k")]])
    # "a" has an idempotency key
    assert names == ["task_insert", "task_select_by_keys", "task_insert_one_idempotent"]
    assert [(i.id, i.type, i.created) for i in infos] == [(8, "a", True), (7, "b", True)]


def test_one_task_is_one_plain_insert() -> None:
    flow = enqueue_steps(STMTS, plan([Task("t", {"a": 1}, delay=5)], 1000, 10), "return", copy=True)
    step = resume(flow, None)
    assert isinstance(step, Fetch) and step.stmt is STMTS.task_insert_one_keyless
    assert step.params["payload"] == '{"a":1}' and step.params["delay"] == 5.0
    keyless_columns = {name for name, _ in _sql.INSERT_ARRAYS} - {
        "idempotency_key",
        "unique_key",
        "unique_for",
    }
    assert set(step.params) == keyless_columns
    done = resume(flow, [{"id": 3, "run_at": T0, "created_at": T0}])  # no key column
    assert isinstance(done, Done) and done.infos[0].id == 3


def test_one_keyed_task_is_one_insert_on_conflict() -> None:
    tasks = [Task("t", idempotency_key="k")]
    flow = enqueue_steps(STMTS, plan(tasks, 1000, 10), "return", copy=True)
    step = resume(flow, None)
    assert isinstance(step, Fetch) and step.stmt is STMTS.task_insert_one_idempotent
    assert "ON CONFLICT" in step.stmt.text and "WITH" not in step.stmt.text  # plain VALUES
    assert "ON CONFLICT" not in STMTS.task_insert_one_keyless.text
    assert set(step.params) == {name for name, _ in _sql.INSERT_ARRAYS} - {
        "unique_key",
        "unique_for",
    }
    done = resume(flow, [_row(5, "k")])
    assert isinstance(done, Done) and (done.infos[0].id, done.infos[0].idempotency_key) == (5, "k")


def test_single_keyless_task_runs_without_the_flow() -> None:
    one = plan([Task("t", {"a": 1})], 1000, 10)
    step = single(STMTS, one)
    assert step is not None and step.stmt is STMTS.task_insert_one_keyless
    assert step.params["payload"] == '{"a":1}'
    (info,) = single_info(one, _row(4))
    assert (info.id, info.type, info.created_at, info.created) == (4, "t", T0, True)
    assert single(STMTS, plan([Task("t", idempotency_key="k")], 1000, 10)) is None
    assert single(STMTS, plan([Task("a"), Task("b")], 1000, 10)) is None


def test_keyless_batches_go_through_copy_where_possible() -> None:
    keyless = [Task("a", queue="q2"), Task("b", queue="q1"), Task("c", queue="q2")]
    flow = enqueue_steps(STMTS, plan(keyless, 1000, 10), "return", copy=True)
    step = resume(flow, None)
    assert isinstance(step, Fetch) and step.stmt is STMTS.task_insert_copy_ids
    assert step.params == {"count": 3, "queues": ["q1", "q2"]}
    now = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    copy = resume(flow, [{"now": now, "first_id": 41, "ids": None, "notified": ""}])
    assert isinstance(copy, Copy)
    assert (
        copy.stmt.text
        == "COPY pgtasq.tasks (id, queue, type, payload, priority, max_attempts) FROM STDIN"
    )
    text = "".join(copy.chunks)
    assert text == "41\tq2\ta\tnull\t0\t5\n42\tq1\tb\tnull\t0\t5\n43\tq2\tc\tnull\t0\t5\n"
    done = resume(flow, None)
    assert isinstance(done, Done)
    assert [(i.id, i.type, i.created_at, i.updated_at, i.run_at) for i in done.infos] == [
        (41, "a", now, now, now), (42, "b", now, now, now), (43, "c", now, now, now),
    ]  # fmt: skip
    # Without COPY (SQLAlchemy), or with a key in the batch: arrays and unnest.
    for tasks, copy_ok in ((keyless, False), ([*keyless, Task("d", idempotency_key="k")], True)):
        step = resume(enqueue_steps(STMTS, plan(tasks, 1000, 10), "return", copy=copy_ok), None)
        assert isinstance(step, Fetch) and step.stmt is STMTS.task_insert


def test_copy_uses_every_id_when_they_are_not_consecutive() -> None:
    flow = enqueue_steps(STMTS, plan([Task("a"), Task("b")], 1000, 10), "return", copy=True)
    resume(flow, None)
    copy = resume(flow, [{"now": T0, "first_id": 7, "ids": [7, 9], "notified": ""}])
    assert isinstance(copy, Copy)
    assert [line.split("\t")[0] for line in "".join(copy.chunks).splitlines()] == ["7", "9"]
    done = resume(flow, None)
    assert isinstance(done, Done) and [i.id for i in done.infos] == [7, 9]


def test_text_utf8_cannot_carry_is_refused_before_any_step() -> None:
    """COPY would fail halfway on it, breaking the caller's transaction: refused in plan."""
    with pytest.raises(TaskValidationError) as caught:
        plan([Task("a", "lone \udc80 surrogate"), Task("b")], 1000, 10)
    assert caught.value.field == "payload"


def test_copy_text_escapes_what_copy_would_read_as_structure() -> None:
    assert copy_text("a\tb\nc\rd\\e") == "a\\tb\\nc\\rd\\\\e"
    tasks = [Task("t\tab", {"s": 'back\\slash "q" \n é'}, queue="q\\1"), Task("x")]
    (batch,) = plan(tasks, 1000, 10)
    names = {n: copy_text(n) for n in ("t\tab", "q\\1", "x", "default")}
    (text,) = copy_chunks(batch.tasks, batch.payloads, [1, 2], _sql.COPY_COLUMNS, None, names)
    first = text.split("\n")[0]
    assert first == '1\tq\\\\1\tt\\tab\t{"s":"back\\\\\\\\slash \\\\"q\\\\" \\\\n é"}\t0\t5'
    # Reading it back the way COPY does gives the JSON text unchanged.
    fields = [f.replace("\\t", "\t").replace("\\\\", "\\") for f in first.split("\t")]
    assert json.loads(fields[3]) == tasks[0].payload and fields[2] == "t\tab"


def test_copy_chunks_are_bounded() -> None:
    tasks = [Task("t") for _ in range(450)]
    (batch,) = plan(tasks, 1000, 1000)
    names = {"t": "t", "default": "default"}
    chunks = list(copy_chunks(tasks, batch.payloads, range(450), _sql.COPY_COLUMNS, None, names))
    assert [c.count("\n") for c in chunks] == [200, 200, 50]
    assert all(c.endswith("\n") for c in chunks)


def test_copy_sends_optional_columns_only_when_used() -> None:
    assert copy_columns([Task("a"), Task("b")]) == _sql.COPY_COLUMNS
    tasks = [Task("a", delay=1.5), Task("b", timeout=timedelta(days=1, microseconds=7))]
    assert copy_columns(tasks) == (*_sql.COPY_COLUMNS, "run_at", "timeout")
    tasks = [Task("a", deadline=T0), Task("b", retention=2)]
    assert copy_columns(tasks) == (*_sql.COPY_COLUMNS, "deadline", "retention")
    assert copy_interval(timedelta(days=1, microseconds=7)) == "86400.000007 seconds"
    assert copy_interval(None) == "\\N"


def test_copy_rows_with_every_option() -> None:
    rome = ZoneInfo("Europe/Rome")
    run_at = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=rome)
    tasks = [
        Task("a", run_at=run_at, timeout=30, deadline=T0, retention=timedelta(hours=1)),
        Task("b", delay=timedelta(days=1), priority=-3, max_attempts=9),
    ]
    (batch,) = plan(tasks, 1000, 10)
    columns = copy_columns(tasks)
    # 2026-03-28 is the eve of the DST change in Rome: one day later is 23 wall-clock hours.
    now = datetime(2026, 3, 28, 12, 0, tzinfo=rome)
    run_ats = [copy_run_at(t, now) for t in tasks]
    assert run_ats[0] == run_at
    utc = timezone.utc  # (Python subtracts datetimes of one tzinfo as wall-clock times)
    assert run_ats[1].astimezone(utc) - now.astimezone(utc) == timedelta(days=1)
    assert run_ats[1].astimezone(utc) == datetime(2026, 3, 29, 11, tzinfo=utc)
    names = {n: n for n in ("a", "b", "default")}
    (text,) = copy_chunks(tasks, batch.payloads, [1, 2], columns, run_ats, names)
    assert text.split("\n")[:2] == [
        f"1\tdefault\ta\tnull\t0\t5\t{run_ats[0].astimezone(utc).isoformat()}"
        f"\t30.000000 seconds\t{T0.isoformat()}\t3600.000000 seconds",
        f"2\tdefault\tb\tnull\t-3\t9\t{run_ats[1].astimezone(utc).isoformat()}\t\\N\t\\N\t\\N",
    ]


def test_copy_sends_times_in_utc() -> None:
    """PostgreSQL's text input refuses offsets past ±15:59 and fractions of a second in an
    offset; Python allows both (found by the property tests: COPY aborted the transaction)."""
    odd = timezone(-timedelta(hours=23, minutes=22, seconds=19, microseconds=996968))
    deadline = datetime(263, 8, 16, 20, 29, 13, 642, tzinfo=odd)
    assert copy_timestamp(deadline) == "0263-08-17T19:51:32.997610+00:00"


def test_atomic_and_savepoint() -> None:
    one, key = plan([Task("a")], 10, 10), plan([Task("a", idempotency_key="k")], 10, 10)
    two, many = plan([Task("a"), Task("b")], 10, 10), plan([Task("a")] * 3, 10, 2)
    assert not atomic(one, copy=True)
    assert atomic(key, copy=False)
    assert atomic(two, copy=True) and not atomic(two, copy=False)
    assert atomic(many, copy=False)
    # Only a key can make DuplicateTask happen.
    assert may_raise(key, "raise") and not may_raise(key, "return")
    assert not may_raise(one, "raise") and not may_raise(many, "raise")


def test_pending_info_equals_the_slow_constructor_and_stays_frozen() -> None:
    task = Task("t", {"a": [1]}, queue="q", priority=4, max_attempts=7, timeout=1.5,
                deadline=T0, idempotency_key="k", retention=timedelta(days=2))  # fmt: skip
    run_at = T0 + timedelta(hours=1)
    info = _pending_info(task, 9, run_at, T0)
    expected = TaskInfo(
        id=9, queue="q", type="t", payload={"a": [1]}, priority=4, status=TaskStatus.PENDING,
        run_at=run_at, attempts=0, max_attempts=7, timeout=timedelta(seconds=1.5), deadline=T0,
        idempotency_key="k", errors=[], result=None, locked_by=None, locked_until=None,
        created_at=T0, updated_at=T0, attempted_at=None, finalized_at=None,
        retention=timedelta(days=2), created=True,
    )  # fmt: skip
    assert info == expected and repr(info) == repr(expected)
    assert dataclasses.asdict(info) == dataclasses.asdict(expected)
    assert vars(info).keys() == vars(expected).keys()
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.id = 1  # type: ignore[misc]
    other = _pending_info(Task("t"), 10, T0, T0)
    assert other.errors == [] and other.errors is not _pending_info(Task("t"), 11, T0, T0).errors


PAYLOADS = [
    None, 0, -1, 2**70, 1.5, 1e-300, 3.0, True, "", "é\u2028\"\\\n\t", [], {}, [1, [2, [3]]],
    {"b": 1, "a": {"c": [None, False, "x"]}}, {1: "int key", 2.5: "float key", None: 1},
    ("tuple", "becomes", "list"),
]  # fmt: skip


@pytest.mark.parametrize("payload", PAYLOADS)
def test_dump_payload_is_json_dumps(payload: object) -> None:
    options: dict[str, Any] = {"separators": (",", ":"), "ensure_ascii": False, "allow_nan": False}
    assert dump_payload(payload, 10_000) == json.dumps(payload, **options)


def test_dump_payload_errors_are_json_dumps_errors() -> None:
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(TaskValidationError, match="Circular reference detected"):
        dump_payload(circular, 1000)
    with pytest.raises(TaskValidationError, match="not JSON serializable"):
        dump_payload({"when": T0}, 1000)
    with pytest.raises(TaskValidationError, match="Out of range float"):
        dump_payload([float("nan")], 1000)
    assert dump_payload({"ok": 1}, 1000) == '{"ok":1}'  # the shared encoder still works


def test_dump_payload_from_many_threads() -> None:
    shared = {"list": list(range(50)), "nested": {"k": ["v"] * 20}}
    expected = dump_payload(shared, 100_000)
    results: list[str] = []

    def work() -> None:
        results.extend(dump_payload(shared, 100_000) for _ in range(500))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 2000


@pytest.mark.parametrize("field", ["type", "queue", "idempotency_key"])
def test_names_with_nul_are_refused(field: str) -> None:
    args: dict[str, Any] = {"type": "t", field: "a\x00b"}
    with pytest.raises(TaskValidationError, match="NUL") as info:
        Task(args.pop("type"), **args)
    assert info.value.field == field
