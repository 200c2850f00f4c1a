from __future__ import annotations

import pytest

from pgtasq import ConfigurationError, _sql
from pgtasq.tables import check_schema_name


@pytest.mark.parametrize("events", [False, True])
def test_every_statement_renders_for_sqlalchemy(events: bool) -> None:
    stmts = _sql.statements("pgtasq", worker_events=events)
    observe = _sql.observe_statements("pgtasq")
    every = [(stmts, name) for name in stmts.names()]
    every += [(observe, name) for name in observe.names()]
    assert len(every) >= 39
    for owner, name in every:
        stmt = getattr(owner, name)
        assert isinstance(stmt, _sql.Statement)
        assert getattr(owner, name) is stmt  # built once, then kept
        assert stmt.name == name
        rendered = str(stmt.sqlalchemy)
        assert "%(" not in rendered
        assert "pgtasq." in rendered or name.startswith("listen")


def test_statements_are_one_object_per_schema_and_events() -> None:
    assert _sql.statements("pgtasq") is _sql.statements("pgtasq")
    assert _sql.statements("pgtasq") is not _sql.statements("pgtasq", worker_events=True)
    assert "events AS" in _sql.statements("pgtasq", worker_events=True).task_claim.text
    assert "events AS" not in _sql.statements("pgtasq").task_claim.text
    assert _sql.statements("other").task_claim.text.count("other.tasks") == 2


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
    assert _sql.notify_channel("pgtasq") == "pgtasq_w_pgtasq"
    assert _sql.events_channel("pgtasq") == "pgtasq_e_pgtasq"
    long = _sql.notify_channel("a" * 63)
    assert len(long) == 63 and long.startswith("pgtasq_w#")
    assert long != _sql.notify_channel("a" * 62 + "b")
    assert _sql.events_channel("a" * 63) != long


def test_channels_never_collide_across_schemas_and_purposes() -> None:
    """Plain and hashed names, schemas sharing long prefixes, and `x` vs `x_events` (whose
    channels once collided): every (purpose, schema) has a channel of its own."""
    shared = "s" * 49
    schemas = ["x", "x_events", "x_e", "e_x", "w", "e", "w_x"]
    schemas += [shared + tail for tail in ("", "_a", "_b", "_aaaaa", "_bbbbb")]
    schemas += ["a" * n for n in range(50, 64)] + ["b" * 63, "a" * 62 + "b"]
    channels = [_sql.channel_name(p, s) for p in _sql.CHANNEL_PURPOSES for s in schemas]
    assert len(set(channels)) == len(channels)
    assert all(len(c.encode()) <= 63 for c in channels)
