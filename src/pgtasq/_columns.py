"""The columns of the tasks table, written once.

Every SQL column list pgtasq sends is rendered from `COLUMNS` (see `pgtasq._sql`): the row a
reader selects (`TASK_COLUMNS`) and its preview, the row a worker claims (with the task's
limits clamped to what Python can load), the columns and values of the three enqueues
(`task_insert`'s arrays, `task_insert_one`'s scalars, `task_insert_copy`'s columns).

What is hand-unrolled for speed (`Task.__init__`, `TaskInfo.from_row`, `_pending_info`,
`_enqueue`'s parameters and COPY rows, `Schedule.options`) and what is described elsewhere
(`tables.metadata`, the migrations) is compared with this table by
tests/unit/test_columns.py and tests/integration/test_migrations.py: adding a column is a
row here, then the edits those tests name.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pgtasq._limits import TIMESTAMP_MAX, TIMESTAMP_MIN

# The row as `list_tasks(full=False)` reads it: of the payload and the result only their
# first PREVIEW_CHARS + 1 characters of JSON text (the one past says that there is more),
# and of the errors only the latest, without its traceback. A listing then costs what it
# shows, whatever the tasks carry.
PREVIEW_CHARS = 200

# What a worker reads of a task's own limits is clamped to what Python can load: a deadline of
# 'infinity' or after year 9999, an interval past timedelta's range (or PostgreSQL 17's
# infinite ones, which psycopg reads as 0) would fail the claim after it took the rows.
_DEADLINE_MAX = f"timestamptz '{TIMESTAMP_MAX.isoformat()}'"
_DEADLINE_MIN = f"timestamptz '{TIMESTAMP_MIN.isoformat()}'"
_INTERVAL_MAX = "interval '1000 years'"


def _interval_clamp(column: str) -> str:
    return f"CASE WHEN t.{column} > {_INTERVAL_MAX} THEN {_INTERVAL_MAX} ELSE t.{column} END"


Copy = Literal["always", "optional"]


class Param(NamedTuple):
    """A value an enqueue sends for a column: a `Task` option of the same name.

    ``type``: its SQL type (each array of `task_insert` is ``type[]``). ``schedule``: whether
    `Schedule.options` stores it (the others are per tick, or stored in columns of their own).
    """

    name: str
    type: str
    schedule: bool = False


class Column(NamedTuple):
    """One column of the tasks table, and how each statement reads or writes it.

    ``type``: as information_schema's ``data_type`` (or ``udt_name`` for the enum) says it.
    ``select``: how a reader selects it (jsonb and the enum travel as text, so every driver
    returns the same Python types); ``preview``: the same, for a listing; ``clamp``: what a
    worker's claim returns instead (``t.`` is the claimed row). ``params``: the `Task`
    options an enqueue sends for it (none: the column keeps its default); ``value`` the
    expression of one row's `task_insert_one` (``%(name)s`` placeholders), ``bulk`` that of
    `task_insert` (over the unnest's columns, named as the params). ``copy``: whether
    `task_insert_copy` sends it always, or only when a task of the batch sets it.
    ``claim``: whether a worker's claim returns it (a column no handler reads up front is
    left out, so the claim's rows stay lean; `TaskInfo.from_row` reads it as None).
    """

    name: str
    type: str
    select: str = ""
    preview: str = ""
    clamp: str = ""
    params: tuple[Param, ...] = ()
    value: str = ""
    bulk: str = ""
    copy: Copy | None = None
    claim: bool = True

    @property
    def selected(self) -> str:
        return self.select or self.name

    @property
    def previewed(self) -> str:
        return self.preview or self.selected


def _option(name: str, type: str, copy: Copy | None, *, schedule: bool = False) -> Column:
    """A column set from the `Task` option of the same name, as given (a plain cast)."""
    return Column(
        name,
        type,
        params=(Param(name, type, schedule),),
        value=f"CAST(%({name})s AS {type})",
        bulk=name,
        copy=copy,
    )


def _duration(name: str, copy: Copy | None) -> Column:
    """An interval column from a `Task` option in seconds (float8), clamped when claimed."""
    return Column(
        name,
        "interval",
        clamp=_interval_clamp(name),
        params=(Param(name, "float8", schedule=True),),
        value=f"make_interval(secs => CAST(%({name})s AS float8))",
        bulk=f"make_interval(secs => {name})",
        copy=copy,
    )


_PREVIEW = f"left({{0}}::text, {PREVIEW_CHARS + 1}) AS {{0}}"

COLUMNS: tuple[Column, ...] = (
    Column("id", "bigint", copy="always"),
    _option("queue", "text", "always", schedule=True),
    _option("type", "text", "always"),  # the schedules table has a column of its own
    Column(
        "payload",
        "jsonb",
        select="payload::text AS payload",
        preview=_PREVIEW.format("payload"),
        params=(Param("payload", "text"),),
        value="CAST(%(payload)s AS jsonb)",
        bulk="payload::jsonb",
        copy="always",
    ),
    _option("priority", "smallint", "always", schedule=True),
    Column("status", "task_status", select="status::text AS status"),
    Column(
        "run_at",
        "timestamptz",
        # run_at (an aware datetime, per tick for a schedule) or delay (seconds), or now
        params=(Param("run_at", "timestamptz"), Param("delay", "float8", schedule=True)),
        value="coalesce(CAST(%(run_at)s AS timestamptz),\n"
        "             now() + make_interval(secs => coalesce(CAST(%(delay)s AS float8), 0)))",
        bulk="coalesce(run_at, now() + make_interval(secs => coalesce(delay, 0)))",
        copy="optional",
    ),
    Column("attempts", "integer"),
    _option("max_attempts", "int", "always", schedule=True)._replace(type="integer"),
    _duration("timeout", "optional"),
    _option("deadline", "timestamptz", "optional")._replace(
        clamp=f"CASE WHEN t.deadline > {_DEADLINE_MAX} THEN {_DEADLINE_MAX} "
        f"WHEN t.deadline < {_DEADLINE_MIN} THEN {_DEADLINE_MIN} ELSE t.deadline END"
    ),
    # never COPY'd: only task_insert and task_insert_one arbitrate keys (ON CONFLICT)
    _option("idempotency_key", "text", None),
    Column(
        "errors",
        "jsonb",
        select="errors::text AS errors",
        preview="CASE WHEN errors = '[]' THEN '[]' "
        "ELSE jsonb_build_array((errors -> -1) - 'traceback')::text END AS errors",
    ),
    Column("result", "jsonb", select="result::text AS result", preview=_PREVIEW.format("result")),
    Column("locked_by", "text"),
    Column("locked_until", "timestamptz"),
    Column("created_at", "timestamptz"),
    Column("updated_at", "timestamptz"),
    Column("attempted_at", "timestamptz"),
    Column("finalized_at", "timestamptz"),
    _duration("retention", "optional"),
    Column(
        "headers",
        "jsonb",
        select="headers::text AS headers",
        # a dict of strings as JSON text, or None for none ({}: the column's default)
        params=(Param("headers", "text", schedule=True),),
        value="coalesce(CAST(%(headers)s AS jsonb), '{}')",
        bulk="coalesce(headers::jsonb, '{}')",
        copy="optional",
    ),
    # never COPY'd either: a batch with unique keys goes through task_insert (docs/unique.md)
    _option("unique_key", "text", None),
    Column(
        "unique_until",
        "timestamptz",
        # unique_for (seconds) after the row's creation (now(), as created_at), or NULL
        params=(Param("unique_for", "float8"),),
        value="now() + make_interval(secs => CAST(%(unique_for)s AS float8))",
        bulk="now() + make_interval(secs => unique_for)",
    ),
    # What the running attempt reported (`TaskContext.set_progress`): written by the worker's
    # progress writer, reset by the claim, never returned by it (see `pgtasq._progress`).
    Column("progress", "jsonb", select="progress::text AS progress", claim=False),
)

# The columns of the keys ON CONFLICT arbitrates: a keyless enqueue leaves them out, and one
# with only an idempotency key leaves out the unique key's.
UNIQUE_COLUMNS = frozenset({"unique_key", "unique_until"})
KEY_COLUMNS = UNIQUE_COLUMNS | {"idempotency_key"}
NAMES = tuple(c.name for c in COLUMNS)
INSERTED = tuple(c for c in COLUMNS if c.params)
# The parameters of one enqueue, in column order: `task_insert`'s arrays (name, element type).
INSERT_ARRAYS = tuple((p.name, p.type) for c in INSERTED for p in c.params)
# The Task options (after type and payload, its positional fields), as enqueue sends them.
TASK_OPTIONS = tuple(name for name, _ in INSERT_ARRAYS)
# The columns `task_insert_copy` always sends, and those it sends only when a task of the
# batch sets them (a column left out costs the server nothing: its default is now() or NULL).
COPY_COLUMNS = tuple(c.name for c in COLUMNS if c.copy == "always")
COPY_COLUMNS_OPTIONAL = tuple(c.name for c in COLUMNS if c.copy == "optional")
# What `Schedule.options` stores of a task.
SCHEDULE_OPTIONS = tuple(p.name for c in INSERTED for p in c.params if p.schedule)


def wrap(items: list[str], indent: str) -> str:
    """``items`` joined by commas, in lines of at most 88 characters after ``indent`` (never
    breaking an item); the first line without the indent, for placing after a keyword."""
    lines = [""]
    for item in items:
        if lines[-1] and len(indent) + len(lines[-1]) + len(item) + 2 > 88:
            lines[-1] += ","
            lines.append(item)
        else:
            lines[-1] += f", {item}" if lines[-1] else item
    return f"\n{indent}".join(lines)


def _listing(items: list[str], indent: str = "    ") -> str:
    """One item per entry, wrapped; multi-line items keep their own lines."""
    if any("\n" in item for item in items):
        return (",\n" + indent).join(items)
    return wrap(items, indent)


# A row of the tasks table as TaskInfo.from_row reads it.
TASK_COLUMNS = wrap([c.selected for c in COLUMNS], "    ")
TASK_COLUMNS_PREVIEW = wrap([c.previewed for c in COLUMNS], "    ")
# The same, of the row ``t`` (an UPDATE's or DELETE's RETURNING), and as a worker's claim
# returns it (the task's limits clamped).
TASK_COLUMNS_T = wrap([f"t.{c.selected}" for c in COLUMNS], "    ")
TASK_COLUMNS_CLAIMED = ",\n    ".join(
    f"{c.clamp} AS {c.name}" if c.clamp else f"t.{c.selected}" for c in COLUMNS if c.claim
)
# The columns a claim leaves out (`TaskInfo.from_row` reads them as None).
NOT_CLAIMED = tuple(c.name for c in COLUMNS if not c.claim)
# The names alone (of a CTE holding rows selected with TASK_COLUMNS).
TASK_COLUMN_NAMES = wrap(list(NAMES), "    ")


def insert_columns(*, omit: frozenset[str] = frozenset(), indent: str = "     ") -> str:
    """The column list of an enqueue's INSERT, without the columns ``omit`` names."""
    return wrap([c.name for c in INSERTED if c.name not in omit], indent)


def insert_values(*, omit: frozenset[str] = frozenset()) -> str:
    """`task_insert_one`'s VALUES: one expression per column of `insert_columns`."""
    return _listing([c.value for c in INSERTED if c.name not in omit])


def insert_select() -> str:
    """`task_insert`'s SELECT list over the unnest of `INSERT_ARRAYS`."""
    return wrap([c.bulk for c in INSERTED], "           ")
