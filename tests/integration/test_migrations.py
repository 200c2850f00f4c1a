from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import pgtasq
from pgtasq import TaskStatus, tables
from pgtasq._migrate import migrations_path, sqlalchemy_url

HEAD = "pgtasq_0006"


@pytest.fixture
def schema(migrated_schema: str) -> str:
    """Here the schema is made by running the migrations, not cloned (tests/conftest.py)."""
    return migrated_schema


def _tables(dsn: str, schema: str) -> set[str]:
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade(pg_dsn: str, fresh_schema: str) -> None:
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) is None
    pgtasq.migrate(pg_dsn, schema=fresh_schema)
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == HEAD
    assert _tables(pg_dsn, fresh_schema) == {
        "alembic_version", "tasks", "queues", "workers", "schedules", "queue_daily_stats",
    }  # fmt: skip
    pgtasq.downgrade(pg_dsn, schema=fresh_schema)
    assert _tables(pg_dsn, fresh_schema) == {"alembic_version"}
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) is None
    pgtasq.migrate(pg_dsn, schema=fresh_schema)
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == HEAD
    pgtasq.migrate(pg_dsn, schema=fresh_schema)  # idempotent


def test_autogenerate_finds_no_difference(pg_dsn: str, schema: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(pg_dsn))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    "include_name": lambda name, type_, _: type_ != "schema" or name == schema,
                    "version_table_schema": schema,
                },
            )
            diff = compare_metadata(ctx, tables.metadata(schema))
    finally:
        engine.dispose()
    assert diff == []


def test_enum_matches_python(pg_dsn: str, schema: str) -> None:
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute(f"SELECT unnest(enum_range(NULL::{schema}.task_status))::text").fetchall()
    assert [r[0] for r in rows] == [s.value for s in TaskStatus]


def test_migrate_accepts_connections(pg_dsn: str, fresh_schema: str) -> None:
    with psycopg.connect(pg_dsn) as c:
        pgtasq.migrate(c, schema=fresh_schema)
        assert not c.closed
        assert c.execute(f"SELECT count(*) FROM {fresh_schema}.tasks").fetchone() == (0,)
    engine = sa.create_engine(sqlalchemy_url(pg_dsn))
    try:
        pgtasq.downgrade(engine, schema=fresh_schema)
        with engine.begin() as conn:
            pgtasq.migrate(conn, schema=fresh_schema)
        assert pgtasq.current_revision(engine, schema=fresh_schema) == HEAD
    finally:
        engine.dispose()
    with pytest.raises(TypeError, match="DSN string"):
        pgtasq.migrate(42, schema=fresh_schema)  # type: ignore[arg-type]


def test_migrate_on_a_busy_or_autocommit_psycopg_connection(pg_dsn: str, fresh_schema: str) -> None:
    with psycopg.connect(pg_dsn) as c:
        c.execute("CREATE TEMP TABLE mine (x int)")  # the caller's open transaction
        with pytest.raises(pgtasq.ConfigurationError, match="idle"):
            pgtasq.migrate(c, schema=fresh_schema)
        assert c.execute("SELECT count(*) FROM mine").fetchone() == (0,)  # untouched
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        pgtasq.migrate(c, schema=fresh_schema)
        assert c.autocommit  # restored
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == HEAD


def test_key_value_dsn(pg_dsn: str, fresh_schema: str) -> None:
    kv = psycopg.conninfo.make_conninfo(pg_dsn)
    if "://" in kv:
        kv = " ".join(f"{k}={v}" for k, v in psycopg.conninfo.conninfo_to_dict(pg_dsn).items() if v)
    pgtasq.migrate(kv, schema=fresh_schema)
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == HEAD


def test_concurrent_migrations_do_not_collide(pg_dsn: str, fresh_schema: str) -> None:
    """Workers starting together each migrate: separate processes, one schema, no error."""
    code = "import sys, pgtasq; pgtasq.migrate(sys.argv[1], schema=sys.argv[2])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, pg_dsn, fresh_schema], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outcomes = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outcomes
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == HEAD


def test_migrations_in_threads_are_serialized(pg_dsn: str, fresh_schema: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pgtasq.migrate(pg_dsn, schema=fresh_schema)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == HEAD


def test_sql_mode_prints_runnable_sql(pg_dsn: str, fresh_schema: str) -> None:
    sql = pgtasq.migration_sql(schema=fresh_schema)
    assert f"CREATE TABLE {fresh_schema}.tasks" in sql
    assert f"CREATE TABLE {fresh_schema}.alembic_version" in sql
    assert sql.index("CREATE SCHEMA") < sql.index("alembic_version")
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(sql.encode())
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == HEAD


def test_database_constraints_hold_without_python(pg_dsn: str, schema: str) -> None:
    """The invariants live in the database: raw SQL cannot break them either."""
    bad = [
        "INSERT INTO {s}.tasks (queue, type, max_attempts) VALUES ('', 't', 1)",
        "INSERT INTO {s}.tasks (queue, type, max_attempts, priority) VALUES ('q', 't', 1, 101)",
        "INSERT INTO {s}.tasks (queue, type, max_attempts) VALUES ('q', 't', 0)",
        "INSERT INTO {s}.tasks (queue, type, max_attempts, status) "
        "VALUES ('q', 't', 1, 'completed')",
        "INSERT INTO {s}.tasks (queue, type, max_attempts, status) VALUES ('q', 't', 1, 'running')",
        "INSERT INTO {s}.tasks (queue, type, max_attempts, timeout) VALUES ('q', 't', 1, '-1 s')",
        "INSERT INTO {s}.tasks (queue, type, max_attempts, status) VALUES ('q', 't', 1, 'bogus')",
    ]
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        for stmt in bad:
            with pytest.raises(
                (psycopg.errors.CheckViolation, psycopg.errors.InvalidTextRepresentation)
            ):
                c.execute(stmt.format(s=schema))
        c.execute(
            f"INSERT INTO {schema}.tasks (queue, type, max_attempts, status, finalized_at) "
            "VALUES ('q', 't', 1, 'completed', now())"
        )


def test_indexes_exist(pg_dsn: str, schema: str) -> None:
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = %s AND tablename = 'tasks'",
            (schema,),
        ).fetchall()
    defs = dict(rows)
    assert "WHERE (status = 'pending'" in defs["tasks_claim_idx"]
    assert "priority DESC" in defs["tasks_claim_idx"]
    assert "WHERE (status = 'running'" in defs["tasks_lease_idx"]
    # Partial: keyless rows (most of them) never touch it; ON CONFLICT names the predicate.
    assert defs["tasks_idempotency_key_key"].startswith("CREATE UNIQUE INDEX")
    assert "WHERE (idempotency_key IS NOT NULL)" in defs["tasks_idempotency_key_key"]
    # The cleaner's: rows without a retention of their own by age, rows with one by
    # (retention, age); every finished row is in exactly one of them.
    assert (
        "WHERE ((finalized_at IS NOT NULL) AND (retention IS NULL))" in defs["tasks_finalized_idx"]
    )
    assert (
        "(retention, finalized_at) WHERE ((finalized_at IS NOT NULL) AND (retention IS NOT NULL))"
        in defs["tasks_retention_idx"]
    )
    # Unique keys: held while pending or running, or while unique_until is set; rows
    # without a key are not in the index.
    assert defs["tasks_unique_key_key"].startswith("CREATE UNIQUE INDEX")
    assert (
        "(unique_key) WHERE ((unique_key IS NOT NULL) AND ((status = ANY (ARRAY['pending'::"
        in defs["tasks_unique_key_key"]
    )
    assert "OR (unique_until IS NOT NULL)))" in defs["tasks_unique_key_key"]
    assert set(defs) == {
        "tasks_pkey", "tasks_claim_idx", "tasks_lease_idx", "tasks_finalized_idx",
        "tasks_retention_idx", "tasks_idempotency_key_key", "tasks_unique_key_key",
    }  # fmt: skip


def test_plain_alembic_command(pg_dsn: str, fresh_schema: str, tmp_path: Path) -> None:
    """DBAs can drive our environment with the alembic CLI itself."""
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {migrations_path()}\n")
    base = [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"dsn={pg_dsn}"]
    up = subprocess.run(
        [*base, "-x", f"pgtasq_schema={fresh_schema}", "upgrade", "head"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stderr
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == HEAD
    down = subprocess.run(
        [*base, "-x", f"schema={fresh_schema}", "downgrade", "base"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 0, down.stderr
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) is None


def test_ids_come_from_a_known_sequence_and_may_be_given(pg_dsn: str, schema: str) -> None:
    """The COPY enqueue draws ids from tables.TASKS_ID_SEQUENCE and sends them (BY DEFAULT)."""
    with psycopg.connect(pg_dsn) as c:
        identity, sequence = c.execute(
            "SELECT attidentity, pg_get_serial_sequence(%s, 'id') FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'id'",
            (f"{schema}.tasks", f"{schema}.tasks"),
        ).fetchone()  # type: ignore[misc]
    assert identity == "d"  # GENERATED BY DEFAULT
    assert sequence == f"{schema}.{tables.TASKS_ID_SEQUENCE}"


def _reloptions(dsn: str, schema: str) -> dict[str, str]:
    with psycopg.connect(dsn) as c:
        row = c.execute(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (f"{schema}.tasks",)
        ).fetchone()
    assert row is not None
    return dict(option.split("=", 1) for option in row[0] or [])


def test_tasks_autovacuum_settings_up_and_down(pg_dsn: str, fresh_schema: str) -> None:
    """pgtasq_0002 sets the queue-table autovacuum settings that tables.py declares, and its
    downgrade takes them away again (autogenerate does not compare storage parameters)."""
    pgtasq.migrate(pg_dsn, schema=fresh_schema)
    assert _reloptions(pg_dsn, fresh_schema) == tables.TASKS_STORAGE_PARAMETERS
    assert tables.tasks_table(fresh_schema).info["storage_parameters"] == (
        tables.TASKS_STORAGE_PARAMETERS
    )
    pgtasq.downgrade(pg_dsn, schema=fresh_schema, revision="pgtasq_0001")
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == "pgtasq_0001"
    assert _reloptions(pg_dsn, fresh_schema) == {}
    pgtasq.migrate(pg_dsn, schema=fresh_schema)
    assert _reloptions(pg_dsn, fresh_schema) == tables.TASKS_STORAGE_PARAMETERS
    assert "autovacuum_vacuum_scale_factor = 0.01" in pgtasq.migration_sql(schema=fresh_schema)


def test_unique_keys_up_and_down(pg_dsn: str, fresh_schema: str) -> None:
    """pgtasq_0005 adds tasks.unique_key, unique_until and their index; its downgrade drops
    them, and a row written at 0004 survives both ways."""

    def columns() -> set[str]:
        with psycopg.connect(pg_dsn) as c:
            rows = c.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'tasks'",
                (fresh_schema,),
            ).fetchall()
        return {r[0] for r in rows}

    def indexes() -> set[str]:
        with psycopg.connect(pg_dsn) as c:
            rows = c.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (fresh_schema,)
            ).fetchall()
        return {r[0] for r in rows}

    pgtasq.migrate(pg_dsn, schema=fresh_schema)
    pgtasq.downgrade(pg_dsn, schema=fresh_schema, revision="pgtasq_0004")
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == "pgtasq_0004"
    assert not {"unique_key", "unique_until"} & columns()
    assert "tasks_unique_key_key" not in indexes()
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(
            f"INSERT INTO {fresh_schema}.tasks (queue, type, max_attempts) VALUES ('q', 't', 1)"
        )
    pgtasq.migrate(pg_dsn, schema=fresh_schema, revision="pgtasq_0005")
    assert pgtasq.current_revision(pg_dsn, schema=fresh_schema) == "pgtasq_0005"
    assert {"unique_key", "unique_until"} <= columns()
    assert "tasks_unique_key_key" in indexes()
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        row = c.execute(f"SELECT unique_key, unique_until FROM {fresh_schema}.tasks").fetchone()
        assert row == (None, None)
        insert = (
            f"INSERT INTO {fresh_schema}.tasks (queue, type, max_attempts, unique_key) "
            "VALUES ('q', 't', 1, 'k')"
        )
        c.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute(insert)
