"""RabbitMQ bus through aio-pika: quorum queues, persistent messages, confirms, manual acks, TTL delays.

Queues, for a logical queue ``q`` and the bus ``prefix``:

* ``{prefix}.{q}``: the work queue (durable quorum queue); messages are published to it through
  the default exchange (routing key = queue name) with publisher confirms, ``mandatory`` and
  ``on_return_raises`` so that an unroutable message is an error, never a silent loss.
* ``{prefix}.{q}.delay.{ms}``: one quorum queue per delay bucket (``base.delay_bucket_ms``) with
  ``x-message-ttl=ms`` dead-lettering back to the work queue.  Every message in it has the same
  TTL, so expiry at the head is also expiry in order.  ``x-dead-letter-strategy=at-least-once``
  (with ``x-overflow=reject-publish``, which it requires) makes the move back durable;
  ``x-expires`` removes buckets no longer used.  No plugin is needed.
* ``{prefix}.{q}.dead``: the dead-letter store; the last error, the attempts and the failure time
  travel in headers.

Attempts are counted with headers carried across republishes (``x-flowbus-deliveries``,
``x-flowbus-retries``) plus the quorum queue's own ``x-delivery-count`` (deliveries returned
unacked, e.g. when a consumer died), so a message that kills its worker still ends in the
dead-letter store.  The robust connection re-declares the queues and restarts the consumers
after a disconnect; unacked messages are delivered again by the broker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, ChannelInvalidStateError, DeliveryError, PublishError
from yarl import URL

from flowbus.blobs.base import Health
from flowbus.bus.base import (DeadLetter, Handler, Message, QueueStats, Retry, backoff, delay_bucket_ms, encode_body,
                              error_text)
from flowbus.clock import isoformat, parse_iso
from flowbus.errors import BackendError, NotFound

log = structlog.get_logger(__name__)

QUORUM = {"x-queue-type": "quorum"}
H_KEY = "x-flowbus-key"
H_DELIVERIES = "x-flowbus-deliveries"  # deliveries before this publish
H_RETRIES = "x-flowbus-retries"  # of those, how many ended in Retry (not failures)
H_LAST_ERROR = "x-flowbus-last-error"
H_ERROR = "x-flowbus-error"
H_ATTEMPTS = "x-flowbus-attempts"
H_FAILED_AT = "x-flowbus-failed-at"
DELAY_EXPIRES_MARGIN_MS = 10 * 60 * 1000  # a delay bucket lives this long after its TTL once unused
MAX_TTL_MS = 4_000_000_000  # x-message-ttl must fit in 32 bits (≈ 46 days here)
REDECLARE_AFTER_S = 5 * 60  # redeclare a bucket before publishing if declared longer ago (see x-expires)
RETRYABLE = (*CONNECTION_EXCEPTIONS, ChannelInvalidStateError, ConnectionError, asyncio.TimeoutError)
START_HINT = "démarrez RabbitMQ : rabbitmq-server -detached && rabbitmqctl await_startup"


def safe_url(url: str) -> str:
    """The URL without credentials, for logs and health details."""
    u = URL(url)
    return str(u.with_user(None)) if u.user else url


class RabbitMQBus:
    publishes_in_store = False  # publish(tx=…) publishes once the caller's transaction has committed
    def __init__(self, url: str, *, prefix: str = "flowbus", backoff_base: timedelta = timedelta(seconds=5),
                 backoff_max: timedelta = timedelta(minutes=10), publish_timeout: float = 30.0) -> None:
        self.url = url
        self.prefix = prefix
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.publish_timeout = publish_timeout
        self.connection_name = f"flowbus-{prefix}-{uuid4().hex[:8]}"
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractRobustChannel | None = None
        self._declared: dict[str, asyncio.Future[None]] = {}
        self._declared_at: dict[str, float] = {}
        self._queues: set[str] = set()  # every queue this bus declared (delete_queues, pending)
        self._consumers: list[RabbitConsumer] = []
        self._start_lock = asyncio.Lock()

    # ---- names -------------------------------------------------------------------------------

    def work_queue(self, queue: str) -> str:
        return f"{self.prefix}.{queue}"

    def dead_queue(self, queue: str) -> str:
        return f"{self.prefix}.{queue}.dead"

    def delay_queue(self, queue: str, ms: int) -> str:
        return f"{self.prefix}.{queue}.delay.{ms}"

    # ---- connection --------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._conn is not None and not self._conn.is_closed:
                return
            try:
                self._conn = await aio_pika.connect_robust(
                    self.url, timeout=10, reconnect_interval=1,
                    client_properties={"connection_name": self.connection_name})
            except Exception as exc:  # noqa: BLE001 - every failure here means "not reachable"
                raise BackendError(f"cannot connect to RabbitMQ at {safe_url(self.url)}: {exc}",
                                   hint=START_HINT) from exc
            self._pub = self._conn.channel(publisher_confirms=True, on_return_raises=True)
            await self._pub.initialize()
            log.info("bus.connected", url=safe_url(self.url), prefix=self.prefix)

    async def _channel(self) -> AbstractRobustChannel:
        if self._pub is None:
            await self.start()
        assert self._pub is not None
        return self._pub

    async def _declare(self, name: str, arguments: dict[str, Any], *, refresh_after: float | None = None) -> None:
        """Declare ``name`` once per bus (again if ``refresh_after`` seconds passed), concurrent callers sharing it."""
        fut = self._declared.get(name)
        if fut is not None and refresh_after is not None and fut.done() \
                and time.monotonic() - self._declared_at.get(name, 0) > refresh_after:
            fut = None
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._declared[name] = fut
            try:
                channel = await self._channel()
                await channel.declare_queue(name, durable=True, arguments=arguments)
            except BaseException as exc:
                self._declared.pop(name, None)
                if isinstance(exc, asyncio.CancelledError):
                    fut.cancel()
                else:
                    fut.set_exception(exc)
                    fut.exception()  # mark retrieved: concurrent callers get it from the future
                raise
            self._queues.add(name)
            self._declared_at[name] = time.monotonic()
            fut.set_result(None)
        await fut

    async def _route(self, queue: str, delay: timedelta | None) -> str:
        try:
            return await self._route_once(queue, delay)
        except RETRYABLE:
            return str(await self._retrying(lambda: self._route_once(queue, delay)))

    async def _route_once(self, queue: str, delay: timedelta | None) -> str:
        work = self.work_queue(queue)
        await self._declare(work, QUORUM)
        if delay is None or delay <= timedelta(0):
            return work
        ms = delay_bucket_ms(delay)
        if ms > MAX_TTL_MS:  # RabbitMQ refuses a larger x-message-ttl; the handler sees it early and waits again
            log.warning("bus.delay_capped", queue=queue, delay_s=delay.total_seconds(), capped_s=MAX_TTL_MS / 1000)
            ms = MAX_TTL_MS
        name = self.delay_queue(queue, ms)
        await self._declare(name, {**QUORUM, "x-message-ttl": ms, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": work, "x-dead-letter-strategy": "at-least-once",
                                   "x-overflow": "reject-publish", "x-expires": ms + DELAY_EXPIRES_MARGIN_MS},
                            refresh_after=REDECLARE_AFTER_S)
        return name

    async def _send(self, routing_key: str, message: aio_pika.Message) -> None:
        """Publish and wait for the broker's confirm; ride out a reconnection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        while True:
            channel = await self._channel()
            try:
                await channel.default_exchange.publish(message, routing_key=routing_key, mandatory=True,
                                                       timeout=self.publish_timeout)
                return
            except PublishError as exc:  # unroutable: the queue vanished (deleted by hand, expired bucket)
                self._declared.pop(routing_key, None)
                raise BackendError(f"RabbitMQ returned the message for {routing_key}: {exc}",
                                   hint="the queue was deleted; publish again to re-declare it") from exc
            except DeliveryError as exc:
                raise BackendError(f"RabbitMQ refused the message for {routing_key}: {exc}") from exc
            except RETRYABLE as exc:
                left = deadline - loop.time()
                if left <= 0:
                    raise BackendError(f"cannot publish to RabbitMQ at {safe_url(self.url)}: {exc!r}",
                                       hint=START_HINT) from exc
                log.info("bus.publish_retry", queue=routing_key, error=repr(exc))
                assert self._conn is not None
                try:
                    async with asyncio.timeout(left):  # not wait_for: see EmbeddedConsumer._run
                        await self._conn.connected.wait()
                except TimeoutError:
                    pass
                await asyncio.sleep(0.05)

    def _amqp_message(self, message: Message, headers: dict[str, Any]) -> aio_pika.Message:
        headers = {H_KEY: message.key, **headers}
        return aio_pika.Message(encode_body(message.body).encode(), message_id=message.id,
                                content_type="application/json", headers=headers,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

    async def _publish(self, message: Message, delay: timedelta | None, headers: dict[str, Any]) -> None:
        name = await self._route(message.queue, delay)
        amqp = self._amqp_message(message, headers)
        try:
            await self._send(name, amqp)
        except BackendError:
            if name in self._declared:
                raise
            # the queue had vanished: declare it again and publish once more
            name = await self._retrying(lambda: self._route(message.queue, delay))
            await self._send(name, amqp)

    # ---- Bus ---------------------------------------------------------------------------------

    def hand_off(self, queue: str, tx: Any) -> None:
        """Never: a message is durable only once the broker has it (see ``Bus.hand_off``)."""
        return None

    async def publish(self, message: Message, *, delay: timedelta | None = None, tx: Any = None,
                      hand_off: Any = None) -> None:
        if tx is not None:
            tx.after_commit(lambda: self._publish(message, delay, {}))
            return
        await self._publish(message, delay, {})

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16,
                      max_attempts: int = 5) -> RabbitConsumer:
        await self._retrying(lambda: self._declare(self.dead_queue(queue), QUORUM))
        consumer = RabbitConsumer(self, queue, handler, prefetch=prefetch, max_attempts=max_attempts)
        await self._retrying(consumer.start)
        self._consumers.append(consumer)
        return consumer

    async def _browse(self, queue: str, pick: Callable[[AbstractIncomingMessage], bool] | None = None
                      ) -> tuple[list[AbstractIncomingMessage], Any]:
        """Read the dead-letter queue without removing anything; return (messages, channel to close)."""
        await self._declare(self.dead_queue(queue), QUORUM)
        assert self._conn is not None
        channel = await self._conn.channel(publisher_confirms=True)
        q = await channel.declare_queue(self.dead_queue(queue), durable=True, arguments=QUORUM)
        seen: list[AbstractIncomingMessage] = []
        while True:
            msg = await q.get(no_ack=False, fail=False, timeout=10)
            if msg is None:
                break
            seen.append(msg)
            if pick is not None and pick(msg):
                break
        return seen, channel

    async def _retrying(self, operation: Callable[[], Any]) -> Any:
        """Run an administrative operation again if the connection drops under it (shared broker)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        while True:
            await self._channel()
            try:
                return await operation()
            except RETRYABLE as exc:
                left = deadline - loop.time()
                if left <= 0:
                    raise BackendError(f"RabbitMQ at {safe_url(self.url)} unreachable: {exc!r}",
                                       hint=START_HINT) from exc
                assert self._conn is not None
                try:
                    async with asyncio.timeout(left):  # not wait_for: see EmbeddedConsumer._run
                        await self._conn.connected.wait()
                except TimeoutError:
                    pass
                await asyncio.sleep(0.05)

    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        return await self._retrying(lambda: self._dead_letters(queue))

    async def _dead_letters(self, queue: str) -> list[DeadLetter]:
        seen, channel = await self._browse(queue)
        try:
            letters = [_dead_letter(queue, m) for m in seen]
        finally:
            await channel.close()  # every message read goes back to the queue, unacked
        return sorted(letters, key=lambda d: d.failed_at)

    async def requeue_dead_letter(self, queue: str, message_id: str) -> None:
        await self._retrying(lambda: self._requeue_dead_letter(queue, message_id))

    async def _requeue_dead_letter(self, queue: str, message_id: str) -> None:
        seen, channel = await self._browse(queue, lambda m: m.message_id == message_id)
        try:
            found = next((m for m in seen if m.message_id == message_id), None)
            if found is None:
                raise NotFound(f"no dead letter {message_id!r} in queue {queue!r}", field="message_id")
            letter = _dead_letter(queue, found)
            headers = {H_LAST_ERROR: letter.error[:1000]}
            await self._publish(letter.message, None, headers)
            await found.ack()
            log.info("bus.dead_letter_requeued", queue=queue, message_id=message_id, key=letter.message.key)
        finally:
            await channel.close()

    async def discard_dead_letter(self, queue: str, message_id: str) -> None:
        await self._retrying(lambda: self._discard_dead_letter(queue, message_id))

    async def _discard_dead_letter(self, queue: str, message_id: str) -> None:
        seen, channel = await self._browse(queue, lambda m: m.message_id == message_id)
        try:
            found = next((m for m in seen if m.message_id == message_id), None)
            if found is None:
                raise NotFound(f"no dead letter {message_id!r} in queue {queue!r}", field="message_id")
            key = _dead_letter(queue, found).message.key
            await found.ack()
            log.warning("bus.dead_letter_discarded", queue=queue, message_id=message_id, key=key)
        finally:
            await channel.close()

    async def queue_stats(self, queues: list[str]) -> list[QueueStats]:
        return await self._retrying(lambda: self._queue_stats(queues))

    async def _count(self, channel: Any, name: str) -> tuple[Any, int]:
        """(channel, ready messages of ``name``); a queue that does not exist counts 0 (and closes the channel)."""
        assert self._conn is not None
        if channel.is_closed:
            channel = await self._conn.channel(publisher_confirms=False)
        try:
            q = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return channel, 0
        return channel, int(q.declaration_result.message_count or 0)

    async def _queue_stats(self, queues: list[str]) -> list[QueueStats]:
        assert self._conn is not None
        channel = await self._conn.channel(publisher_confirms=False)
        out = []
        try:
            for queue in queues:
                channel, ready = await self._count(channel, self.work_queue(queue))
                delayed = 0
                for name in sorted(n for n in self._queues if n.startswith(f"{self.prefix}.{queue}.delay.")):
                    channel, n = await self._count(channel, name)
                    delayed += n
                channel, dead = await self._count(channel, self.dead_queue(queue))
                in_flight = sum(c.in_flight for c in self._consumers if c.queue == queue)
                out.append(QueueStats(queue, ready, delayed, in_flight, dead))
        finally:
            if not channel.is_closed:
                await channel.close()
        return out

    async def pending(self, queue: str) -> int:
        """Ready messages in the work queue and in the delay buckets this bus declared, plus those being handled."""
        return int(await self._retrying(lambda: self._pending(queue)))

    async def _pending(self, queue: str) -> int:
        names = [self.work_queue(queue)] + sorted(n for n in self._queues
                                                  if n.startswith(f"{self.prefix}.{queue}.delay."))
        total = sum(c.in_flight for c in self._consumers if c.queue == queue)
        assert self._conn is not None
        channel = await self._conn.channel(publisher_confirms=False)
        try:
            for name in names:
                if channel.is_closed:
                    channel = await self._conn.channel(publisher_confirms=False)
                try:
                    q = await channel.declare_queue(name, passive=True)
                except aio_pika.exceptions.ChannelClosed:  # the bucket expired: nothing in it
                    self._queues.discard(name)
                    continue
                total += q.declaration_result.message_count or 0
        finally:
            if not channel.is_closed:
                await channel.close()
        return total

    async def check(self) -> Health:
        where = f"RabbitMQ {safe_url(self.url)} (prefix {self.prefix})"
        if self._conn is not None and not self._conn.is_closed:
            if self._conn.connected.is_set():
                return Health(True, where)
            return Health(False, f"{where}: connection lost, reconnecting", START_HINT)
        try:
            conn = await aio_pika.connect(self.url, timeout=5)
            await conn.close()
        except Exception as exc:  # noqa: BLE001 - reported to the operator
            return Health(False, f"{where}: {exc}", START_HINT)
        return Health(True, f"{where}: reachable, bus not started")

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        self._consumers.clear()
        if self._conn is not None:
            conn, self._conn, self._pub = self._conn, None, None
            await conn.close()
        self._declared.clear()

    async def delete_queues(self) -> None:
        """Delete every queue this bus declared (test teardown); works after close()."""
        for attempt in range(3):
            try:
                return await self._delete_queues()
            except RETRYABLE:
                if attempt == 2:
                    raise
                await asyncio.sleep(1)

    async def _delete_queues(self) -> None:
        await delete_queues(self.url, sorted(self._queues))
        self._queues.clear()


async def delete_queues(url: str, names: list[str]) -> None:
    """Delete the named queues (one channel each: deleting a missing queue closes its channel)."""
    conn = await aio_pika.connect(url, timeout=15)
    try:
        for name in names:
            channel = await conn.channel()
            try:
                await channel.queue_delete(name)
            except Exception as exc:  # noqa: BLE001 - already gone: nothing to delete
                log.debug("bus.queue_delete_skipped", queue=name, error=repr(exc))
            if not channel.is_closed:
                await channel.close()
    finally:
        await conn.close()


class RabbitConsumer:
    """One consumer of a work queue, on its own channel (its own prefetch)."""

    def __init__(self, bus: RabbitMQBus, queue: str, handler: Handler, *, prefetch: int, max_attempts: int) -> None:
        self.bus, self.queue, self.handler = bus, queue, handler
        self.prefetch, self.max_attempts = prefetch, max_attempts
        self._channel: AbstractRobustChannel | None = None
        self._queue: Any = None
        self._tag: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        assert self.bus._conn is not None
        channel = await self.bus._conn.channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=self.prefetch)
            self._queue = await channel.declare_queue(self.bus.work_queue(self.queue), durable=True,
                                                      arguments=QUORUM)
            self.bus._queues.add(self.bus.work_queue(self.queue))
            self._tag = await self._queue.consume(self._on_message, no_ack=False)
        except BaseException:
            if not channel.is_closed:
                await channel.close()
            raise
        self._channel = channel

    async def stop(self, timeout: float = 30.0) -> None:
        if self._channel is None:
            return
        channel, self._channel = self._channel, None
        if self in self.bus._consumers:
            self.bus._consumers.remove(self)
        try:
            if self._tag is not None and not channel.is_closed:
                await self._queue.cancel(self._tag)
        except RETRYABLE:
            pass
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        left = list(self._tasks)
        for task in left:  # handlers still running after the timeout: their messages are not acked
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
        if not channel.is_closed:
            await channel.close()  # messages not acked go back to the queue

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(incoming)
        finally:
            self._tasks.discard(task)

    async def _handle(self, incoming: AbstractIncomingMessage) -> None:
        headers = dict(incoming.headers or {})
        returned = int(headers.get("x-delivery-count") or (1 if incoming.redelivered else 0))
        deliveries = int(headers.get(H_DELIVERIES, 0)) + returned + 1
        retries = int(headers.get(H_RETRIES, 0))
        last_error = headers.get(H_LAST_ERROR)
        try:
            body = json.loads(incoming.body)
        except ValueError as exc:  # not ours (published by hand?): straight to the dead letters, kept as text
            body = {"undecodable": incoming.body.decode("utf-8", "replace")[:10_000]}
            message = Message(queue=self.queue, body=body, key=_text(headers.get(H_KEY, "")),
                              id=incoming.message_id or uuid4().hex, deliveries=deliveries)
            dead = {H_DELIVERIES: deliveries, H_ERROR: f"undecodable message body: {exc}", H_ATTEMPTS: 0,
                    H_FAILED_AT: isoformat(datetime.now(UTC))}
            log.warning("bus.undecodable", queue=self.queue, message_id=message.id, error=str(exc))
            await self._send_then_ack(incoming, self.bus.dead_queue(self.queue), message, dead)
            return
        message = Message(queue=self.queue, body=body, key=_text(headers.get(H_KEY, "")),
                          id=incoming.message_id or uuid4().hex, deliveries=deliveries,
                          last_error=_text(last_error) if last_error is not None else None)
        try:
            await self.handler(message)
        except Retry as retry:
            carried = {H_DELIVERIES: deliveries, H_RETRIES: retries + 1}
            if last_error is not None:
                carried[H_LAST_ERROR] = last_error
            await self._republish_then_ack(incoming, message, retry.delay, carried)
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
            error = error_text(exc)
            attempts = deliveries - retries
            if attempts >= self.max_attempts:
                log.warning("bus.dead_letter", queue=self.queue, key=message.key, message_id=message.id,
                            attempts=attempts, error=error)
                dead = {H_DELIVERIES: deliveries, H_RETRIES: retries, H_ERROR: error, H_ATTEMPTS: attempts,
                        H_FAILED_AT: isoformat(datetime.now(UTC))}
                await self._send_then_ack(incoming, self.bus.dead_queue(self.queue), message, dead)
            else:
                delay = backoff(attempts, self.bus.backoff_base, self.bus.backoff_max)
                log.info("bus.handler_failed", queue=self.queue, key=message.key, attempts=attempts,
                         retry_in=delay.total_seconds(), error=error)
                carried = {H_DELIVERIES: deliveries, H_RETRIES: retries, H_LAST_ERROR: error}
                await self._republish_then_ack(incoming, message, delay, carried)
        else:
            await self._ack(incoming)

    async def _republish_then_ack(self, incoming: AbstractIncomingMessage, message: Message,
                                  delay: timedelta, headers: dict[str, Any]) -> None:
        # publish (confirmed) before the ack: a crash in between means a duplicate, never a loss
        await self.bus._publish(message, delay, headers)
        await self._ack(incoming)

    async def _send_then_ack(self, incoming: AbstractIncomingMessage, routing_key: str, message: Message,
                             headers: dict[str, Any]) -> None:
        await self.bus._send(routing_key, self.bus._amqp_message(message, headers))
        await self._ack(incoming)

    async def _ack(self, incoming: AbstractIncomingMessage) -> None:
        try:
            await incoming.ack()
        except RETRYABLE as exc:
            # the channel closed under us: the broker will deliver the message again (handlers are idempotent)
            log.info("bus.ack_lost", queue=self.queue, message_id=incoming.message_id, error=repr(exc))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dead_letter(queue: str, incoming: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(incoming.headers or {})
    failed_at = headers.get(H_FAILED_AT)
    return DeadLetter(
        message=Message(queue=queue, body=json.loads(incoming.body), key=_text(headers.get(H_KEY, "")),
                        id=incoming.message_id or "", deliveries=int(headers.get(H_DELIVERIES, 0)),
                        last_error=_text(headers.get(H_ERROR, ""))),
        error=_text(headers.get(H_ERROR, "")),
        failed_at=parse_iso(_text(failed_at)) if failed_at else datetime.now(UTC),
        attempts=int(headers.get(H_ATTEMPTS, 0)),
    )
