"""Every public thing pgtasq exports says what it is: each class, function, method and
property reachable from ``pgtasq.__all__`` has a docstring (STYLE: docstrings on public
things)."""

from __future__ import annotations

import enum
import inspect

import pgtasq


def _undocumented() -> list[str]:
    missing = []
    for name in pgtasq.__all__:
        obj = getattr(pgtasq, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants
        doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not doc or doc.startswith(f"{name}("):  # a dataclass's made-up signature
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for klass in obj.__mro__:
            if not klass.__module__.startswith("pgtasq"):
                continue  # what Exception, Enum or str already document
            for attr, value in vars(klass).items():
                if attr.startswith("_") or (issubclass(obj, enum.Enum) and attr in obj.__members__):
                    continue
                func = value.fget if isinstance(value, property) else value
                func = getattr(func, "__func__", func)  # classmethod, staticmethod
                if callable(func) and not func.__doc__:
                    missing.append(f"{name}.{attr}")
    return sorted(set(missing))


def test_every_public_class_function_method_and_property_has_a_docstring() -> None:
    missing = _undocumented()
    assert not missing, f"no docstring: {', '.join(missing)}"
