"""Run N worker processes and keep them running (``pgtasq worker --processes N``).

Each child is the same ``pgtasq worker`` command with ``--processes 1``. A child that dies
is restarted, with a growing pause if it keeps dying young, except when it exits with
`EXIT_MISCONFIGURED` (a wrong password, a schema not migrated, …: every new child would fail
the same way): then the others are stopped and the supervisor exits with that code too.
SIGINT/SIGTERM are passed on to every child: the first asks for a graceful shutdown, the
second for an immediate one.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from types import FrameType

from pgtasq._cli_boundary import EXIT_MISCONFIGURED

log = logging.getLogger("pgtasq.supervisor")

YOUNG_DEATH_SECONDS = 5.0
RESTART_PAUSE_MAX = 30.0


def supervise(
    command: Sequence[str],
    processes: int,
    env: dict[str, str],
    *,
    burst: bool,
    on_exit: Callable[[int], None] | None = None,
) -> int:
    """Run ``processes`` copies of ``command``; return the exit code for the parent.

    ``on_exit(pid)`` is called for each child that ended (the metrics forget its gauges)."""
    children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    pauses: dict[int, float] = {}
    signals = 0
    worst = 0
    fatal = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        for child, _ in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def spawn(slot: int) -> None:
        children[slot] = (subprocess.Popen(list(command), env=env), time.monotonic())

    try:
        for slot in range(processes):
            spawn(slot)
        while children:
            time.sleep(0.2)
            for slot, (child, started) in list(children.items()):
                code = child.poll()
                if code is None:
                    continue
                del children[slot]
                if on_exit is not None:
                    on_exit(child.pid)
                if signals or fatal or (burst and code == 0):
                    worst = worst or code
                    continue
                if code == EXIT_MISCONFIGURED:
                    # Its one `error:` line said why; restarting cannot fix it.
                    worst = fatal = code
                    for other, _ in children.values():
                        if other.poll() is None:
                            other.send_signal(signal.SIGTERM)
                    continue
                if code != 0:
                    worst = worst or code
                lived = time.monotonic() - started
                pause = pauses.get(slot, 0.5) * 2 if lived < YOUNG_DEATH_SECONDS else 0.5
                pauses[slot] = min(pause, RESTART_PAUSE_MAX)
                log.warning(
                    "worker process %d exited with %d after %.1f s; restarting in %.1f s",
                    child.pid,
                    code,
                    lived,
                    pauses[slot],
                )
                deadline = time.monotonic() + pauses[slot]
                while time.monotonic() < deadline and not signals:
                    time.sleep(0.1)
                if not signals and not fatal:
                    spawn(slot)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return fatal or (0 if signals else worst)
