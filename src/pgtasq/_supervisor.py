"""Run N worker processes and keep them running (``pgtasq worker --processes N``).

Each child is the same ``pgtasq worker`` command with ``--processes 1``. A child that dies
is restarted, with a growing pause if it keeps dying young, except when it exits with
`EXIT_MISCONFIGURED` (a wrong password, a schema not migrated, …: every new child would fail
the same way): then the others are stopped gracefully and the supervisor exits with that
code too.

Stopping. Supervisors signal in different ways: a terminal's Ctrl-C sends SIGINT to every
process of the foreground group (the children get it too), systemd's default
``KillMode=control-group`` sends SIGTERM to every process, ``docker stop`` and ``kill PID``
signal this process only. So that one signal is a graceful stop whichever way it was sent,
the children never count what this process passes on as a signal of the user's:

- the first SIGINT/SIGTERM this process gets sends SIGUSR1 to every child: "stop
  gracefully", which a child that is already stopping ignores;
- a second one sends SIGUSR2: "stop now"; only this process escalates, and only on a
  second signal of its own;
- a child counts the SIGINT/SIGTERM it gets directly (first graceful, second fast), as a
  single worker does;
- children start with SIGINT ignored until their worker is ready to handle it, so a
  Ctrl-C while they start cannot interrupt them mid-import; SIGUSR1 ends a child that has
  not started its worker yet, quietly.

One overall deadline: once stopping, the children get ``shutdown_timeout`` plus
`TEARDOWN_MARGIN` (they bound their own teardown to that) and a little more; any child still
alive then is killed and this process returns.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from types import FrameType

from pgtasq._cli_boundary import EXIT_MISCONFIGURED
from pgtasq._teardown import TEARDOWN_MARGIN

log = logging.getLogger("pgtasq.supervisor")

YOUNG_DEATH_SECONDS = 5.0
RESTART_PAUSE_MAX = 30.0
KILL_AFTER_MARGIN = 3.0  # then this long before a child that has not exited is killed
GRACEFUL = signal.SIGUSR1  # what the supervisor sends its children: stop gracefully
FAST = signal.SIGUSR2  # stop now
CHILD_ENV = "PGTASQ_SUPERVISED"  # set in the children's environment


def _ignore_sigint() -> None:  # pragma: no cover - runs in the forked child
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def exit_quietly(signum: int, frame: FrameType | None) -> None:
    """A child's handler of `GRACEFUL` and `FAST` until its worker runs: nothing to hand
    back yet, so it just ends (exit code 0, no traceback, no "Aborted!")."""
    raise SystemExit(0)


def while_starting() -> None:
    """In a supervised child, before its worker runs: stop requests end it quietly."""
    if supervised():
        for sig in (GRACEFUL, FAST, signal.SIGTERM):
            signal.signal(sig, exit_quietly)


def supervise(
    command: Sequence[str],
    processes: int,
    env: dict[str, str],
    *,
    burst: bool,
    on_exit: Callable[[int], None] | None = None,
    shutdown_timeout: float,
) -> int:
    """Run ``processes`` copies of ``command``; return the exit code for the parent.

    ``on_exit(pid)`` is called for each child that ended (the metrics forget its gauges)."""
    children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    pauses: dict[int, float] = {}
    signals = 0
    worst = 0
    fatal = 0
    kill_at: float | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals, kill_at
        signals += 1
        forward = GRACEFUL if signals == 1 else FAST
        if signals == 1:
            kill_at = time.monotonic() + shutdown_timeout + TEARDOWN_MARGIN + KILL_AFTER_MARGIN
        for child, _ in children.values():
            if child.poll() is None:
                child.send_signal(forward)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def spawn(slot: int) -> None:
        child = subprocess.Popen(
            list(command), env={**env, CHILD_ENV: "1"}, preexec_fn=_ignore_sigint
        )
        children[slot] = (child, time.monotonic())
        log.debug("started worker process %d", child.pid)

    try:
        for slot in range(processes):
            if signals:
                break
            spawn(slot)
        while children:
            time.sleep(0.2)
            if kill_at is not None and time.monotonic() > kill_at:
                for child, _ in children.values():
                    if child.poll() is None:
                        log.error("worker process %d did not stop in time; killing it", child.pid)
                        child.kill()
                        child.wait()
                break
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
                    if kill_at is None:
                        kill_at = (
                            time.monotonic()
                            + shutdown_timeout
                            + TEARDOWN_MARGIN
                            + KILL_AFTER_MARGIN
                        )
                    for other, _ in children.values():
                        if other.poll() is None:
                            other.send_signal(GRACEFUL)
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
    if signals:
        log.info("all worker processes stopped")
    return fatal or (0 if signals else worst)


def supervised() -> bool:
    """Whether this process is a child of `supervise`."""
    return os.environ.get(CHILD_ENV) == "1"
