"""pgtasq's tables, created by pgtasq's own Alembic migrations (the same SQL as
``pgtasq migrate``) on the connection Django migrates with.

Runs on the database ``PGTASQ["DATABASE"]`` only, and brings its schema
``PGTASQ["SCHEMA"]`` to pgtasq's newest revision; running it again changes nothing. A pgtasq
release with new Alembic revisions ships a Django migration that runs this again. Not
atomic for Django: pgtasq's migration runs in one transaction of its own, under pgtasq's
migration lock.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def _target(schema_editor: Any) -> tuple[Any, str] | None:
    from pgtasq.contrib.django import conf

    found = conf.get()
    wrapper = schema_editor.connection
    if wrapper.alias != found.database:
        return None
    from pgtasq._django_connections import DjangoRunner

    return DjangoRunner(wrapper).conn, found.schema


def upgrade(apps: Any, schema_editor: Any) -> None:
    target = _target(schema_editor)
    if target is not None:
        import pgtasq

        pgtasq.migrate(target[0], schema=target[1])


def downgrade(apps: Any, schema_editor: Any) -> None:
    target = _target(schema_editor)
    if target is not None:
        import pgtasq

        pgtasq.downgrade(target[0], schema=target[1])


class Migration(migrations.Migration):
    atomic = False
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [migrations.RunPython(upgrade, downgrade, elidable=False)]
