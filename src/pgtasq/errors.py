"""Every error pgtasq raises, in one tree.

::

    PgtasqError
    ├── TaskValidationError (also a ValueError)   a task or option is invalid; names the field
    ├── ConfigurationError (also a ValueError)    a bad schema name, DSN or setting
    ├── DuplicateTask                              idempotency key taken (on_conflict="raise")
    └── DatabaseUnavailable                        no database could be reached

Validation happens before any SQL is sent, so a ``TaskValidationError`` never leaves the
caller's transaction broken. psycopg errors that mean "the server is not there" are translated
to ``DatabaseUnavailable`` at the connection boundary and re-raised ``from`` the original.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgtasq.models import TaskInfo


class PgtasqError(Exception):
    """Root of every error raised by pgtasq."""


class TaskValidationError(PgtasqError, ValueError):
    """A task, or one of its options, is invalid. Nothing was written."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConfigurationError(PgtasqError, ValueError):
    """A setting (schema name, DSN, pool option) is invalid."""


class DuplicateTask(PgtasqError):
    """A task with this idempotency key already exists; it was left unchanged."""

    def __init__(self, existing: TaskInfo) -> None:
        self.existing = existing
        self.task_id = existing.id
        self.idempotency_key = existing.idempotency_key
        super().__init__(
            f"a task with idempotency key {existing.idempotency_key!r} already exists "
            f"(id {existing.id}, status {existing.status.value})"
        )


class DatabaseUnavailable(PgtasqError):
    """The database could not be reached (refused, gone away, or timed out)."""
