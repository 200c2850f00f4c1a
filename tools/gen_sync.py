"""Generate pgtasq's synchronous classes from their asynchronous source.

    python tools/gen_sync.py           # rewrite the generated files
    python tools/gen_sync.py --check   # exit 1, naming them, when one is not current

Each ``src/pgtasq/_X_async.py`` is written by hand; ``_X_sync.py`` is made from it by
python-trio's ``unasync`` (token-based: ``async``/``await`` dropped, names replaced as in
`REPLACEMENTS` and `DOTTED`), then ``ruff check --fix`` and ``ruff format``, under a header
saying so. Comments and docstrings are copied unchanged. The generated files are committed;
tests/unit/test_sync_generated.py runs ``--check``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "pgtasq"
MODULES = ("client", "events", "pool", "producer")  # _<name>_async.py -> _<name>_sync.py
COMMAND = "python tools/gen_sync.py"

# Names unasync's defaults do not cover. Without an entry, a name "AsyncFoo" becomes "SyncFoo"
# (AsyncConn -> SyncConn, AsyncRunner -> SyncRunner).
REPLACEMENTS = {
    "AbstractAsyncContextManager": "AbstractContextManager",
    "_adrive": "_drive",
    "_afetch": "_fetch",
    "_aguard": "_guard",
    "_arollback_on_error": "_rollback_on_error",
    "async_runner": "sync_runner",
    "_async_wait_for_server": "_wait_for_server",
    "AsyncClient": "Client",
    "AsyncConnection": "Connection",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncCursor": "Cursor",
    "AsyncEventStream": "EventStream",
    "AsyncFetch": "SyncFetch",
    "AsyncLazyPool": "LazyPool",
    "AsyncProducer": "Producer",
    "_pool_async": "_pool_sync",
    "_events_async": "_events_sync",
    "aclose": "close",
}
# Dotted names, which unasync cannot see (it replaces one name at a time): replaced in the
# source text first, their modules imported; ruff then drops the imports left unused.
DOTTED = {"asyncio.sleep": "time.sleep", "asyncio.Lock": "threading.Lock"}


def replace_dotted(text: str) -> str:
    modules = set()
    for old, new in DOTTED.items():
        text, count = re.subn(rf"\b{re.escape(old)}\b", new, text)
        if count:
            modules.add(new.split(".")[0])
    if modules:
        imports = "".join(f"import {m}\n" for m in sorted(modules))
        text = re.sub(r"^import asyncio\n", lambda m: m[0] + imports, text, count=1, flags=re.M)
    return text


def header(source: str) -> str:
    return f"# Generated from {source} by `{COMMAND}`: do not edit.\n"


def generate(name: str, out_dir: Path) -> Path:
    """Write the generated module for ``name`` into ``out_dir``; returns its path."""
    source = PACKAGE / f"_{name}_async.py"
    with tempfile.TemporaryDirectory(prefix="pgtasq-unasync-") as tmp:
        copy = Path(tmp) / source.name
        copy.write_text(replace_dotted(source.read_text(encoding="utf-8")), encoding="utf-8")
        rule = unasync.Rule(f"/_{name}_async.py", f"/_{name}_sync.py", REPLACEMENTS)
        unasync.unasync_files([str(copy)], [rule])
        made = Path(tmp) / f"_{name}_sync.py"
        text = header(source.relative_to(ROOT).as_posix()) + made.read_text(encoding="utf-8")
    target = out_dir / f"_{name}_sync.py"
    target.write_text(text, encoding="utf-8")
    # Run from the repository, so ruff reads pyproject.toml and sorts pgtasq's imports as
    # first-party, wherever the file is written.
    ruff = [sys.executable, "-m", "ruff"]
    flags = ["--config", str(ROOT / "pyproject.toml"), "--quiet"]
    stdin_name = ["--stdin-filename", str(PACKAGE / target.name)]
    text = target.read_text(encoding="utf-8")
    for args in (["check", "--fix-only", "--exit-zero", *flags], ["format", *flags]):
        text = subprocess.run(
            [*ruff, *args, *stdin_name, "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
    target.write_text(text, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = ap.parse_args(argv)
    stale = []
    with tempfile.TemporaryDirectory(prefix="pgtasq-unasync-out-") as out:
        for name in MODULES:
            made = generate(name, Path(out))
            target = PACKAGE / made.name
            new = made.read_text(encoding="utf-8")
            old = target.read_text(encoding="utf-8") if target.exists() else ""
            if new == old:
                continue
            rel = target.relative_to(ROOT).as_posix()
            if args.check:
                stale.append(rel)
                diff = difflib.unified_diff(
                    old.splitlines(keepends=True), new.splitlines(keepends=True), rel, "expected"
                )
                sys.stdout.writelines(diff)
            else:
                target.write_text(new, encoding="utf-8")
                print(f"wrote {rel}")
    if stale:
        print(f"\nnot current: {', '.join(stale)}; run: {COMMAND}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
