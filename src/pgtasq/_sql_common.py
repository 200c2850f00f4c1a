"""What every statement of `pgtasq._sql` is built from: `Statement`, the channels, the
fragments (wake-ups, events, bounded durations, the errors history) and `statement`, the
descriptor that makes one method one named statement of a schema.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from pgtasq._limits import DURATION_MAX_SECONDS
from pgtasq.tables import check_schema_name

if TYPE_CHECKING:
    from sqlalchemy import TextClause

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")

# Durations added to now() (a lease, a retry's backoff) are clamped to this in the statement
# itself: whatever a handler, a setting or a stored row says, the sum stays a timestamp that
# PostgreSQL and Python can hold (make_interval() and timestamp arithmetic raise on overflow).
SECONDS_MAX = DURATION_MAX_SECONDS  # 100 years: the longest duration pgtasq accepts anywhere
# Retentions beyond this keep a task "forever": the cleaner's cut-off now() - retention must
# stay a valid timestamp, however large a stored retention is.
RETENTION_CUTOFF_MAX = "interval '1000 years'"
# The `errors` history a task keeps: the first attempt's entry and the latest ERRORS_KEPT - 1.
# When entries were dropped, the second entry carries "dropped_before": how many.
ERRORS_KEPT = 20


def seconds(value: str, cap: float = SECONDS_MAX) -> str:
    """``make_interval`` of ``value`` seconds (float8), clamped to 0..cap (NaN: cap)."""
    return f"make_interval(secs => least(greatest({value}, 0), {cap!r}))"


def errors_append(entry: str) -> str:
    """``t.errors`` with ``entry`` (a jsonb object) appended, bounded to `ERRORS_KEPT`
    entries: the first one, then the latest, the first of which says how many were dropped
    before it (``dropped_before``, counted across every trim). Trimmed before appending, so
    a history at jsonb's size limit still takes the entry. Total on whatever a row holds:
    a non-array ``errors`` becomes the first entry of an array, a non-object one is wrapped.
    """
    k = ERRORS_KEPT
    before = "a -> 1 -> 'dropped_before'"
    return f"""(
        SELECT CASE WHEN m < {k} THEN a ELSE
            jsonb_build_array(a -> 0, CASE WHEN jsonb_typeof(c) = 'object' THEN c || d
                                      ELSE jsonb_build_object('entry', c) || d END)
            || jsonb_path_query_array(a, '$[$from to last]',
                                      jsonb_build_object('from', m - {k - 3}))
        END || jsonb_build_array({entry})
        FROM (SELECT a, m, a -> (m - {k - 2}) AS c, jsonb_build_object('dropped_before',
                CASE WHEN jsonb_typeof({before}) = 'number' THEN ({before})::numeric ELSE 0 END
                + (m - {k - 1})) AS d
              FROM (SELECT a, jsonb_array_length(a) AS m
                    FROM (SELECT CASE WHEN jsonb_typeof(t.errors) = 'array' THEN t.errors
                                 ELSE jsonb_build_array(t.errors) END AS a) arrayed) counted
        ) trimmed
    )"""


# At most this many ids per event notification (NOTIFY payloads are limited to 8000 bytes);
# "count" always says how many tasks the event covers.
EVENT_IDS_MAX = 300
# A wake-up's queue list longer than this says "*" (any queue) instead: with EVENT_IDS_MAX
# ids of up to 20 characters the payload stays under NOTIFY's 8000 bytes.
NOTIFY_QUEUES_MAX = 1500
# The idempotency keys of scheduler ticks start with this (see `scheduler.entry_key_prefix`).
SCHEDULE_KEY_PREFIX = "pgtasq:schedule:"


def wake(channel: str, queues: str, count: str, ids: str) -> str:
    """The wake-up NOTIFY, which is also the ``enqueued`` event: a JSON object with the queues
    (a JSON array, or "*" when it would be too long), how many tasks and their first ids.
    ``queues`` and ``ids`` are json expressions, ``count`` an integer one. Each statement's
    payload names its own ids, so PostgreSQL never folds two statements' wake-ups into one
    (it drops identical notifications of one transaction) and the counts add up."""
    return (
        f"pg_notify('{channel}', json_build_object("
        f"'queues', CASE WHEN octet_length(CAST({queues} AS text)) <= {NOTIFY_QUEUES_MAX} "
        f"""THEN {queues} ELSE '"*"'::json END, 'count', {count}, 'ids', {ids})::text)"""
    )


FIRST_IDS = f"to_json((array_agg(id ORDER BY id))[1:{EVENT_IDS_MAX}])"


def wake_rows(channel: str, source: str) -> str:
    """The wake-up for the rows (id, queue) of ``source``: one per statement, none for no rows."""
    return (
        f"SELECT {wake(channel, 'json_agg(DISTINCT queue)', 'count(*)', FIRST_IDS)} "
        f"FROM {source} HAVING count(*) > 0"
    )


# The arbiters of ON CONFLICT: every unique index, so both the partial one on idempotency_key
# and the one on unique_key (a row conflicting on either is skipped; the primary key never
# conflicts, its ids come from the sequence). DO NOTHING needs no named target.
ON_KEY_CONFLICT = "ON CONFLICT DO NOTHING"


@dataclasses.dataclass(frozen=True)
class Statement:
    name: str
    text: str

    @functools.cached_property
    def sqlalchemy(self) -> TextClause:
        """The statement as a SQLAlchemy ``text()`` with ``:name`` placeholders."""
        from sqlalchemy import text

        return text(_PLACEHOLDER.sub(r":\1", self.text))


# The worker's own bookkeeping (claims, heartbeats, outcomes, release, rescue) does not wait
# for fsync. The setting is local to the statement's implicit transaction (the worker's
# connections are autocommit), so nothing is left on the connection (a transaction-mode
# PgBouncer would hand a session setting to other clients).
# Safe under at-least-once delivery: if PostgreSQL crashes, the last few claims or outcomes
# may be forgotten, and those tasks run again.
#
# Written into the final SELECT of each hot worker statement (claim, heartbeat, outcomes,
# release, rescue) as a qual that references no row: PostgreSQL makes it the plan's
# One-Time Filter, evaluated once whether or not the statement returns rows. So the setting
# costs no extra message or round trip (it was a second statement in a pipeline: ~5 us of
# client CPU per task in the drain), and it ends with the statement's implicit transaction.
# `task_finish_many_in_tx`, which runs in a handler's own transaction (`ctx.complete`), has
# no such qual: the user's transaction keeps the durability it asked for.
ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) = 'off'"


# A worker's check that LISTEN works on its connection: a NOTIFY from another connection
# that must come back (through PgBouncer in transaction mode it never does).
listen_probe = Statement(
    "listen_probe", "SELECT pg_notify(CAST(%(channel)s AS text), CAST(%(payload)s AS text))"
)


# The channels of a schema: one per purpose, ``pgtasq_<purpose>_<schema>``. A schema name is
# lower-case letters, digits and "_", so a name too long for PostgreSQL's 63-byte limit is
# replaced by a hash behind "#" (a character no schema name has): a hashed channel never
# equals a plain one, and the purpose letter sits at a fixed place, so no two schemas and no
# two purposes ever share a channel.
CHANNEL_PURPOSES = {"wake": "w", "events": "e"}
_CHANNEL_MAX = 63


def channel_name(purpose: str, schema: str) -> str:
    """The LISTEN/NOTIFY channel of one purpose (``wake``, ``events``) of one schema."""
    check_schema_name(schema)
    head = f"pgtasq_{CHANNEL_PURPOSES[purpose]}"
    channel = f"{head}_{schema}"
    if len(channel) > _CHANNEL_MAX:
        digest = hashlib.sha256(schema.encode()).hexdigest()
        channel = f"{head}#{digest[: _CHANNEL_MAX - len(head) - 1]}"
    return channel


def notify_channel(schema: str) -> str:
    """The channel that wakes a schema's idle workers (its payload: the queues)."""
    return channel_name("wake", schema)


def events_channel(schema: str) -> str:
    """The channel task events go out on (see `Client.events`)."""
    return channel_name("events", schema)


def events_cte(channel: str, source: str, kind: str) -> str:
    """A CTE sending one notification per kind of event among ``source``'s rows."""
    return f"""events AS (
    SELECT pg_notify('{channel}', json_build_object(
        'event', kind, 'count', count(*),
        'ids', (array_agg(id ORDER BY id))[1:{EVENT_IDS_MAX}])::text)
    FROM (SELECT {kind} AS kind, id FROM {source}) e GROUP BY kind
)"""


# Appended to a statement's final SELECT so that its `events` CTE runs (a CTE that only
# SELECTs runs when it is referenced; this uncorrelated subquery runs once).
EMIT = "(SELECT count(*) FROM events) >= 0"


# Bounds the statements after it in the same transaction (the worker's teardown uses it).
setting_statement_timeout_local = Statement(
    "setting_statement_timeout_local",
    "SELECT set_config('statement_timeout', %(milliseconds)s, true)",
)


class SchemaStatements:
    """The statements of one schema, each built on first use and kept (see `statement`)."""

    def __init__(self, schema: str, *, worker_events: bool = False) -> None:
        self.schema = check_schema_name(schema)
        self.worker_events = worker_events
        self.channel = notify_channel(schema)  # the wake-up channel
        self.events = events_channel(schema)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The names of every statement, in the order they are defined."""
        seen: dict[str, None] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, statement):
                    seen[name] = None
        return tuple(seen)


class statement:
    """One named statement of a schema: the decorated method returns its text, and the
    attribute of that name is the `Statement`, built on first use and then kept in the
    instance (a plain attribute read from then on: the descriptor defines no ``__set__``).
    Adding a statement is adding one such method."""

    def __init__(self, build: Callable[[Any], str]) -> None:
        self.build = build
        self.name = build.__name__
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> statement: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> Statement: ...

    def __get__(self, instance: object, owner: type | None = None) -> Statement | statement:
        if instance is None:
            return self
        stmt = Statement(self.name, self.build(instance))
        instance.__dict__[self.name] = stmt
        return stmt
