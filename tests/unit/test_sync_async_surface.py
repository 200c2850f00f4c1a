"""The sync classes and their async sources show one public surface.

`Client` and `Producer` are generated from `AsyncClient` and `AsyncProducer` by
tools/gen_sync.py (test_sync_generated.py checks the files are current). This checks what a
user sees: the same public names, parameters, defaults, annotations (modulo async) and
docstrings, and that every async method is awaited and no sync one is.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from pgtasq import AsyncClient, AsyncEventStream, AsyncProducer, Client, EventStream, Producer

PAIRS = [(Client, AsyncClient), (Producer, AsyncProducer)]
# What the same annotation is called on the async side.
ASYNC_NAMES = {
    "SyncConn": "AsyncConn",
    "Iterator": "AsyncIterator",
    "Client": "AsyncClient",
    "Producer": "AsyncProducer",
    "EventStream": "AsyncEventStream",
}
# Methods that return an object to ``async with`` or ``async for``, not a coroutine.
NOT_AWAITED = {"events"}
DUNDERS = {"__enter__": "__aenter__", "__exit__": "__aexit__"}


def _as_async(annotation: Any) -> Any:
    if not isinstance(annotation, str):
        return annotation
    return re.sub(r"\b(" + "|".join(ASYNC_NAMES) + r")\b", lambda m: ASYNC_NAMES[m[1]], annotation)


def _public(cls: type) -> set[str]:
    return {n for n in vars(cls) if not n.startswith("_")} | {
        n for n in vars(cls) if n in DUNDERS or n in DUNDERS.values() or n == "__init__"
    }


@pytest.mark.parametrize(("sync", "async_"), PAIRS, ids=lambda c: c.__name__)
def test_the_same_public_names(sync: type, async_: type) -> None:
    names = {DUNDERS.get(n, n) for n in _public(sync)}
    assert names == _public(async_)
    assert sync.__mro__[1:] == async_.__mro__[1:]  # the same shared base


@pytest.mark.parametrize(("sync", "async_"), PAIRS, ids=lambda c: c.__name__)
def test_the_same_parameters_defaults_annotations_and_docstrings(sync: type, async_: type) -> None:
    for name in sorted(_public(sync)):
        s, a = getattr(sync, name), getattr(async_, DUNDERS.get(name, name))
        where = f"{sync.__name__}.{name}"
        assert s.__doc__ == a.__doc__, where
        s_sig, a_sig = inspect.signature(s), inspect.signature(a)
        assert list(s_sig.parameters) == list(a_sig.parameters), where
        for p, q in zip(s_sig.parameters.values(), a_sig.parameters.values(), strict=True):
            assert (p.kind, p.default) == (q.kind, q.default), f"{where}({p.name})"
            assert _as_async(p.annotation) == q.annotation, f"{where}({p.name})"
        assert _as_async(s_sig.return_annotation) == a_sig.return_annotation, where


@pytest.mark.parametrize(("sync", "async_"), PAIRS, ids=lambda c: c.__name__)
def test_async_methods_are_awaited_and_sync_ones_are_not(sync: type, async_: type) -> None:
    for name in sorted(_public(sync) - {"__init__"}):
        s, a = getattr(sync, name), getattr(async_, DUNDERS.get(name, name))
        assert not inspect.iscoroutinefunction(s) and not inspect.isasyncgenfunction(s), name
        if name in NOT_AWAITED:
            assert not inspect.iscoroutinefunction(a) and not inspect.isasyncgenfunction(a)
            continue
        assert inspect.iscoroutinefunction(a) or inspect.isasyncgenfunction(a), name
        assert inspect.isgeneratorfunction(s) == inspect.isasyncgenfunction(a), name


def test_conn_is_typed_as_the_connections_each_side_accepts() -> None:
    """Not ``object``: a type checker rejects an async connection handed to Client."""
    for sync, async_ in PAIRS:
        for name in _public(sync):
            params = inspect.signature(getattr(sync, name)).parameters
            if "conn" in params:
                assert params["conn"].annotation == "SyncConn | None", name
                async_params = inspect.signature(getattr(async_, name)).parameters
                assert async_params["conn"].annotation == "AsyncConn | None", name


def test_the_event_streams_mirror_each_other() -> None:
    """`EventStream` is generated from `AsyncEventStream`: the same protocol, each its own
    flavour (``with``/``for``/``close``, ``async with``/``async for``/``aclose``)."""
    pairs = {
        "__enter__": "__aenter__",
        "__exit__": "__aexit__",
        "__iter__": "__aiter__",
        "__next__": "__anext__",
        "close": "aclose",
        "listening": "listening",
    }
    public = {n for n in vars(EventStream) if not n.startswith("_") or n in pairs}
    assert public == set(pairs)
    assert {n for n in vars(AsyncEventStream) if not n.startswith("_") or n in pairs.values()} == (
        set(pairs.values())
    )
    for name, async_name in pairs.items():
        s, a = getattr(EventStream, name), getattr(AsyncEventStream, async_name)
        assert s.__doc__ == a.__doc__, name
        if isinstance(s, property):
            continue
        assert not inspect.iscoroutinefunction(s), name
        assert inspect.iscoroutinefunction(a) == (name not in {"__iter__"}), name
    assert EventStream.__doc__ == AsyncEventStream.__doc__
