"""The suite's shortcut, checked: a cloned schema (tests/conftest.py) is what
`pgtasq.migrate` makes, down to the catalog, so tests on clones test the real thing."""

from __future__ import annotations

from typing import Any

import psycopg

import pgtasq

# Each query lists one kind of object of schema %(s)s, as text that names no schema (the
# schema's name is replaced afterwards), sorted, so that two schemas compare equal.
CATALOG: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, c.reloptions::text, c.relacl::text,
               c.relhasindex, c.relhastriggers, c.relrowsecurity, c.relreplident,
               am.amname, obj_description(c.oid, 'pg_class')
        FROM pg_class c LEFT JOIN pg_am am ON am.oid = c.relam
        WHERE c.relnamespace = %(s)s::regnamespace
        ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, a.attidentity, a.attgenerated, a.atthasdef,
               pg_get_expr(d.adbin, d.adrelid), a.attstorage, a.attcompression,
               -- Some servers stamp each new column with an option of their own (pg_attver),
               -- different in every schema: not one a migration sets.
               array(SELECT o FROM unnest(a.attoptions) o
                     WHERE split_part(o, '=', 1) <> 'pg_attver')::text,
               coll.collname, col_description(c.oid, a.attnum)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation coll ON coll.oid = a.attcollation
        WHERE c.relnamespace = %(s)s::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2""",
    "indexes": """
        SELECT c.relname, pg_get_indexdef(c.oid), i.indisunique, i.indisprimary,
               i.indisvalid, i.indisclustered, i.indisreplident
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relnamespace = %(s)s::regnamespace
        ORDER BY 1""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid),
               condeferrable, condeferred, convalidated
        FROM pg_constraint
        WHERE connamespace = %(s)s::regnamespace
        ORDER BY 1, 2""",
    "sequences": """
        SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
               s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
               pg_get_serial_sequence(t.oid::regclass::text, a.attname)
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        LEFT JOIN pg_depend dep
            ON dep.objid = c.oid AND dep.classid = 'pg_class'::regclass AND dep.deptype = 'i'
        LEFT JOIN pg_class t ON t.oid = dep.refobjid
        LEFT JOIN pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
        WHERE c.relnamespace = %(s)s::regnamespace
        ORDER BY 1""",
    "types": """
        SELECT t.typname, t.typtype, t.typcategory,
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
                FROM pg_enum e WHERE e.enumtypid = t.oid)::text
        FROM pg_type t
        WHERE t.typnamespace = %(s)s::regnamespace
        ORDER BY 1""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
        FROM pg_proc p
        WHERE p.pronamespace = %(s)s::regnamespace
        ORDER BY 1, 2""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = %(s)s::regnamespace
        ORDER BY 1, 2""",
    "rules_and_policies": """
        SELECT 'rule', tablename::text, rulename::text, definition
        FROM pg_rules WHERE schemaname = %(s)s
        UNION ALL
        SELECT 'policy', tablename::text, policyname::text, qual
        FROM pg_policies WHERE schemaname = %(s)s
        ORDER BY 1, 2, 3""",
    "views": """
        SELECT viewname::text, definition FROM pg_views WHERE schemaname = %(s)s ORDER BY 1""",
    "schema": """
        SELECT nspacl::text, obj_description(oid, 'pg_namespace')
        FROM pg_namespace WHERE nspname = %(s)s""",
}


def catalog(dsn: str, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything `CATALOG` lists about ``schema``, plus its Alembic version rows, with the
    schema's name written as ``<schema>``."""

    def plain(value: Any) -> Any:
        return value.replace(schema, "<schema>") if isinstance(value, str) else value

    found: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for kind, query in CATALOG.items():
            rows = conn.execute(query, {"s": schema}).fetchall()
            found[kind] = [tuple(plain(v) for v in row) for row in rows]
        found["alembic_version"] = conn.execute(
            f"SELECT version_num FROM {schema}.alembic_version ORDER BY 1"
        ).fetchall()
    return found


def test_a_clone_is_a_migrated_schema(pg_dsn: str, fresh_schema: str, schema: str) -> None:
    pgtasq.migrate(pg_dsn, schema=fresh_schema)
    migrated = catalog(pg_dsn, fresh_schema)
    cloned = catalog(pg_dsn, schema)
    assert cloned == migrated
    # The comparison sees every kind of object a migration makes.
    assert all(migrated[kind] for kind in ("relations", "columns", "indexes", "constraints"))
    assert all(migrated[kind] for kind in ("sequences", "types", "alembic_version"))
    assert any(row[3] for row in migrated["relations"]), "no storage option seen"
    assert migrated["alembic_version"] == [(pgtasq.current_revision(pg_dsn, schema=schema),)]


def test_the_comparison_sees_a_difference(pg_dsn: str, schema: str, other_schema: str) -> None:
    """Not a test that cannot fail: each kind of drift shows."""
    assert catalog(pg_dsn, schema) == catalog(pg_dsn, other_schema)
    changes = [
        "ALTER TABLE {s}.tasks SET (fillfactor = 90)",
        "ALTER TABLE {s}.tasks ALTER COLUMN priority SET DEFAULT 1",
        "ALTER TABLE {s}.tasks ADD CONSTRAINT tasks_x CHECK (attempts < 1000)",
        "CREATE INDEX tasks_x_idx ON {s}.tasks (type)",
        "ALTER TYPE {s}.task_status ADD VALUE 'x'",
        "ALTER SEQUENCE {s}.tasks_id_seq CACHE 10",
        "CREATE FUNCTION {s}.f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
        "CREATE TRIGGER t BEFORE INSERT ON {s}.queues FOR EACH ROW EXECUTE FUNCTION {s}.f()",
        "UPDATE {s}.alembic_version SET version_num = 'x'",
    ]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for change in changes:
            before = catalog(pg_dsn, other_schema)
            conn.execute(change.format(s=other_schema))
            assert catalog(pg_dsn, other_schema) != before, change
