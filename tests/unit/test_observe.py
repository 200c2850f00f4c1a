"""The metrics hooks without prometheus-client: the no-op recorder and the label cap."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest

from pgtasq import ConfigurationError
from pgtasq._observe import OTHER_LABEL, LabelCap, Recorder


def test_label_cap_keeps_the_first_values() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a", "d", "b")] == [
        "a",
        "b",
        OTHER_LABEL,
        "a",
        OTHER_LABEL,
        "b",
    ]


def test_label_cap_refuses_zero() -> None:
    with pytest.raises(ConfigurationError, match="label_values_max must be >= 1"):
        LabelCap(0)  # a ConfigurationError is a ValueError too


def test_the_default_recorder_records_nothing_and_imports_nothing() -> None:
    recorder = Recorder()
    assert recorder.enabled is False
    now = datetime.now(timezone.utc)
    recorder.task_started("q", "t", now, now)
    recorder.task_ended("q", "t", 1.0)
    recorder.task_outcome("q", "t", "completed")
    recorder.slots(1, 2)
    recorder.apply()


def test_metrics_off_never_import_prometheus_client() -> None:
    code = "import sys, pgtasq, pgtasq.cli; print('prometheus_client' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
