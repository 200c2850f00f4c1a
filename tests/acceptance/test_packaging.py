"""The wheel carries the migrations, so an installed pgtasq can migrate without a checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (built,) = out.glob("pgtasq-*.whl")
    return built


def test_wheel_contains_package_and_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "pgtasq/py.typed" in names
    assert "pgtasq/migrations/env.py" in names
    assert "pgtasq/migrations/script.py.mako" in names
    versions = sorted(n for n in names if n.startswith("pgtasq/migrations/versions/"))
    repo_versions = sorted(
        f"pgtasq/migrations/versions/{p.name}"
        for p in (REPO / "migrations" / "versions").glob("*.py")
    )
    assert versions == repo_versions


def test_wheel_carries_the_django_app_and_the_pytest_plugin(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    for name in (
        "pgtasq/testing/__init__.py",
        "pgtasq/testing/pytest_plugin.py",
        "pgtasq/contrib/django/apps.py",
        "pgtasq/contrib/django/migrations/0001_pgtasq_schema.py",
        "pgtasq/contrib/django/management/commands/pgtasq_worker.py",
    ):
        assert name in names, name
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = archive.read(entry_points).decode()
    assert "[pytest11]\npgtasq = pgtasq.testing.pytest_plugin" in text


def test_installed_wheel_migrates(
    wheel: Path, tmp_path: Path, pg_dsn: str, fresh_schema: str
) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    code = (
        "import sys, pgtasq, pgtasq._migrate as m;"
        "assert str(m.migrations_path()).startswith(sys.argv[3]), m.migrations_path();"
        "pgtasq.migrate(sys.argv[1], schema=sys.argv[2]);"
        "print(pgtasq.current_revision(sys.argv[1], schema=sys.argv[2]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, pg_dsn, fresh_schema, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pgtasq_0005"


def test_wheel_carries_the_dashboard_templates_and_htmx_with_its_license(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    web = REPO / "src" / "pgtasq" / "web"
    for folder in ("templates", "static"):
        files = sorted(p.name for p in (web / folder).iterdir() if p.is_file())
        assert files, folder
        for name in files:
            assert f"pgtasq/web/{folder}/{name}" in names
    assert "pgtasq/web/static/htmx.min.js" in names
    assert "pgtasq/web/static/htmx.LICENSE.txt" in names
