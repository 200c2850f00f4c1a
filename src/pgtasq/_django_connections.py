"""Django's database connection as ``conn=``: ``django.db.connection`` or ``connections[alias]``.

Statements run on the psycopg 3 connection under Django's, so they join whatever Django's
transaction is: inside ``transaction.atomic()`` the task commits or rolls back with the
block; outside it Django is in autocommit mode and each statement commits at once. A
savepoint is Django's own (``transaction.atomic(using=alias)``), so Django keeps track of it.

Django is never imported from here: a connection can only be Django's if Django is loaded.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgtasq._sql import Statement
from pgtasq.errors import ConfigurationError


def is_django_connection(conn: object) -> bool:
    """Whether ``conn`` is a Django database wrapper, or the proxy ``django.db.connection``."""
    if "django.db" not in sys.modules:
        return False
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.utils.connection import ConnectionProxy

    return isinstance(conn, (BaseDatabaseWrapper, ConnectionProxy))


class DjangoRunner:
    """Runs statements on the psycopg connection of a Django database wrapper."""

    def __init__(self, wrapper: Any) -> None:
        alias = wrapper.alias
        vendor = wrapper.vendor
        if vendor != "postgresql":
            raise ConfigurationError(
                f"Django's database {alias!r} is {vendor}, not PostgreSQL: pgtasq's tasks "
                "live in PostgreSQL, so conn= takes a PostgreSQL database's connection"
            )
        wrapper.ensure_connection()
        raw = wrapper.connection
        if not isinstance(raw, psycopg.Connection):
            raise ConfigurationError(
                f"Django's database {alias!r} runs on {type(raw).__module__.split('.')[0]}, "
                "not psycopg 3: pgtasq can join its transactions only through psycopg 3 "
                "(install psycopg and Django uses it; psycopg2 must not be preferred)"
            )
        wrapper.validate_no_broken_transaction()
        self.wrapper = wrapper
        self.conn: psycopg.Connection[Any] = raw

    def fetch(self, stmt: Statement, params: Any) -> Sequence[Any]:
        # A plain server-binding cursor: Django's own cursor class binds on the client side.
        with psycopg.Cursor(self.conn, row_factory=dict_row) as cur:
            cur.execute(stmt.text, params)
            return cur.fetchall() if cur.description is not None else []

    def savepoint(self) -> contextlib.AbstractContextManager[Any]:
        from django.db import transaction

        atomic: contextlib.AbstractContextManager[Any] = transaction.atomic(
            using=self.wrapper.alias
        )
        return atomic
