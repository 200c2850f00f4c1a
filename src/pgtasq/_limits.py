"""What pgtasq accepts: every limit a value is checked against before any SQL, in one place.

A value PostgreSQL would refuse aborts the transaction it is sent in, which may be the
caller's; a value that only overflows later (``now() - retention`` in every worker's
cleaner) stops whoever meets it. So each limit below is what the schema *and every later
computation* can hold, and it is checked in Python first. The checks here return why a value
is refused (None when it is fine); each caller raises its own documented error with it
(`TaskValidationError`, `InvalidFilter`, `InvalidSchedule`, `ConfigurationError`).
docs/transactional-enqueue.md lists the limits.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from itertools import accumulate

# -- names and numbers (the CHECK constraints of the tables use the same constants) ----------

NAME_MAX_LENGTH = 128  # task types and queue names, in characters
IDEMPOTENCY_KEY_MAX_LENGTH = 255
UNIQUE_KEY_MAX_LENGTH = 255
PRIORITY_MIN = -100
PRIORITY_MAX = 100
MAX_ATTEMPTS_MAX = 2**31 - 1  # tasks.max_attempts is an int
ID_MAX = 2**63 - 1  # tasks.id is a bigint

# -- durations: delay, timeout, retention (and the durations of a worker's settings) ----------

# An interval holds microseconds: anything shorter rounds to zero (and a zero timeout or
# retention breaks the table's CHECK).
DURATION_MIN_SECONDS = 1e-6
# 100 years (of 365.25 days). ``now() + delay``, ``now() - retention`` and ``now() + lease``
# stay far inside PostgreSQL's timestamps (up to year 294276) and Python's (up to 9999).
DURATION_MAX_SECONDS = 3_155_760_000.0

# -- points in time: run_at, deadline -----------------------------------------------------------

# Python's datetime ends with year 9999; a stored timestamp is read back in the session's
# time zone (up to 16 hours either side of UTC), so a day of margin keeps every row readable.
TIMESTAMP_MIN = datetime(1, 1, 2, tzinfo=timezone.utc)
TIMESTAMP_MAX = datetime(9999, 12, 30, tzinfo=timezone.utc)

# -- JSON payloads ------------------------------------------------------------------------------

PAYLOAD_MAX_BYTES_DEFAULT = 1024 * 1024  # a Producer's max_payload_bytes, as UTF-8 JSON text
# The largest max_payload_bytes a Producer accepts. jsonb stores at most 256 MiB, and its
# binary form can be six times the text ("[0,0,…]"), so 32 MiB of text always fits.
PAYLOAD_MAX_BYTES_CEILING = 32 * 1024 * 1024
# Arrays and objects nested deeper than this are refused: Python's json (in the producer,
# in psycopg's loader, in a worker's thread) recurses once per level and would raise
# RecursionError long before PostgreSQL's own limit. serde_json uses the same default.
PAYLOAD_MAX_DEPTH = 128
# A task's headers (`Task.headers`): string keys and values, small enough to travel with
# every claim of the task.
HEADER_NAME_MAX_LENGTH = 255
HEADERS_MAX_BYTES = 16 * 1024  # as UTF-8 JSON text

# -- schema names -------------------------------------------------------------------------------

SCHEMA_NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Every PostgreSQL keyword that is not "unreserved" (pg_get_keywords() catcode R, T or C, up
# to PostgreSQL 18): unquoted, none of them works as a schema in every place pgtasq names one
# (``CAST(x AS int.task_status)`` is a syntax error). A test compares this with the server's.
_KEYWORDS_NOT_UNRESERVED = """
    all analyse analyze and any array as asc asymmetric authorization between bigint binary
    bit boolean both case cast char character check coalesce collate collation column
    concurrently constraint create cross current_catalog current_date current_role
    current_schema current_time current_timestamp current_user dec decimal default deferrable
    desc distinct do else end except exists extract false fetch float for foreign freeze from
    full grant greatest group grouping having ilike in initially inner inout int integer
    intersect interval into is isnull join json json_array json_arrayagg json_exists
    json_object json_objectagg json_query json_scalar json_serialize json_table json_value
    lateral leading least left like limit localtime localtimestamp merge_action national
    natural nchar none normalize not notnull null nullif numeric offset on only or order out
    outer overlaps overlay placing position precision primary real references returning right
    row select session_user setof similar smallint some substring symmetric system_user table
    tablesample then time timestamp to trailing treat trim true union unique user using values
    varchar variadic verbose when where window with xmlattributes xmlconcat xmlelement
    xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
"""
SQL_KEYWORDS_NOT_UNRESERVED = frozenset(_KEYWORDS_NOT_UNRESERVED.split())
# Schemas of the system: ``pg_`` is reserved by PostgreSQL for them (pg_catalog, pg_toast,
# pg_temp_N, …), and information_schema is the SQL standard's.
SYSTEM_SCHEMA_PREFIX = "pg_"
SYSTEM_SCHEMAS = frozenset({"information_schema"})


def schema_problem(schema: object) -> str | None:
    """Why ``schema`` cannot be a pgtasq schema (to follow "schema name"), or None."""
    if not isinstance(schema, str) or not SCHEMA_NAME_PATTERN.fullmatch(schema):
        return (
            f"must match {SCHEMA_NAME_PATTERN.pattern} (lower-case letters, digits, "
            "underscore; at most 63 characters)"
        )
    if schema.startswith(SYSTEM_SCHEMA_PREFIX) or schema in SYSTEM_SCHEMAS:
        return "must not be a system schema (pg_* and information_schema are PostgreSQL's)"
    if schema in SQL_KEYWORDS_NOT_UNRESERVED:
        return "must not be an SQL keyword (it could not be written without quotes)"
    return None


def text_problem(value: str) -> str | None:
    """Why PostgreSQL's text type would refuse ``value``, or None.

    text has no NUL character, and the value travels as UTF-8, which has no lone surrogates
    (``"\\ud800"``: a truncated emoji, bytes decoded with ``surrogateescape``).
    """
    if "\x00" in value:
        return "must not contain the NUL character (PostgreSQL text cannot store it)"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            return f"is not valid UTF-8: a lone surrogate {value[exc.start]!r} at index {exc.start}"
    return None


def duration_problem(value: object) -> str | None:
    """Why ``value`` (seconds as an int or float) is not a duration pgtasq stores, or None."""
    if value.__class__ is bool or not isinstance(value, (int, float)):
        return f"expected seconds or a timedelta, got {value!r}"
    # Compared before any conversion: float() of a huge int raises OverflowError.
    if not DURATION_MIN_SECONDS <= value <= DURATION_MAX_SECONDS:  # NaN fails too
        return (
            f"must be from {DURATION_MIN_SECONDS:g} s (1 µs) to {DURATION_MAX_SECONDS:g} s "
            f"(100 years), got {value!r}"
        )
    return None


def timestamp_problem(value: datetime) -> str | None:
    """Why an aware datetime is outside what a stored timestamp may be, or None."""
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:
        utc = None
    if utc is None or not TIMESTAMP_MIN <= utc <= TIMESTAMP_MAX:
        return (
            f"must be from {TIMESTAMP_MIN.isoformat()} to {TIMESTAMP_MAX.isoformat()}, "
            f"got {value.isoformat()}"
        )
    return None


# A NUL character inside a JSON string is the escape \u0000 after an even number of
# backslashes (the encoder writes a backslash as \\); the text "\u0000" is \\u0000.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_JSON_BRACKETS = re.compile(r"[\[\]{}]")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in a JSON text (0 for a scalar).

    Strings are cut out first (their brackets are not nesting): escaped backslashes, then
    escaped quotes, are dropped, and every other piece between quotes is outside a string.
    All of it runs in C; the Python loop of a plain scan cost more than the encoding.
    """
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(unescaped.split('"')[::2])
    brackets = _JSON_BRACKETS.findall(outside)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def json_problem(text: str) -> str | None:
    """Why jsonb (or a reader of it) would refuse this JSON text from `json.dumps`, or None.

    Cheap for the usual payload: a substring test, `str.isascii`, and a bracket count only
    when the text is long enough to nest past the limit.
    """
    if "\\u0000" in text and _JSON_NUL.search(text):
        return "contains the NUL character \\u0000, which PostgreSQL jsonb cannot store"
    if not text.isascii() and text_problem(text) is not None:
        return "has a string with a lone surrogate (not valid UTF-8, so not storable)"
    if (
        len(text) > 2 * PAYLOAD_MAX_DEPTH
        and text.count("[") + text.count("{") > PAYLOAD_MAX_DEPTH
        and json_depth(text) > PAYLOAD_MAX_DEPTH
    ):
        return f"nests arrays and objects more than {PAYLOAD_MAX_DEPTH} levels deep"
    return None
