"""The limits of `pgtasq._limits`, and every entry point that takes a schema name."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import pgtasq
from pgtasq import (
    ConfigurationError,
    Consumer,
    InvalidSchedule,
    Producer,
    Scheduler,
    Task,
    TaskValidationError,
    _sql,
    tables,
)
from pgtasq._limits import (
    DURATION_MAX_SECONDS,
    DURATION_MIN_SECONDS,
    PAYLOAD_MAX_BYTES_CEILING,
    PAYLOAD_MAX_DEPTH,
    SCHEMA_NAME_PATTERN,
    SQL_KEYWORDS_NOT_UNRESERVED,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    json_depth,
    json_problem,
    schema_problem,
)
from pgtasq.models import dump_payload
from pgtasq.scheduler import SchedulerConfig

BAD_SCHEMAS = [
    "pgtasq\n",  # a `$` anchor let this through
    "\npgtasq",
    "user",
    "select",
    "int",  # a column-name keyword: CAST(x AS int.task_status) does not parse
    "values",
    "left",
    "information_schema",
    "pg_catalog",
    "pg_toast",
    "pg_temp_3",
    "pg_anything",
    "",
    "Pgtasq",
    "a" * 64,
    None,
]


def _entry_points(schema: Any) -> list[Any]:
    return [
        lambda: tables.check_schema_name(schema),
        lambda: tables.metadata(schema),
        lambda: _sql.statements(schema),
        lambda: Producer(schema=schema),
        lambda: pgtasq.AsyncProducer(schema=schema),
        lambda: pgtasq.Client(schema=schema),
        lambda: pgtasq.AsyncClient(schema=schema),
        lambda: Consumer(schema=schema),
        lambda: Scheduler(schema=schema),
        lambda: SchedulerConfig(schema=schema),
        lambda: pgtasq.migration_sql(schema=schema),
        lambda: pgtasq.migrate("postgresql://nobody@127.0.0.1:1/none", schema=schema),
    ]


@pytest.mark.parametrize("schema", BAD_SCHEMAS, ids=repr)
def test_every_entry_point_refuses_a_schema_postgresql_keeps_or_cannot_parse(schema: Any) -> None:
    for entry in _entry_points(schema):
        with pytest.raises(ConfigurationError, match="schema name"):
            entry()


@pytest.mark.parametrize("schema", ["pgtasq", "_x", "t_0123", "name", "data", "a" * 63, "pgx"])
def test_plain_schemas_are_accepted(schema: str) -> None:
    assert schema_problem(schema) is None
    assert tables.check_schema_name(schema) == schema


def test_the_keyword_list_holds_only_words_the_pattern_would_let_through() -> None:
    assert all(SCHEMA_NAME_PATTERN.fullmatch(w) for w in SQL_KEYWORDS_NOT_UNRESERVED)
    assert {"user", "select", "system_user", "json_table", "int"} <= SQL_KEYWORDS_NOT_UNRESERVED


@pytest.mark.parametrize(
    ("seconds", "ok"),
    [
        (DURATION_MIN_SECONDS, True),
        (DURATION_MAX_SECONDS, True),
        (timedelta(microseconds=1), True),
        (timedelta(days=36524), True),
        (4e-7, False),  # rounds to a zero interval
        (DURATION_MAX_SECONDS * 1.0001, False),
        (9.3e12, False),  # past what an interval holds
        (10**400, False),  # float() of it raises OverflowError
        (timedelta.max, False),
        (math.inf, False),
        (math.nan, False),
        (True, False),
        ("1", False),
    ],
)
def test_durations(seconds: Any, ok: bool) -> None:
    for field in ("delay", "timeout", "retention"):
        if ok:
            Task("t", **{field: seconds})
        else:
            with pytest.raises(TaskValidationError) as caught:
                Task("t", **{field: seconds})
            assert caught.value.field == field


_UTC = timezone.utc


@pytest.mark.parametrize(
    ("when", "ok"),
    [
        (TIMESTAMP_MIN, True),
        (TIMESTAMP_MAX, True),
        (datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-12))), True),
        (datetime(1, 1, 1, tzinfo=_UTC), False),
        (datetime(9999, 12, 31, 23, tzinfo=_UTC), False),
        (datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))), False),  # year 10000 UTC
        (datetime.min.replace(tzinfo=timezone(timedelta(hours=5))), False),  # year 0 UTC
    ],
)
def test_points_in_time(when: datetime, ok: bool) -> None:
    for field in ("run_at", "deadline"):
        if ok:
            Task("t", **{field: when})
        else:
            with pytest.raises(TaskValidationError) as caught:
                Task("t", **{field: when})
            assert caught.value.field == field


@pytest.mark.parametrize("field", ["type", "queue", "idempotency_key"])
@pytest.mark.parametrize("value", ["a\x00b", "\ud800", "x\udfff", "emoji \ud83d"])
def test_names_postgresql_text_refuses(field: str, value: str) -> None:
    args: dict[str, Any] = {"type": "t", field: value}
    with pytest.raises(TaskValidationError) as caught:
        Task(args.pop("type"), **args)
    assert caught.value.field == field


def test_names_with_any_valid_unicode_are_fine() -> None:
    Task("письмо.отправить", queue="キュー", idempotency_key="🙂 \u2028 \U0010ffff")


def _short(value: Any) -> str:
    try:
        return repr(value)[:40]
    except (RecursionError, ValueError):
        return type(value).__name__


def _nested(depth: int) -> Any:
    value: Any = {}
    for i in range(depth - 1):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize(
    "payload",
    [
        "\\u0000",
        {"\\u0000": "\\\\u0000"},
        ["a\\u0000", "\\\\\\u0000"],
        _nested(PAYLOAD_MAX_DEPTH),
        ["[" * 500, "{" * 500],  # brackets inside strings are not nesting
        [[]] * 1000,
        2**64,
        1e308,
        "\U0001f642",
    ],
    ids=_short,
)
def test_payloads_jsonb_stores(payload: Any) -> None:
    assert json.loads(dump_payload(payload, 1 << 20)) == payload


@pytest.mark.parametrize(
    "payload",
    [
        "\x00",
        {"a": "b\x00"},
        {"\x00": 1},
        ["\\\x00"],  # a backslash, then a NUL
        "\ud800",
        {"\udc80": 1},
        math.nan,
        [math.inf],
        _nested(PAYLOAD_MAX_DEPTH + 1),
        _nested(10_000),  # RecursionError before
        10**5000,  # more digits than int->str allows
        {1, 2},
        {(1, 2): 3},
    ],
    ids=_short,
)
def test_payloads_refused_name_the_payload(payload: Any) -> None:
    with pytest.raises(TaskValidationError) as caught:
        dump_payload(payload, 1 << 20)
    assert caught.value.field == "payload"


def test_a_circular_payload_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TaskValidationError, match="Circular"):
        dump_payload(loop, 1 << 20)


def test_json_depth() -> None:
    assert json_depth("1") == 0
    assert json_depth('"[[["') == 0
    assert json_depth('[{"a":[1,"]]]"]},[]]') == 3
    assert json_depth(json.dumps(_nested(50))) == 50
    assert json_problem('"\\\\u0000"') is None and json_problem('"\\u0000"') is not None


def test_producer_payload_size_setting_has_a_ceiling() -> None:
    Producer(max_payload_bytes=PAYLOAD_MAX_BYTES_CEILING)
    for bad in (0, PAYLOAD_MAX_BYTES_CEILING + 1, 2**40, "1", 1.5, True):
        with pytest.raises(ConfigurationError, match="max_payload_bytes"):
            Producer(max_payload_bytes=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"lease": 1e12},  # now() + lease overflows in every claim
        {"lease": math.inf},
        {"retention_default": 1e13},
        {"clean_interval": math.nan},
        {"shutdown_timeout": math.inf},
        {"shutdown_timeout": -1},
        {"queues": "a\x00b"},
        {"queues": ["\ud800"]},
        {"queues": {"ok": 1, "q\x00": 2}},
    ],
    ids=repr,
)
def test_consumer_settings_postgresql_cannot_hold(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Consumer(**options)


@pytest.mark.parametrize("task_type", ["a\x00", "\udc80"])
def test_consumer_task_types_postgresql_cannot_hold(task_type: str) -> None:
    with pytest.raises(ConfigurationError):
        Consumer().register(task_type, lambda ctx: None)


@pytest.mark.parametrize(
    ("cron", "options", "field"),
    [
        ("* * * * *", {"name": "nightly\x00"}, "id"),  # killed Scheduler.run on every tick
        ("* * * * *", {"name": "\ud800"}, "id"),
        ("* * * * *", {"timezone": "UTC\x00"}, "timezone"),
        ("* * * * *\x00", {}, "cron"),
        ("\udc80 * * * *", {}, "cron"),
    ],
)
def test_scheduler_entries_postgresql_cannot_store(
    cron: str, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        Scheduler().register(cron, Task("t"), **options)
    assert caught.value.field == field
