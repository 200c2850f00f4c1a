"""Bulk actions as jobs: they run in the background of the server, in batches, and their
page shows how far they got (the Client's ``progress`` callback) until they end.

A job is known by a random id, kept in memory by the process that runs it (the last
`JOBS_KEPT`), and cancelled when the app shuts down: the batches committed so far stay
done, the rest is not changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

import psycopg

from pgtasq.errors import PgtasqError

JOBS_KEPT = 100

Run = Callable[[Callable[[int], None]], Awaitable[int]]

log = logging.getLogger("pgtasq.web")


@dataclasses.dataclass
class Job:
    """One bulk action: what, by whom, how many were expected and how many are done."""

    id: str
    action: str
    who: str
    described: str
    expected: int
    started: float
    done: int = 0
    finished: bool = False
    error: str | None = None
    task: asyncio.Task[None] | None = dataclasses.field(default=None, repr=False)

    @property
    def percent(self) -> int:
        if self.finished and self.error is None:
            return 100
        return min(99, int(100 * self.done / self.expected)) if self.expected else 0


class Jobs:
    """The jobs of one dashboard."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def start(self, *, action: str, who: str, described: str, expected: int, run: Run) -> Job:
        job = Job(secrets.token_urlsafe(12), action, who, described, expected, time.time())

        def progress(done: int) -> None:
            job.done = done

        async def body() -> None:
            try:
                job.done = await run(progress)
            except (PgtasqError, psycopg.Error) as exc:
                text = str(exc).strip()
                job.error = text.splitlines()[0] if text else type(exc).__name__
            finally:
                job.finished = True
                log.info(
                    "%s: %s %d task(s) (%s)%s",
                    who,
                    action,
                    job.done,
                    described,
                    "" if job.error is None else f", stopped: {job.error}",
                )

        job.task = asyncio.get_running_loop().create_task(body(), name=f"pgtasq-web-{job.id}")
        self._jobs[job.id] = job
        finished = [j for j in self._jobs.values() if j.finished]
        for old in finished[: max(0, len(self._jobs) - JOBS_KEPT)]:
            del self._jobs[old.id]
        return job

    async def close(self) -> None:
        """Cancel the jobs still running and wait for them to stop."""
        running = [j.task for j in self._jobs.values() if j.task is not None and not j.finished]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
