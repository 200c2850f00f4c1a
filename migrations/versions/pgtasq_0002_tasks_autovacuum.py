"""Autovacuum settings for the tasks table, a queue table: vacuum and analyze it early.

Every claim and every outcome leaves a dead row version, and the claim index keeps an entry
for each dead pending version until a vacuum removes it. The server's defaults wait until a
fifth of the table is dead (200 000 rows on a table with a million rows of history); these
settings wait for 1 % (see docs/workers.md, "The tasks table and autovacuum").

Revision ID: pgtasq_0002
Revises: pgtasq_0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from pgtasq._migrate import migration_schema

revision: str = "pgtasq_0002"
down_revision: str | None = "pgtasq_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here, not imported: a migration must keep doing what it did when it shipped.
# tables.TASKS_STORAGE_PARAMETERS says the same (a test compares them with the database).
SETTINGS = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_insert_scale_factor": "0.01",
    "autovacuum_analyze_scale_factor": "0.02",
}


def upgrade() -> None:
    schema = migration_schema()
    values = ", ".join(f"{name} = {value}" for name, value in SETTINGS.items())
    op.execute(f"ALTER TABLE {schema}.tasks SET ({values})")


def downgrade() -> None:
    schema = migration_schema()
    op.execute(f"ALTER TABLE {schema}.tasks RESET ({', '.join(SETTINGS)})")
