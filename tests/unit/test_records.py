"""Results and error entries made safe to store: `pgtasq._records`, no database."""

from __future__ import annotations

import json
import logging
import math
import threading
from typing import Any

import psycopg
import pytest

from pgtasq._database import LogOnce, is_data_error
from pgtasq._finishing import RecordMaker
from pgtasq._outcomes import DELAY_MAX, clamp_delay
from pgtasq._records import (
    MESSAGE_MAX_CHARS,
    RESULT_DEPTH_MAX,
    TRACEBACK_MAX_CHARS,
    Prepared,
    error_entry,
    error_text,
    formats_quickly,
    prepare_result,
)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, None),
        ({"a": [1, 2.5, True, None, "é"]}, '{"a":[1,2.5,true,null,"é"]}'),
        ("back\\u0000slash", '"back\\\\u0000slash"'),  # the text \u0000 is not a NUL
        (
            nested(RESULT_DEPTH_MAX - 1),
            json.dumps(nested(RESULT_DEPTH_MAX - 1), separators=(",", ":")),
        ),
    ],
)
def test_storable_results_are_kept_as_they_are(value: Any, text: str | None) -> None:
    assert prepare_result(value, 1 << 20) == Prepared(text=text)


def test_surrogates_and_nul_are_replaced_with_a_note() -> None:
    prepared = prepare_result({"k\ud800": "a\x00b\\\x00", "l": ["\udfff"]}, 1 << 20)
    assert prepared is not None and prepared.error is None
    assert json.loads(prepared.text or "") == {"k\ufffd": "a\ufffdb\\\ufffd", "l": ["\ufffd"]}
    assert prepared.note is not None
    assert "2 lone surrogate(s) and 2 NUL character(s)" in prepared.note
    (prepared.text or "").encode()  # encodable now


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (nested(RESULT_DEPTH_MAX + 1), f"nested deeper than {RESULT_DEPTH_MAX} levels"),
        (math.inf, "Out of range float"),
        ({1.5j: 1}, "keys must be"),
        ({"x": {1, 2}}, "not JSON-serialisable: TypeError: Object of type set"),
        ("x" * 2000, "results are limited to 1000 bytes"),
        (["é" * 400] * 2, "is 1607 bytes of JSON; results are limited to 1000 bytes"),
    ],
    ids=["too-deep", "infinity", "complex-key", "set", "too-long", "utf8-bytes"],
)
def test_results_that_cannot_be_stored_say_why(value: Any, message: str) -> None:
    prepared = prepare_result(value, 1000)
    assert prepared is not None and prepared.text is None
    assert message in (prepared.error or "")


def test_an_int_too_long_for_text_fails_clearly() -> None:
    prepared = prepare_result(10**5000, 1 << 20)
    assert prepared is not None and "4300 digits" in (prepared.error or "")


def test_the_size_check_stops_early_whatever_the_result_holds() -> None:
    huge = ["abcdefgh"] * 10_000_000  # would be 110 MB of JSON
    prepared = prepare_result(huge, 1 << 20)
    assert prepared is not None and "larger than that" in (prepared.error or "")


def test_a_budget_defers_big_results_to_a_thread() -> None:
    assert prepare_result(list(range(1000)), 1 << 20, budget=256) is None
    assert prepare_result(list(range(100)), 1 << 20, budget=256) is not None
    assert prepare_result(None, 1, budget=0) == Prepared()


def test_a_container_whose_own_methods_raise_fails_clearly() -> None:
    class Hostile(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("no items")

    prepared = prepare_result(Hostile(a=1), 1 << 20)
    assert prepared is not None and "could not be serialised: RuntimeError" in (
        prepared.error or ""
    )


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_error_entry_of_a_plain_exception() -> None:
    entry = error_entry(3, raised(ValueError("bad value")))
    assert entry["attempt"] == 3 and entry["error"] == "ValueError"
    assert entry["message"] == "bad value"
    assert "ValueError: bad value" in entry["traceback"] and "note" not in entry


def test_error_entry_never_raises_and_notes_what_it_changed() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("nope")

    entry = error_entry(1, raised(Unprintable()))
    assert entry["message"].startswith("<str() of this test_error_entry")
    assert entry["message"].endswith("<locals>.Unprintable raised an error>")
    assert entry["note"] == "str(exc) raised"

    long = error_entry(1, raised(ValueError("\ud83d" + "x" * 10_000 + "\x00")))
    assert len(long["message"]) == MESSAGE_MAX_CHARS + 1 and long["message"][0] == "\ufffd"
    assert len(long["traceback"]) == TRACEBACK_MAX_CHARS + 1
    assert long["traceback"].endswith("\\x00\n")
    assert "message cut from 10005 to 2000 characters" in long["note"]
    assert "lone surrogate(s) replaced" in long["note"]
    text = error_text(1, raised(ValueError("\ud800\x00")))
    text.encode()
    assert "\\u0000" not in text


def test_clamp_delay() -> None:
    told: list[str] = []
    assert clamp_delay(5.0, told.append) == 5.0 and told == []
    assert clamp_delay(math.inf, told.append) == DELAY_MAX
    assert clamp_delay(1e300) == DELAY_MAX
    assert clamp_delay(math.nan, told.append) == 0.0
    assert clamp_delay(-1.0, told.append) == 0.0
    assert len(told) == 3 and "not a number" in told[1]


def test_is_data_error() -> None:
    assert is_data_error(psycopg.errors.DivisionByZero())
    assert is_data_error(psycopg.errors.CheckViolation())
    assert is_data_error(psycopg.errors.StatementTooComplex())  # 54001, an OperationalError
    assert is_data_error(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates"))
    assert is_data_error(psycopg.DataError("client-side, no sqlstate"))
    assert not is_data_error(psycopg.OperationalError("server closed the connection"))
    assert not is_data_error(psycopg.errors.UndefinedTable())
    assert not is_data_error(RuntimeError("a bug"))


def test_log_once(caplog: pytest.LogCaptureFixture) -> None:
    once = LogOnce(logging.getLogger("pgtasq.test"))
    with caplog.at_level(logging.DEBUG, logger="pgtasq.test"):
        for _ in range(3):
            once("a", logging.ERROR, "problem %s", "a")
        once("b", logging.ERROR, "problem %s", "b")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.ERROR, "problem a"),
        (logging.DEBUG, "problem a"),
        (logging.DEBUG, "problem a"),
        (logging.ERROR, "problem b"),
    ]


async def test_record_maker_gives_up_on_what_hangs() -> None:
    """An exception whose __str__ never returns, a container whose items() never returns:
    the outcome is made anyway after ``patience`` (the daemon thread is left behind)."""
    release = threading.Event()

    class Hanging(Exception):
        def __str__(self) -> str:
            release.wait(30)
            return "late"

    class HangingDict(dict[str, Any]):
        def items(self) -> Any:
            release.wait(30)
            return super().items()

    maker = RecordMaker(1 << 20, patience=0.2)
    try:
        entry = json.loads(await maker.error(2, Hanging()))
        assert entry["attempt"] == 2 and entry["error"] == "OutcomeRejected"
        assert "could not be formatted" in entry["message"]
        assert "took longer than 0.2 s" in entry["note"]
        big = HangingDict({str(i): i for i in range(1000)})  # over the loop's budget
        prepared = await maker.result(big)
        assert prepared.error == "could not be checked within 0.2 s"
    finally:
        release.set()
        maker.close()


async def test_record_maker_checks_big_results_off_the_loop() -> None:
    maker = RecordMaker(1 << 20)
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real = RecordMaker._off_loop

    async def spy(self: RecordMaker, fn: Any, *args: Any) -> Any:
        seen.append(fn.__name__.__len__())
        return await real(self, lambda *a: (seen.append(threading.get_ident()), fn(*a))[1], *args)

    try:
        assert (await maker.result({"small": 1})).text == '{"small":1}'
        RecordMaker._off_loop = spy  # type: ignore[method-assign]
        prepared = await maker.result(list(range(10_000)))
        assert prepared.text is not None and prepared.text.startswith("[0,1,2")
        assert seen and seen[-1] != loop_thread
    finally:
        RecordMaker._off_loop = real  # type: ignore[method-assign]
        maker.close()


class _Plain(Exception):
    pass


class _OwnStr(Exception):
    def __str__(self) -> str:
        return "mine"


class _OwnGetattr(Exception):
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def _deep(n: int) -> BaseException:
    def down(k: int) -> None:
        if k == 0:
            raise ValueError("deep")
        down(k - 1)

    try:
        down(n)
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


def _chained() -> BaseException:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise _OwnStr() from inner
    except _OwnStr as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "quick"),
    [
        (raised(ValueError("boom")), True),
        (raised(_Plain("plain subclass", 3)), True),
        (raised(OSError(2, "No such file")), True),
        (raised(_OwnStr()), False),  # its author's __str__: on a thread
        (raised(_OwnGetattr()), False),
        (raised(ValueError(object())), False),  # str(arg) would call the object's code
        (raised(ValueError("x" * (MESSAGE_MAX_CHARS + 1))), False),
        (_deep(100), False),  # a long traceback
        (_chained(), False),  # anywhere in the chain
    ],
)
def test_which_errors_are_formatted_on_the_loop(exc: BaseException, quick: bool) -> None:
    assert formats_quickly(exc) is quick
    assert json.loads(error_text(1, exc))["attempt"] == 1  # and both ways work
