"""Enqueue tasks: `Producer` and `AsyncProducer`.

With ``conn=`` the producer runs on the caller's connection and never commits: the task
exists if and only if the caller's transaction commits. Without it, the producer takes a
connection from its own pool and commits.

What to send is decided in `pgtasq._enqueue`, without I/O (one task: one INSERT; many
keyless tasks on psycopg: COPY; otherwise arrays and unnest). The classes here only run its
steps: on a psycopg cursor (the caller's connection, or a reusable cursor per connection of
our pool) or through the SQLAlchemy runner of `pgtasq._connections`.

`AsyncProducer` is written once (``_producer_async.py``); `Producer` is generated from it
(``_producer_sync.py``, by ``python tools/gen_sync.py``).
"""

from __future__ import annotations

from pgtasq._producer_async import AsyncProducer
from pgtasq._producer_base import BATCH_SIZE_DEFAULT
from pgtasq._producer_sync import Producer

__all__ = ["BATCH_SIZE_DEFAULT", "AsyncProducer", "Producer"]
