"""Where the embedded server's data lives: one folder per project, wherever you run."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgtasq import _embedded
from pgtasq._embedded import find_home


def _tree(root: Path, *paths: str) -> None:
    for path in paths:
        target = root / path
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()


def test_the_project_root_owns_the_home_from_any_subfolder(tmp_path: Path) -> None:
    _tree(tmp_path, "shop/pyproject.toml", "shop/src/shop/jobs/", "shop/tests/")
    root = tmp_path / "shop"
    for here in (root, root / "src" / "shop" / "jobs", root / "tests"):
        assert find_home(here, env={}) == root / ".pgtasq"


def test_an_existing_home_is_found_walking_up(tmp_path: Path) -> None:
    """Like git's root: the nearest existing .pgtasq/ wins over a project marker below it."""
    _tree(tmp_path, "work/.pgtasq/", "work/a/b/", "work/lib/setup.cfg", "work/lib/pkg/")
    work = tmp_path / "work"
    assert find_home(work / "a" / "b", env={}) == work / ".pgtasq"
    assert find_home(work / "lib" / "pkg", env={}) == work / ".pgtasq"


def test_markers_git_and_setup(tmp_path: Path) -> None:
    _tree(tmp_path, "g/.git/", "g/x/", "s/setup.py", "s/y/")
    assert find_home(tmp_path / "g" / "x", env={}) == tmp_path / "g" / ".pgtasq"
    assert find_home(tmp_path / "s" / "y", env={}) == tmp_path / "s" / ".pgtasq"


def test_no_project_is_the_current_folder(tmp_path: Path) -> None:
    _tree(tmp_path, "loose/")
    here = tmp_path / "loose"
    if any((p / m).exists() for p in here.parents for m in (".pgtasq", ".git", "pyproject.toml")):
        return  # pragma: no cover - a project above the temporary folder decides instead
    assert find_home(here, env={}) == here / ".pgtasq"


def test_pgtasq_home_overrides(tmp_path: Path) -> None:
    _tree(tmp_path, "p/pyproject.toml")
    env = {"PGTASQ_HOME": str(tmp_path / "elsewhere")}
    assert find_home(tmp_path / "p", env=env) == tmp_path / "elsewhere"
    assert find_home(tmp_path / "p", env={"PGTASQ_HOME": ""}) == tmp_path / "p" / ".pgtasq"


class _Server:
    def __init__(self, uri: str) -> None:
        self._uri = uri

    def get_uri(self) -> str:
        return self._uri


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "postgresql://postgres:@/postgres?host=/tmp/x",
            "postgresql://postgres@/postgres?host=/tmp/x",
        ),
        (
            "postgresql://postgres@/postgres?host=/tmp/x",
            "postgresql://postgres@/postgres?host=/tmp/x",
        ),
        ("postgresql://postgres:secret@/postgres", "postgresql://postgres:secret@/postgres"),
    ],
)
def test_the_embedded_dsn_has_no_empty_password(given: str, expected: str) -> None:
    assert _embedded.uri(_Server(given)) == expected
