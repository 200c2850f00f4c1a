"""DSNs in, no secret out: the one place a DSN is parsed before psycopg sees it.

`normalize` accepts what users paste (a libpq ``key=value`` string, a ``postgresql://`` or
``postgres://`` URL, or a SQLAlchemy URL such as ``postgresql+psycopg://``), checks it the
way libpq will, and returns a DSN libpq accepts. What it refuses raises a
`ConfigurationError` whose message holds no part of the DSN: libpq's own parse errors quote
the text they stumbled on, which may be the password (``missing "=" after "s3cret"``).

`RedactSecrets` is a logging filter that blanks every password pgtasq has seen (and any
``password=`` or URL password) in log records: psycopg_pool logs connection errors at
WARNING with libpq's message, which can quote the DSN.
"""

from __future__ import annotations

import logging
import re
import threading

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgtasq.errors import ConfigurationError

REDACTED = "***"

_SCHEMES = re.compile(r"^(postgres(?:ql)?)(\+[A-Za-z0-9_]+)?://", re.IGNORECASE)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URL_PASSWORD = re.compile(r"(://[^:/?#@\s]*:)([^@\s]*)(@)")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def normalize(dsn: str) -> str:
    """``dsn`` checked and in a form libpq accepts; `ConfigurationError` (redacted) if not."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigurationError("the DSN is empty")
    text = dsn.strip()
    match = _SCHEMES.match(text)
    if match:
        text = "postgresql://" + text[match.end() :]  # SQLAlchemy's driver suffix dropped
        if _BAD_PERCENT.search(text):
            raise ConfigurationError(
                "invalid DSN: a '%' in the URL is not followed by two hex digits "
                "(write a '%' in a password as %25)"
            )
    try:
        params = conninfo_to_dict(text)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"invalid DSN: {_describe(exc)}") from None
    password = params.get("password")
    if password:
        remember_secret(str(password))
    return text


def _describe(exc: BaseException) -> str:
    """libpq's parse error without the text it quotes (the DSN, maybe the password)."""
    first = (str(exc).strip().splitlines() or ["cannot parse it"])[0]
    parts = first.split('"')  # the odd parts are quoted
    for i in range(1, len(parts), 2):
        if len(parts[i]) > 1:  # keep a quoted "=", blank the rest
            parts[i] = "…"
    return redact('"'.join(parts))


def remember_secret(secret: str) -> None:
    """Blank ``secret`` in every message that `redact` cleans from now on."""
    if len(secret) >= 3:  # shorter ones would blank ordinary words
        with _secrets_lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    """``text`` with passwords blanked: known ones, URL ones and ``password=`` ones."""
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}\3", text)
    text = _KEYWORD_PASSWORD.sub(rf"\1{REDACTED}", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites each record's message with `redact` (it never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            cleaned = redact(text)
            if cleaned != text:
                record.exc_text = cleaned
        return True


class QuietPoolRetries(logging.Filter):
    """Drops psycopg_pool's line per failed connection attempt ("error connecting in …"),
    unless pgtasq logs at DEBUG: during an outage it repeats every second, while pgtasq
    itself says "database unavailable" once and "available again" once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("error connecting in"):
            return logging.getLogger("pgtasq").isEnabledFor(logging.DEBUG)
        return True


_FILTER = RedactSecrets()
_QUIET = QuietPoolRetries()


def protect_loggers() -> None:
    """Attach the filters to psycopg's and psycopg_pool's loggers (idempotent)."""
    for name in ("psycopg", "psycopg.pool"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    pool = logging.getLogger("psycopg.pool")
    if _QUIET not in pool.filters:
        pool.addFilter(_QUIET)


protect_loggers()
