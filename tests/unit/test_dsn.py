"""DSNs checked before psycopg sees them, and passwords blanked (`pgtasq._dsn`)."""

from __future__ import annotations

import pytest

from pgtasq import ConfigurationError, Consumer, _dsn


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("postgresql://u:p@h/db", "postgresql://u:p@h/db"),
        ("postgres://u@h:5433/db?sslmode=disable", "postgresql://u@h:5433/db?sslmode=disable"),
        ("postgresql+psycopg://u:p@h/db", "postgresql://u:p@h/db"),
        ("postgres+psycopg2://u@h/db", "postgresql://u@h/db"),
        ("  host=h dbname=db  ", "host=h dbname=db"),
        ("postgresql://u:p%25@h/db", "postgresql://u:p%25@h/db"),
    ],
)
def test_normalize_accepts_and_rewrites_the_scheme(given: str, normalized: str) -> None:
    assert _dsn.normalize(given) == normalized


@pytest.mark.parametrize(
    "bad",
    [
        "postgresql://u:s3c%ret@h/db",
        "host=h password=s3c ret",
        "postgresql+psycopg://u:s3cret@h/db trailing",
        "host='s3cret",
        "",
    ],
)
def test_normalize_refuses_without_quoting_the_dsn(bad: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        _dsn.normalize(bad)
    assert "s3c" not in str(raised.value)
    assert str(raised.value).startswith(("invalid DSN", "the DSN is empty"))


def test_redact_blanks_url_keyword_and_known_passwords() -> None:
    _dsn.normalize("host=h password=Known-Secret-1")
    text = "postgresql://u:abc@h/db password=xyz 'Known-Secret-1' was quoted"
    assert _dsn.redact(text) == "postgresql://u:***@h/db password=*** '***' was quoted"


def test_a_consumer_checks_its_listen_dsn() -> None:
    with pytest.raises(ConfigurationError):
        Consumer(listen_dsn="postgresql://u:s3c%ret@h/db")
    consumer = Consumer(listen_dsn="postgresql+psycopg://u@h/db")
    assert consumer.settings.listen_dsn == "postgresql://u@h/db"
