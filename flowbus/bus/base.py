"""Bus: the seam for work messages (Message, Handler, Retry, DeadLetter, Consumer, Bus).

Delivery is at least once.  A handler that returns has its message acknowledged; one that
raises ``Retry`` has it delivered again after ``Retry.delay`` (not counted as a failure); one
that raises anything else has it delivered again after a backoff, and after ``max_attempts``
failed deliveries the message goes to the queue's dead-letter store with its last error.
Because a message can be delivered twice (a worker died before its ack), handlers must be
idempotent: effects are keyed by ``Message.key``, which stays the same across redeliveries.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from uuid import uuid4

from flowbus.blobs.base import Health

if TYPE_CHECKING:
    from flowbus.store.base import Tx

__all__ = ["Bus", "Consumer", "DeadLetter", "HandOff", "Handler", "Health", "Message", "Retry", "backoff",
           "delay_bucket_ms"]


@dataclass(frozen=True)
class Message:
    queue: str  # logical queue: "steps", "webhooks", "mailsec", …
    body: Mapping[str, Any]  # JSON-serialisable, small: ids, never file bytes
    key: str  # idempotency key (stable across redeliveries)
    id: str = field(default_factory=lambda: uuid4().hex)
    deliveries: int = 1  # how many times this message has been delivered (1 on first delivery)
    last_error: str | None = None
    # What the publisher already knows, for a handler in its own process: given to the handler only
    # when the message is handed off (``Bus.hand_off``); never stored, never sent over the wire.
    local: Any = field(default=None, compare=False, repr=False)


Handler = Callable[[Message], Awaitable[None]]


class Retry(Exception):  # noqa: N818 - the name says what the handler asks for, as in dramatiq/arq
    """Raised by a handler to have its message delivered again after ``delay``.

    Not a failure: it does not count towards ``max_attempts`` (a step waiting for an
    outside answer raises it as long as it needs to).
    """

    def __init__(self, delay: timedelta, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay}")
        self.delay = delay
        self.reason = reason


@dataclass(frozen=True)
class DeadLetter:
    message: Message
    error: str  # the last error, as ``ExceptionType: text``
    failed_at: datetime
    attempts: int  # failed deliveries (Retry deliveries not counted)


@dataclass(frozen=True)
class QueueStats:
    """How full a queue is.  ``ready``: waiting for a worker; ``delayed``: waiting for their time (retries,
    polls); ``in_flight``: being handled (embedded: by any process, leased; RabbitMQ: by this process's
    consumers, the broker counting the others' as unacknowledged, not as ready); ``dead``: dead letters."""

    queue: str
    ready: int
    delayed: int
    in_flight: int
    dead: int


class HandOff(Protocol):
    """A promise from ``Bus.hand_off``: the next message published with it goes straight to a
    handler of this process once the transaction commits (see ``Bus.hand_off``)."""


class Consumer(Protocol):
    async def stop(self) -> None:
        """Stop taking messages, let the handlers in progress finish, release the rest."""


class Bus(Protocol):
    """Where the engine, webhooks and mail sending put their work.

    Implementations: ``EmbeddedBus`` (messages in the state store, one machine) and
    ``RabbitMQBus`` (quorum queues through aio-pika).  ``tests/bus/test_bus_contract.py``
    runs the same cases on both.
    """

    # True when ``publish(tx=…)`` writes the message in the caller's transaction (the embedded bus);
    # False when it publishes once that transaction has committed (RabbitMQ).
    publishes_in_store: bool

    async def start(self) -> None:
        """Connect / prepare.  Raises BackendError when the backend cannot be reached."""

    async def publish(self, message: Message, *, delay: timedelta | None = None, tx: Tx | None = None,
                      hand_off: HandOff | None = None) -> None:
        """Send ``message`` to ``message.queue``, delivered after ``delay`` if given.

        With ``tx``, the message is sent only if and once that store transaction commits.
        Inside a store transaction always pass it as ``tx``: the embedded bus writes through the
        store, and a publish without ``tx`` would wait for the transaction that is waiting for it.
        Returns once the message is durable (written to the store / confirmed by the broker).
        ``hand_off``: what ``hand_off(queue, tx)`` returned, for a message without delay.

        Raises:
            BackendError: the message could not be made durable.
        """

    def hand_off(self, queue: str, tx: Tx) -> HandOff | None:
        """Whether the next message published on ``queue`` in ``tx`` can go straight to a handler of
        this process once ``tx`` commits, without a round through the queue; None when it cannot.

        The message is still written durably, leased to that handler (so it is delivered again, from
        the queue, if the process dies before the handler returned), and the handler receives the
        very ``Message`` object published, with its ``local`` attachment.  The embedded bus hands
        off when the publisher is a handler of the queue's consumer in this process (its successor
        takes its place) or when that consumer has a free slot; RabbitMQ never does (a message must
        go through the broker to be durable).  The caller may prepare for the hand-off in ``tx``
        (the engine claims the step for the message it is about to publish).
        """

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16, max_attempts: int = 5) -> Consumer:
        """Deliver the messages of ``queue`` to ``handler``, at most ``prefetch`` at a time.

        handler returns → ack; raises ``Retry`` → delivered again after its delay; raises
        anything else → delivered again after a backoff, and after ``max_attempts`` failed
        deliveries → dead-letter store with the last error.
        """

    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        """The messages of ``queue`` that failed ``max_attempts`` times, oldest first."""

    async def requeue_dead_letter(self, queue: str, message_id: str) -> None:
        """Administrator action: send a dead letter back to its queue with a fresh attempt count.

        Raises:
            NotFound: no dead letter with that id in that queue.
        """

    async def discard_dead_letter(self, queue: str, message_id: str) -> None:
        """Administrator action: drop a dead letter for good (the document it concerned stays as it is).

        Raises:
            NotFound: no dead letter with that id in that queue.
        """

    async def queue_stats(self, queues: list[str]) -> list[QueueStats]:
        """Depth of each queue: ready, delayed, being handled, dead letters (see ``QueueStats``)."""

    async def pending(self, queue: str) -> int:
        """Messages not yet done: ready, delayed and being handled (used by drain() in tests)."""

    async def check(self) -> Health:
        """Reachability, for /readyz and ``flowbus doctor``."""

    async def close(self) -> None:
        """Stop every consumer and release the connection / timers."""


def backoff(attempts: int, base: timedelta, maximum: timedelta) -> timedelta:
    """Delay before the next delivery after ``attempts`` failures: base, 2×base, 4×base… up to maximum."""
    return min(base * (2 ** max(0, attempts - 1)), maximum)


def delay_bucket_ms(delay: timedelta) -> int:
    """Round a delay up to two significant digits in milliseconds (1234 ms → 1300 ms).

    RabbitMQ delays use one TTL queue per bucket: this keeps the number of such queues
    small (at most 90 per power of ten) while never delivering early, and late by < 10 %.
    """
    ms = max(1, -(-int(delay.total_seconds() * 1_000_000) // 1000))
    if ms < 100:
        return ms
    step = 10 ** (len(str(ms)) - 2)
    return -(-ms // step) * step


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:1997] + "..."


def encode_body(body: Mapping[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
