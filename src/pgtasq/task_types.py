"""Task declarations: a task type declared once, with its defaults, for producers and workers.

::

    # tasks.py: imported by the producer and by the worker, no handler code in it
    email_send = pgtasq.task_type("email.send", Email, queue="mail", max_attempts=3)

    # the producer
    email_send.enqueue(Email(to="a@example.com"), producer=producer)   # queue "mail", 3 attempts
    email_send.enqueue(Email(to="b@example.com"), conn=conn, priority=5)  # overrides win
    producer.enqueue_many([email_send.task(e) for e in emails])

    # the worker
    @email_send.handler(consumer)          # or @consumer.task(email_send)
    def send(ctx):
        mail = ctx.payload_as(Email)       # or email_send.load(ctx.payload)

A declaration's defaults apply when a task is made through it (`TaskType.task`,
`TaskType.enqueue`); options given there win. A plain ``producer.enqueue("email.send", …)``
knows no declaration and gets `Task`'s defaults. ``retry`` is used by the worker: the
consumer's ``retry_delay`` for this type's tasks only.

Typed payloads are optional: a dataclass (sent as ``dataclasses.asdict``, built again with
``cls(**payload)``: nested dataclasses come back as dicts) or a TypedDict (sent and received
as the dict it is; its required keys are checked).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, is_typeddict, overload

from pgtasq.errors import ConfigurationError, TaskValidationError
from pgtasq.models import Seconds, Task, TaskInfo
from pgtasq.retry import RetryDelay

if TYPE_CHECKING:
    from pgtasq._connections import AsyncConn, SyncConn
    from pgtasq._enqueue import OnConflict
    from pgtasq.consumer import Consumer
    from pgtasq.context import Handler
    from pgtasq.producer import AsyncProducer, Producer
    from pgtasq.testing import AsyncInlineProducer, InlineProducer

P = TypeVar("P")
H = TypeVar("H", bound="Handler")

# The `Task` options a declaration may give defaults for. The others (run_at, deadline,
# idempotency_key) belong to one task, not to its type. The unique-task options (issue 15,
# item 1) join this tuple, and `task_type`'s keywords, once `Task` has them.
DEFAULTABLE = ("queue", "priority", "max_attempts", "timeout", "delay", "retention", "headers")


@dataclasses.dataclass(frozen=True)
class TaskType(Generic[P]):
    """One task type and its defaults; made by `task_type` (or ``@consumer.task(…)``).

    ``name``: the task type. ``payload_type``: a dataclass or TypedDict the payload is, or
    None (any JSON). ``defaults``: `Task` options (`DEFAULTABLE`). ``retry``: the worker's
    retry delay for this type (see `pgtasq.retry`), None for the consumer's. ``producer``:
    the one `enqueue` uses when the call names none.
    """

    name: str
    payload_type: type[P] | None = None
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    retry: RetryDelay | None = None
    producer: Producer | AsyncProducer | None = None

    def __post_init__(self) -> None:
        unknown = set(self.defaults) - set(DEFAULTABLE)
        if unknown:
            raise ConfigurationError(
                f"task type {self.name!r}: no defaults for {sorted(unknown)} "
                f"(a declaration has defaults for {', '.join(DEFAULTABLE)})"
            )
        Task(self.name, **self.defaults)  # checks the name and every default now
        if self.payload_type is not None and not (
            dataclasses.is_dataclass(self.payload_type) or is_typeddict(self.payload_type)
        ):
            raise ConfigurationError(
                f"task type {self.name!r}: payload_type must be a dataclass or a TypedDict, "
                f"got {self.payload_type!r}"
            )

    def task(self, payload: P | None = None, **overrides: Any) -> Task:
        """A `Task` of this type: the declaration's defaults, then ``overrides`` (any `Task`
        option). For `Producer.enqueue_many`."""
        return Task(self.name, self.dump(payload), **{**self.defaults, **overrides})

    def enqueue(
        self,
        payload: P | None = None,
        *,
        producer: Producer | InlineProducer | None = None,
        conn: SyncConn | None = None,
        on_conflict: OnConflict = "return",
        **overrides: Any,
    ) -> TaskInfo:
        """Enqueue a task of this type with ``producer`` (else the declaration's; an
        `pgtasq.testing.InlineProducer` works too). With ``conn=`` and no producer anywhere,
        a producer without a DSN for the default schema is used."""
        sync = cast("Producer", self._producer(producer, conn, asynchronous=False))
        return sync.enqueue(self.task(payload, **overrides), conn=conn, on_conflict=on_conflict)

    async def aenqueue(
        self,
        payload: P | None = None,
        *,
        producer: AsyncProducer | AsyncInlineProducer | None = None,
        conn: AsyncConn | None = None,
        on_conflict: OnConflict = "return",
        **overrides: Any,
    ) -> TaskInfo:
        """`enqueue` with an `AsyncProducer`."""
        task = self.task(payload, **overrides)
        chosen = cast("AsyncProducer", self._producer(producer, conn, asynchronous=True))
        return await chosen.enqueue(task, conn=conn, on_conflict=on_conflict)

    def handler(self, consumer: Consumer) -> Callable[[H], H]:
        """Decorator: run the handler for this type's tasks on ``consumer``
        (``consumer.task(self)``)."""
        return consumer.task(self)

    def dump(self, payload: Any) -> Any:
        """The payload as it is sent: a dataclass as ``dataclasses.asdict``."""
        cls = self.payload_type
        if cls is None or payload is None:
            return payload
        if dataclasses.is_dataclass(cls):
            if not isinstance(payload, cls):
                raise TaskValidationError(
                    "payload",
                    f"task type {self.name!r} takes a {cls.__name__}, got {type(payload).__name__}",
                )
            return dataclasses.asdict(payload)
        return _typed_dict(cls, payload)

    def load(self, payload: Any) -> P:
        """The payload as its ``payload_type`` (`payload_as`); without one, as it is."""
        if self.payload_type is None:
            return cast(P, payload)
        return payload_as(self.payload_type, payload)

    def _producer(self, producer: Any, conn: Any, *, asynchronous: bool) -> Any:
        from pgtasq.producer import AsyncProducer, Producer

        chosen = producer if producer is not None else self.producer
        if chosen is None:
            if conn is None:
                raise ConfigurationError(
                    f"task type {self.name!r}: pass producer= (or conn=), or give the "
                    "declaration a producer"
                )
            return _conn_only(asynchronous)
        other = Producer if asynchronous else AsyncProducer
        if isinstance(chosen, other):
            call = "enqueue" if asynchronous else "aenqueue"
            raise ConfigurationError(
                f"task type {self.name!r}: {type(chosen).__name__} is for {call}()"
            )
        return chosen


@overload
def task_type(
    name: str,
    payload_type: type[P],
    *,
    queue: str | None = ...,
    priority: int | None = ...,
    max_attempts: int | None = ...,
    timeout: Seconds | None = ...,
    delay: Seconds | None = ...,
    retention: Seconds | None = ...,
    headers: Mapping[str, str] | None = ...,
    retry: RetryDelay | float | None = ...,
    producer: Producer | AsyncProducer | None = ...,
) -> TaskType[P]: ...


@overload
def task_type(
    name: str,
    payload_type: None = ...,
    *,
    queue: str | None = ...,
    priority: int | None = ...,
    max_attempts: int | None = ...,
    timeout: Seconds | None = ...,
    delay: Seconds | None = ...,
    retention: Seconds | None = ...,
    headers: Mapping[str, str] | None = ...,
    retry: RetryDelay | float | None = ...,
    producer: Producer | AsyncProducer | None = ...,
) -> TaskType[Any]: ...


def task_type(
    name: str,
    payload_type: type[Any] | None = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout: Seconds | None = None,
    delay: Seconds | None = None,
    retention: Seconds | None = None,
    headers: Mapping[str, str] | None = None,
    retry: RetryDelay | float | None = None,
    producer: Producer | AsyncProducer | None = None,
) -> TaskType[Any]:
    """Declare a task type with defaults (None: `Task`'s own). ``retry``: the worker's delay
    before a retry of this type, a `RetryDelay` function or fixed seconds."""
    given = {
        "queue": queue,
        "priority": priority,
        "max_attempts": max_attempts,
        "timeout": timeout,
        "delay": delay,
        "retention": retention,
        "headers": headers,
    }
    return TaskType(
        name,
        payload_type,
        {k: v for k, v in given.items() if v is not None},
        retry_policy(name, retry),
        producer,
    )


def retry_policy(name: str, retry: RetryDelay | float | None) -> RetryDelay | None:
    """``retry`` as a `RetryDelay`: fixed seconds become a function that returns them."""
    if retry is None or callable(retry):
        return retry
    if (
        isinstance(retry, bool)
        or not isinstance(retry, (int, float))
        or not math.isfinite(retry)
        or retry < 0
    ):
        raise ConfigurationError(
            f"task type {name!r}: retry must be a retry_delay(info, exc) function or "
            f"seconds (0 or more), got {retry!r}"
        )
    seconds = float(retry)
    return lambda info, exc: seconds


def payload_as(cls: type[P], payload: Any) -> P:
    """``payload`` (decoded JSON) as ``cls``: a dataclass built with ``cls(**payload)``, or
    a TypedDict checked for its required keys. `TaskValidationError` when it does not fit."""
    if dataclasses.is_dataclass(cls):
        if not isinstance(payload, dict):
            raise TaskValidationError(
                "payload", f"expected an object for {cls.__name__}, got {type(payload).__name__}"
            )
        try:
            return cls(**payload)
        except TypeError as exc:
            raise TaskValidationError("payload", f"does not fit {cls.__name__}: {exc}") from None
    if is_typeddict(cls):
        return cast(P, _typed_dict(cls, payload))
    raise TypeError(f"payload_as takes a dataclass or a TypedDict, got {cls!r}")


def _typed_dict(cls: type[Any], payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise TaskValidationError(
            "payload", f"expected a dict for {cls.__name__}, got {type(payload).__name__}"
        )
    missing = sorted(set(cls.__required_keys__) - set(payload))
    if missing:
        raise TaskValidationError("payload", f"{cls.__name__} misses the keys {missing}")
    return payload


@functools.cache
def _conn_only(asynchronous: bool) -> Any:
    """A producer without a DSN, for the default schema: it runs only on ``conn=``."""
    from pgtasq.producer import AsyncProducer, Producer

    return AsyncProducer() if asynchronous else Producer()
