from __future__ import annotations

import dataclasses

import pytest

from pgtasq import ConfigurationError, _sql
from pgtasq.tables import check_schema_name


def test_every_statement_renders_for_sqlalchemy() -> None:
    stmts = _sql.statements("pgtasq")
    for field in dataclasses.fields(stmts):
        stmt = getattr(stmts, field.name)
        if not isinstance(stmt, _sql.Statement):
            continue
        assert stmt.name == field.name
        rendered = str(stmt.sqlalchemy)
        assert "%(" not in rendered
        assert "pgtasq." in rendered or field.name.startswith("listen")


def test_placeholders_convert() -> None:
    stmt = _sql.Statement("x", "SELECT CAST(%(a)s AS int), payload::text FROM t WHERE b = %(b_2)s")
    assert str(stmt.sqlalchemy) == "SELECT CAST(:a AS int), payload::text FROM t WHERE b = :b_2"


@pytest.mark.parametrize("name", ["", "Upper", "1abc", "a-b", "a b", 'x"; drop', "a" * 64, "é"])
def test_schema_names_are_plain_identifiers(name: str) -> None:
    with pytest.raises(ConfigurationError):
        check_schema_name(name)
    with pytest.raises(ConfigurationError):
        _sql.statements(name)


def test_channels() -> None:
    assert _sql.notify_channel("pgtasq") == "pgtasq_pgtasq"
    long = _sql.notify_channel("a" * 63)
    assert len(long) <= 63
    assert long != _sql.notify_channel("a" * 62 + "b")
