"""Task declarations without a database: defaults, overrides, typed payloads, binding."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, TypedDict

import pytest

import pgtasq
from pgtasq import ConfigurationError, Consumer, Task, TaskType, TaskValidationError, task_type
from pgtasq.models import QUEUE_DEFAULT
from pgtasq.task_types import DEFAULTABLE, payload_as, retry_policy


@dataclasses.dataclass
class Email:
    to: str
    subject: str = ""


class Sms(TypedDict):
    number: str
    text: str


def test_defaults_apply_and_overrides_win() -> None:
    send = task_type("email.send", queue="mail", priority=5, max_attempts=3, timeout=30)
    task = send.task({"to": "a"})
    assert (task.type, task.payload, task.queue, task.priority) == (
        "email.send",
        {"to": "a"},
        "mail",
        5,
    )
    assert (task.max_attempts, task.timeout) == (3, 30)
    other = send.task(None, queue="bulk", max_attempts=1, idempotency_key="k")
    assert (other.queue, other.priority, other.max_attempts) == ("bulk", 5, 1)
    assert other.idempotency_key == "k"
    plain = task_type("plain").task()
    assert plain == Task("plain")
    assert plain.queue == QUEUE_DEFAULT


def test_a_declaration_is_checked_when_made() -> None:
    with pytest.raises(TaskValidationError, match="priority"):
        task_type("t", priority=10_000)
    with pytest.raises(TaskValidationError, match="type"):
        task_type("")
    with pytest.raises(ConfigurationError, match="no defaults for"):
        TaskType("t", defaults={"idempotency_key": "k"})
    with pytest.raises(ConfigurationError, match="dataclass or a TypedDict"):
        task_type("t", int)
    with pytest.raises(ConfigurationError, match="retry must be"):
        task_type("t", retry=-1)
    with pytest.raises(ConfigurationError, match="retry must be"):
        task_type("t", retry=float("nan"))
    assert set(DEFAULTABLE) <= set(Task.__init__.__code__.co_varnames)


def test_retry_policy() -> None:
    fixed = retry_policy("t", 7)
    assert fixed is not None and fixed(None, ValueError()) == 7.0  # type: ignore[arg-type]

    def mine(info: Any, exc: BaseException) -> float:
        return 1.0

    assert retry_policy("t", mine) is mine
    assert retry_policy("t", None) is None


def test_dataclass_payloads_round_trip() -> None:
    send = task_type("email.send", Email)
    task = send.task(Email("a@example.com", "hi"))
    assert task.payload == {"to": "a@example.com", "subject": "hi"}
    assert send.load(task.payload) == Email("a@example.com", "hi")
    assert payload_as(Email, {"to": "b"}) == Email("b")
    with pytest.raises(TaskValidationError, match="takes a Email, got dict"):
        send.task({"to": "a"})  # type: ignore[arg-type]
    with pytest.raises(TaskValidationError, match="does not fit Email"):
        payload_as(Email, {"to": "a", "cc": "b"})
    with pytest.raises(TaskValidationError, match="expected an object for Email"):
        payload_as(Email, ["a"])
    assert send.task().payload is None


def test_typed_dict_payloads_round_trip() -> None:
    sms = task_type("sms.send", Sms)
    task = sms.task({"number": "1", "text": "hi"})
    assert task.payload == {"number": "1", "text": "hi"}
    assert sms.load(task.payload) == {"number": "1", "text": "hi"}
    with pytest.raises(TaskValidationError, match=r"misses the keys \['text'\]"):
        sms.task({"number": "1"})  # type: ignore[typeddict-item]
    with pytest.raises(TaskValidationError, match="expected a dict for Sms"):
        payload_as(Sms, "x")
    with pytest.raises(TypeError, match="dataclass or a TypedDict"):
        payload_as(int, 1)


def test_binding_a_declaration_to_a_consumer() -> None:
    send = task_type("email.send", Email, retry=60)
    consumer = Consumer()

    @send.handler(consumer)
    def handle(ctx: pgtasq.TaskContext) -> None: ...

    assert consumer.handlers["email.send"] is handle
    assert consumer.task_types["email.send"] is send

    other = Consumer()
    other.task(send)(handle)
    assert other.task_types["email.send"] is send
    with pytest.raises(TypeError, match="given to task_type"):
        other.task(send, queue="x")


def test_consumer_task_options_declare_the_type() -> None:
    consumer = Consumer()

    @consumer.task("report", queue="slow", timeout=timedelta(minutes=5), retry=30)
    def report(ctx: pgtasq.TaskContext) -> None: ...

    declared = consumer.task_types["report"]
    assert declared.task().queue == "slow" and declared.task().timeout == timedelta(minutes=5)

    @consumer.task("plain")
    def plain(ctx: pgtasq.TaskContext) -> None: ...

    assert "plain" not in consumer.task_types  # no options: registered as before


def test_per_type_retry_delay_overrides_the_consumers() -> None:
    def consumers(info: Any, exc: BaseException) -> float:
        return 1.0

    consumer = Consumer(retry_delay=consumers)
    assert consumer._retry_delay() is consumers  # nothing declared: the consumer's own
    consumer.task("fixed", retry=99)(lambda ctx: None)
    consumer.task("limited", max_attempts=2)(lambda ctx: None)
    delay = consumer._retry_delay()

    def info(kind: str) -> Any:
        return type("Info", (), {"type": kind})()

    assert delay(info("fixed"), ValueError()) == 99.0
    assert delay(info("limited"), ValueError()) == 1.0
    assert delay(info("unknown"), ValueError()) == 1.0


def test_enqueue_needs_a_producer_of_its_kind() -> None:
    send = task_type("email.send")
    with pytest.raises(ConfigurationError, match="pass producer="):
        send.enqueue({})
    with pytest.raises(ConfigurationError, match="AsyncProducer is for aenqueue"):
        send.enqueue({}, producer=pgtasq.AsyncProducer())  # type: ignore[arg-type]


def test_a_declaration_with_the_inline_producer() -> None:
    """No database: the typed payload goes through the handler and back as a result."""
    from pgtasq.testing import InlineProducer

    send = task_type("email.send", Email, queue="mail")
    consumer = Consumer(queues={"mail": 1})

    @send.handler(consumer)
    def handle(ctx: pgtasq.TaskContext) -> str:
        return ctx.payload_as(Email).to

    info = send.enqueue(Email("ann@example.com"), producer=InlineProducer(consumer))
    assert (info.queue, info.result) == ("mail", "ann@example.com")
