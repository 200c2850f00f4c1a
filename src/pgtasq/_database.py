"""The worker's side of the database boundary: which errors mean "try again", how long
to wait before trying, and running one statement on an async connection."""

from __future__ import annotations

import random
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from pgtasq import _sql

# The database is away (restart, failover, network, terminated backend): log, wait, retry.
RETRYABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


class Backoff:
    """Exponential backoff with jitter, from ``first`` up to ``cap`` seconds."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        delay = self.current
        self.current = min(self.cap, self.current * 2)
        return delay * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.current = self.first


async def fetch(
    conn: psycopg.AsyncConnection[Any], stmt: _sql.Statement, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run one of the worker's statements on an autocommit connection of its pool.

    The statement and `_sql.worker_settings_local` go in one pipeline with one Sync: one
    round trip, one implicit transaction, so the setting applies to this statement's commit
    and ends with it. No session state is left behind (PgBouncer in transaction mode)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        async with conn.pipeline():
            await conn.execute(_sql.worker_settings_local.text)
            await cur.execute(stmt.text, params)
        return await cur.fetchall() if cur.description is not None else []


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
