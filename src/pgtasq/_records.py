"""What a finished handler leaves in its row, made safe to store: the result and the entries
of ``errors``. Plain functions, no I/O.

Anything a handler hands over may be hostile to PostgreSQL or to the worker: lone surrogates
(a truncated emoji from a JSON API, ``surrogateescape``-decoded bytes) that cannot be encoded,
NUL characters that jsonb refuses, structures too deep for the encoder, results of hundreds of
megabytes, exceptions whose ``__str__`` raises. The rules:

- A result is checked by an iterative walk that stops as soon as it proves the result too
  large or too deep, so the cost of a bad result is bounded by the cap, not by its size;
  only then is it encoded. Lone surrogates and NUL characters become U+FFFD, and `Prepared`
  says so (the worker stores that note as an ``errors`` entry of the completed task). A
  result that cannot be stored at all (not JSON, NaN, too large, too deep) is `Prepared`
  with ``error`` set: the task fails with that message.
- An error entry never raises: each field is computed defensively, truncated to a bounded
  length, and cleaned of what jsonb cannot hold; a ``note`` says what was changed.

`prepare_result` takes a ``budget`` of nodes: the worker calls it on the event loop with a
small budget (most results are a few fields) and, when that is not enough or the result
holds anything but plain JSON types (a subclass may run code of its own), in a thread.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import re
import traceback
from collections.abc import Iterable
from typing import Any

from pgtasq._limits import PAYLOAD_MAX_DEPTH

RESULT_MAX_BYTES_DEFAULT = 1024 * 1024  # 1 MiB of JSON (UTF-8)
RESULT_MAX_BYTES_LIMIT = 128 * 1024 * 1024  # a jsonb value holds at most ~255 MB
RESULT_DEPTH_MAX = PAYLOAD_MAX_DEPTH  # nesting levels of arrays and objects, as for payloads
INLINE_BUDGET = 256  # nodes the event loop may walk itself; larger results go to a thread
MESSAGE_MAX_CHARS = 2000  # an error entry keeps the head of the message...
TRACEBACK_MAX_CHARS = 4000  # ...and the tail of the traceback
ERROR_NAME_MAX_CHARS = 200

_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON escape of NUL, not preceded by an escaped backslash (the text `\\u0000` is fine).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_PLAIN = frozenset({str, int, float, bool, type(None), dict, list, tuple})


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A result ready to store: ``text`` (JSON, or None for SQL NULL) and a ``note`` when
    characters were replaced; or ``error``, why it cannot be stored."""

    text: str | None = None
    note: str | None = None
    error: str | None = None


def prepare_result(value: Any, max_bytes: int, budget: int | None = None) -> Prepared | None:
    """``value`` as JSON text that PostgreSQL accepts, at most ``max_bytes`` bytes.

    With a ``budget``, returns None when checking ``value`` needs more than that many nodes
    (call again without one, off the event loop).
    """
    if value is None:
        return Prepared()
    try:
        return _prepare(value, max_bytes, budget)
    except Exception as exc:  # a container subclass's own methods (items, __len__) raised
        return Prepared(error=f"could not be serialised: {_short(exc)}")


def _prepare(value: Any, max_bytes: int, budget: int | None) -> Prepared | None:
    problem = _check(value, max_bytes, budget)
    if problem is _OVER_BUDGET:
        return None
    if problem is not None:
        return Prepared(error=problem)
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return Prepared(error=f"is not JSON-serialisable: {_short(exc)}")
    surrogates = nuls = 0
    if not text.isascii():
        text, surrogates = _SURROGATE.subn("\ufffd", text)
    if "\\u0000" in text:
        text, nuls = _JSON_NUL.subn("\\1\ufffd", text)
    size = len(text.encode())
    if size > max_bytes:
        return Prepared(error=_too_large(f"is {size} bytes of JSON", max_bytes))
    return Prepared(text=text, note=_replaced_note("the result", surrogates, nuls))


_OVER_BUDGET = "over budget"


def _check(value: Any, max_bytes: int, budget: int | None) -> str | None:
    """Why ``value`` cannot be stored, judged without encoding it, or None.

    Walks it iteratively and counts a lower bound of its encoded size (each string's
    characters, each number's digits, one separator per item), so it stops after at most
    about ``max_bytes`` nodes whatever the value holds (a cycle shows as too deep). Only
    containers go on the stack; the scalars in them are counted where they are met.
    """
    scalar = _scalar_size(value)
    if scalar is not None:
        if budget is not None and type(value) not in _PLAIN:
            return _OVER_BUDGET
        return _too_large("is larger than that", max_bytes) if scalar > max_bytes else None
    size = nodes = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if budget is not None and type(item) not in _PLAIN:
            return _OVER_BUDGET  # a subclass may run its own code: not on the event loop
        if not isinstance(item, (dict, list, tuple)):
            size += 1  # not JSON: the encoder says so
            continue
        if depth > RESULT_DEPTH_MAX:
            return f"is nested deeper than {RESULT_DEPTH_MAX} levels (or refers to itself)"
        nodes += 1 + len(item)
        if budget is not None and nodes > budget:
            return _OVER_BUDGET
        size += 2 + len(item)
        if size > max_bytes:
            return _too_large("is larger than that", max_bytes)
        members: Iterable[Any] = item
        if isinstance(item, dict):
            for key in item:
                if isinstance(key, str):
                    size += len(key) + 3
                    if size > max_bytes:
                        return _too_large("is larger than that", max_bytes)
            members = item.values()
        for member in members:
            # exact types first: the common case, and no subclass code on the loop
            kind = type(member)
            if kind is str:
                size += len(member) + 3
                if size > max_bytes:  # stop at the cap, not at the end of a long list
                    return _too_large("is larger than that", max_bytes)
            elif kind is int:
                size += (member.bit_length() * 3) // 10 + 2
                if size > max_bytes:
                    return _too_large("is larger than that", max_bytes)
            elif kind is float or kind is bool or member is None:
                size += 5
            else:
                stack.append((member, depth + 1))
        if size > max_bytes:
            return _too_large("is larger than that", max_bytes)
    return None


def _scalar_size(value: Any) -> int | None:
    """A lower bound of a scalar's encoded size, or None for anything else."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, bool) or value is None:
        return 4
    if isinstance(value, int):
        return (value.bit_length() * 3) // 10 + 1
    if isinstance(value, float):
        return 3
    return None


def _too_large(what: str, max_bytes: int) -> str:
    return f"{what}; results are limited to {max_bytes} bytes (Consumer(result_max_bytes=…))"


def _replaced_note(what: str, surrogates: int, nuls: int) -> str | None:
    parts = []
    if surrogates:
        parts.append(f"{surrogates} lone surrogate(s)")
    if nuls:
        parts.append(f"{nuls} NUL character(s)")
    if not parts:
        return None
    return f"{what} had {' and '.join(parts)}, which PostgreSQL cannot store: replaced by U+FFFD"


def _short(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text}"[:MESSAGE_MAX_CHARS] if text else type(exc).__name__


# -- error entries ------------------------------------------------------------------------


def error_entry(attempt: int, exc: BaseException, note: str | None = None) -> dict[str, Any]:
    """One entry of a task's ``errors`` (the database adds ``at``); never raises.

    ``error`` is the exception's class, ``message`` the head of ``str(exc)``, ``traceback``
    the tail of the formatted traceback; ``note`` (when present) says what was truncated or
    replaced to store them.
    """
    notes = [note] if note else []
    name = _clean(_safe(lambda: type(exc).__qualname__, "?"), ERROR_NAME_MAX_CHARS, "", notes)
    message = _safe(lambda: str(exc), None)
    if message is None:
        message = f"<str() of this {name} raised an error>"
        notes.append("str(exc) raised")
    tb = _safe(lambda: "".join(traceback.format_exception(exc)), "")
    entry: dict[str, Any] = {
        "attempt": attempt,
        "error": name,
        "message": _clean(message, MESSAGE_MAX_CHARS, "message", notes),
        "traceback": _clean(tb, TRACEBACK_MAX_CHARS, "traceback", notes, tail=True),
    }
    if notes:
        entry["note"] = "; ".join(notes)
    return entry


def formats_quickly(exc: BaseException) -> bool:
    """Whether formatting ``exc`` runs no code of its author's and little of any: each
    exception of its chain (a few at most) is a plain one (``__str__`` of a built-in class,
    arguments that are short strings or numbers, no notes) with a short traceback. The worker
    formats those on the event loop; anything else goes to a thread."""
    seen = 0
    current: BaseException | None = exc
    while current is not None:
        seen += 1
        if seen > _QUICK_CHAIN_MAX or isinstance(current, _GROUPS):
            return False
        if not _plain_class(type(current)):
            return False
        if getattr(current, "__notes__", None) is not None:
            return False
        size = 0
        for arg in current.args:
            kind = type(arg)
            if kind is str:
                size += len(arg)
            elif kind is not int and kind is not float and arg is not None:
                return False
        if size > MESSAGE_MAX_CHARS:
            return False
        frames = 0
        tb = current.__traceback__
        while tb is not None:
            frames += 1
            if frames > _QUICK_FRAMES_MAX:
                return False
            tb = tb.tb_next
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return True


_QUICK_CHAIN_MAX = 4
_QUICK_FRAMES_MAX = 50
# What formatting an exception calls on it: none of these may be its author's code.
_HOOKS = ("__str__", "__repr__", "__getattr__", "__getattribute__")
_GROUPS = tuple(g for g in [getattr(builtins, "BaseExceptionGroup", None)] if g is not None)


def _plain_class(cls: type) -> bool:
    """No class of ``cls``'s lineage but the built-in ones defines a formatting hook."""
    return all(
        klass.__module__ == "builtins" or not any(hook in vars(klass) for hook in _HOOKS)
        for klass in cls.__mro__
    )


def error_text(attempt: int, exc: BaseException, note: str | None = None) -> str:
    """`error_entry` as the JSON text the outcome statement takes."""
    return dump_entry(error_entry(attempt, exc, note))


def dump_entry(entry: dict[str, Any]) -> str:
    """An entry built here (its strings cleaned) as JSON text: cannot fail."""
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def note_entry(attempt: int, kind: str, message: str) -> dict[str, Any]:
    """An entry that is not a failure, only a remark (``ResultSanitized``)."""
    return {"attempt": attempt, "error": kind, "message": message}


def _safe(compute: Any, fallback: Any) -> Any:
    try:
        value = compute()
    except Exception:
        return fallback
    return value if isinstance(value, str) else fallback


def _clean(text: str, limit: int, what: str, notes: list[str], *, tail: bool = False) -> str:
    """``text`` as plain str, cut to ``limit`` characters, without lone surrogates or NUL
    (which jsonb cannot hold: NUL becomes the visible ``\\x00``)."""
    # str.__str__: a str subclass's own methods are the exception's author's code
    text = str.__str__(text).replace("\x00", "\\x00")
    if len(text) > limit:
        if what:
            notes.append(f"{what} cut from {len(text)} to {limit} characters")
        text = "…" + text[-limit:] if tail else text[:limit] + "…"
    text, surrogates = _SURROGATE.subn("\ufffd", text)
    if surrogates:
        notes.append(f"{what or 'error'}: {surrogates} lone surrogate(s) replaced by U+FFFD")
    return text
