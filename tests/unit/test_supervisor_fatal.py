"""`supervise` with real child processes: a child that exits 78 (`EXIT_MISCONFIGURED`) is not
restarted, the others get the graceful stop (SIGUSR1), and the supervisor exits 78."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from pgtasq._cli_boundary import EXIT_MISCONFIGURED
from pgtasq._supervisor import supervise

# The first child to start exits 78 after a second; the others record the signal that stops
# them (SIGUSR1 expected) and exit 0. Every start leaves a file, to count restarts.
CHILD = """
import os, signal, sys, time
here = sys.argv[1]
open(os.path.join(here, "start-%d" % os.getpid()), "w").close()
def stop(signum, frame):
    open(os.path.join(here, "signal-%d" % signum), "w").close()
    sys.exit(0)
for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
    signal.signal(sig, stop)
try:
    os.close(os.open(os.path.join(here, "first"), os.O_CREAT | os.O_EXCL))
except FileExistsError:
    while True:
        time.sleep(0.1)
time.sleep(1.0)
sys.exit(78)
"""


def test_a_child_exiting_78_stops_the_others_gracefully_and_is_not_restarted(
    tmp_path: Path,
) -> None:
    code = supervise(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        2,
        dict(os.environ),
        burst=False,
        shutdown_timeout=5.0,
    )
    assert code == EXIT_MISCONFIGURED
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len([n for n in names if n.startswith("start-")]) == 2, names  # no restart
    signals = [n for n in names if n.startswith("signal-")]
    assert signals == [f"signal-{int(signal.SIGUSR1)}"], names  # the graceful stop, once
