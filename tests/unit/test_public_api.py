from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pgtasq


def test_all_is_sorted_and_complete() -> None:
    assert pgtasq.__all__ == sorted(pgtasq.__all__, key=lambda n: (not n.isupper(), n))
    for name in pgtasq.__all__:
        assert getattr(pgtasq, name) is not None
    public = {n for n in vars(pgtasq) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(pgtasq, n)).__name__ == "module"}
    assert public - modules - {"annotations"} == set(pgtasq.__all__)


def test_errors_form_one_tree() -> None:
    for name in (
        "ConfigurationError",
        "DatabaseUnavailable",
        "DuplicateTask",
        "TaskValidationError",
    ):
        assert issubclass(getattr(pgtasq, name), pgtasq.PgtasqError)


def test_importing_pgtasq_leaves_sqlalchemy_and_alembic_unloaded() -> None:
    """Workers and producers never need them: they load when tables or migrations are used."""
    code = (
        "import sys, pgtasq\n"
        "loaded = sorted(m for m in ('sqlalchemy', 'alembic') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "pgtasq.tables.metadata('pgtasq')\n"
        "assert 'sqlalchemy' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_error_tree_in_errors_py_names_every_public_error() -> None:
    """STYLE 9: the errors form one tree, drawn in the errors.py docstring; a public error
    missing from the drawing (InvalidFilter was) is a reader's blind spot."""
    import pgtasq.errors

    drawing = pgtasq.errors.__doc__ or ""
    public_errors = [
        name
        for name in pgtasq.__all__
        if isinstance(getattr(pgtasq, name), type)
        and issubclass(getattr(pgtasq, name), pgtasq.PgtasqError)
    ]
    assert "InvalidFilter" in public_errors and "WorkerCrashed" in public_errors
    missing = [name for name in public_errors if not re.search(rf"\b{name}\b", drawing)]
    assert not missing, f"not in the errors.py tree: {missing}"


def _types_in(annotation: object) -> Iterator[type]:
    """The classes an annotation names: ``list[X]``, ``X | None``, ``Iterator[X]``…"""
    import typing

    if isinstance(annotation, type) and not typing.get_args(annotation):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _types_in(arg)
    origin = typing.get_origin(annotation)
    if isinstance(origin, type):
        yield origin


def test_every_type_a_public_call_returns_is_exported() -> None:
    """Walk the return annotations of every public function and method of the public API:
    each pgtasq class found there can be imported from ``pgtasq`` (ScheduleInfo, returned by
    Client.list_schedules, was not)."""
    import inspect
    import typing

    exported = {getattr(pgtasq, name) for name in pgtasq.__all__}
    missing: dict[str, str] = {}
    for name in pgtasq.__all__:
        obj = getattr(pgtasq, name)
        if inspect.isclass(obj):
            calls = [
                (f"{name}.{attr}", member)
                for attr, member in inspect.getmembers(obj)
                if (not attr.startswith("_") or attr in ("__enter__", "__aenter__"))
                and callable(member)
            ]
        elif callable(obj):
            calls = [(name, obj)]
        else:
            continue
        for where, call in calls:
            returned = getattr(call, "__annotations__", {}).get("return")
            if isinstance(returned, str):  # from __future__ import annotations
                module = sys.modules[call.__module__]
                returned = eval(returned, vars(typing) | vars(module))
            for found in _types_in(returned):
                if found.__module__.startswith("pgtasq") and found not in exported:
                    missing[found.__qualname__] = where
    assert not missing, f"returned but not exported from pgtasq: {missing}"
