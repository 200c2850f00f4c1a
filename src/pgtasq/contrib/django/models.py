"""Read-only Django models of pgtasq's ``tasks`` and ``queues`` tables, for the admin.

Unmanaged (pgtasq's migrations own the tables), in the schema ``PGTASQ["SCHEMA"]`` as it is
when Django loads the app. Their fields are rendered from pgtasq's SQLAlchemy tables
(`pgtasq.tables.metadata`), so a column is described once. Write through pgtasq (Producer,
Client), never through these models.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from pgtasq.contrib.django import conf
from pgtasq.tables import QUEUES_TABLE, TASKS_TABLE, metadata


def _field(column: Any) -> models.Field[Any, Any]:
    """The Django field reading a column of pgtasq's SQLAlchemy table."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql as pg

    options: dict[str, Any] = {"null": bool(column.nullable)}
    if column.primary_key:
        options = {"primary_key": True}
    kind = column.type
    field: models.Field[Any, Any]
    if isinstance(kind, pg.JSONB):
        field = models.JSONField(**options)
    elif isinstance(kind, sa.Enum):
        choices = [(value, value) for value in kind.enums]
        field = models.TextField(choices=choices, **options)
    elif isinstance(kind, sa.BigInteger):
        field = models.BigIntegerField(**options)
    elif isinstance(kind, sa.SmallInteger):
        field = models.SmallIntegerField(**options)
    elif isinstance(kind, sa.Integer):
        field = models.IntegerField(**options)
    elif isinstance(kind, sa.Boolean):
        field = models.BooleanField(**options)
    elif isinstance(kind, sa.DateTime):
        field = models.DateTimeField(**options)
    elif isinstance(kind, sa.Date):
        field = models.DateField(**options)
    elif isinstance(kind, sa.Interval):
        field = models.DurationField(**options)
    elif isinstance(kind, sa.Text):
        field = models.TextField(**options)
    else:  # pragma: no cover - a column type this mapping does not know yet
        raise TypeError(f"no Django field for column {column.name} of type {kind!r}")
    return field


def _model(name: str, table: str, verbose: str, ordering: list[str]) -> type[models.Model]:
    schema = conf.get().schema
    sa_table = metadata(schema).tables[f"{schema}.{table}"]
    # Django quotes db_table as one identifier: this spelling makes it "schema"."table".
    meta = type(
        "Meta",
        (),
        {
            "managed": False,
            "db_table": f'{schema}"."{table}',
            "app_label": "pgtasq",
            "verbose_name": verbose,
            "ordering": ordering,
        },
    )
    attrs: dict[str, Any] = {"__module__": __name__, "Meta": meta}
    for column in sa_table.columns:
        attrs[column.name] = _field(column)
    return type(name, (models.Model,), attrs)


Task = _model("Task", TASKS_TABLE, "task", ["-id"])
Queue = _model("Queue", QUEUES_TABLE, "queue", ["name"])
