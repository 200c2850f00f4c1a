"""bench/compare.py's summary: medians, ratios, and failures of the measured work only."""

from __future__ import annotations

import sys
from typing import Any

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
try:
    import compare
finally:
    sys.path.remove(str(REPO / "bench"))


def _drain(rate: float, failed_before: int = 0, failed_after: int = 0) -> dict[str, Any]:
    return {
        "jobs_per_s": rate,
        "table_before": {"failed": failed_before},
        "table_after": {"failed": failed_after, "completed": 10},
    }


def test_summary_medians_ratios_and_history_penalty() -> None:
    results = {
        "drain": {
            "floor": [_drain(40_000), _drain(44_000), _drain(39_000)],
            "pgqueuer": [_drain(800)],
            "pgqueuer_tuned": [_drain(7000)],
            "pgtasq": [_drain(16_000), _drain(14_000), _drain(15_000)],
        },
        "drainH": {
            "floor": [_drain(36_000)],
            # 400 failed rows of history, none of the measured tasks: nothing to flag
            "pgtasq": [_drain(13_500, failed_before=400, failed_after=400)],
        },
    }
    lines = compare.summary_lines(results)
    assert any(line.split()[:3] == ["drain", "pgtasq", "15000.0"] for line in lines)
    assert "drain: pgtasq 15000 jobs/s = 2.14x best pgqueuer, 38% of the raw-SQL floor" in lines
    assert not any("failed" in line for line in lines)
    assert any(line.split()[-1:] == ["0.90"] and "pgtasq" in line for line in lines)


def test_failed_measured_tasks_are_flagged_and_errors_shown() -> None:
    results = {
        "drainH": {
            "pgtasq": [_drain(1000, failed_before=400, failed_after=431)],
            "pgqueuer": [{"error": "timeout after 900 s"}],
        }
    }
    lines = compare.summary_lines(results)
    assert any(line.endswith("jobs/s (31 measured tasks failed)") for line in lines)
    assert any("failed" in line and "timeout after 900 s" in line for line in lines)


def test_the_docs_point_at_scripts_inside_the_repository() -> None:
    """README and docs/benchmarks.md once sent readers to ../shared/bench/compare.py, a file
    outside the repository: every script they name is one of bench/'s."""
    import re

    for doc in (REPO / "README.md", REPO / "docs" / "benchmarks.md"):
        text = doc.read_text()
        assert not re.search(r"\.\./|shared/bench", text), doc
        for script in re.findall(r"\bbench/[\w/]+\.py\b", text):
            assert (REPO / script).is_file(), (doc, script)
