"""The migrations create the columns `pgtasq._columns.COLUMNS` describes."""

from __future__ import annotations

import psycopg

from pgtasq import _columns
from pgtasq.tables import STATUS_ENUM, TASKS_TABLE

# information_schema's spelling of the types _columns.COLUMNS uses
_SPELLED = {"timestamptz": "timestamp with time zone", STATUS_ENUM: "USER-DEFINED"}


def test_migrated_tasks_table_has_the_columns(pg_dsn: str, schema: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, TASKS_TABLE),
        ).fetchall()
    found = {name: kind for name, kind in rows}
    wanted = {c.name: _SPELLED.get(c.type, c.type) for c in _columns.COLUMNS}
    assert found == wanted, (
        "write a migration (migrations/versions/) that gives the tasks table the columns of "
        f"_columns.COLUMNS: the database has {sorted(found.items() - wanted.items())}, "
        f"the table says {sorted(wanted.items() - found.items())}"
    )
