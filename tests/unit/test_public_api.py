from __future__ import annotations

import subprocess
import sys

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
