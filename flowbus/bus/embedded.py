"""Embedded bus: messages in the state store (table ``bus_messages``), asyncio wake-ups, leases.

For one machine, with no broker to run.  A message is a row; it survives a restart because it is
only deleted once its handler returned.  A consumer claims due rows by pushing their ``due_at`` to
the end of a lease (renewed while the handler runs), so a message held by a consumer that died
becomes due again when the lease runs out and is delivered to whoever consumes next.

No busy polling: a consumer sleeps on an ``asyncio.Event`` set when a message is published on this
bus (right away, or in ``tx.after_commit``), when a slot frees up or a message is rescheduled, with a
timer to the next due time (a delayed message, a lease that may run out).  Messages published by
another process on the same database are seen within ``idle_poll`` seconds.

Concurrent ``publish`` calls are written in one transaction (group commit), and acks are batched the
same way: both are flushed as soon as the previous write is done, never held back by a timer.

Hand-off (``hand_off``): a message published in a transaction by a handler of this process's
consumer of the same queue (its successor, e.g. the engine's next step), or while that consumer has
a free slot, is written already leased to the consumer and handed to it once the transaction
commits: no wake-up, no claim, no decoding, and the handler gets the publisher's ``Message.local``.
If the process dies first, the lease runs out and the message is delivered from its row as usual.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import structlog

from flowbus.blobs.base import Health
from flowbus.bus.base import DeadLetter, Handler, Message, QueueStats, Retry, backoff, encode_body, error_text
from flowbus.clock import isoformat, parse_iso
from flowbus.errors import NotFound
from flowbus.store.base import Store, Tx

log = structlog.get_logger(__name__)

CHUNK = 400  # rows per multi-row statement (SQLite allows 32766 parameters; 8 per row here)
_COLUMNS = "(id, queue, msg_key, body, due_at, seq, deliveries, retries, last_error, created_at)"
_last_seq = 0


def _now() -> datetime:
    return datetime.now(UTC)


def _next_seq() -> int:
    """Publication order within a due time: nanoseconds, strictly increasing in this process."""
    global _last_seq
    _last_seq = max(time.time_ns(), _last_seq + 1)
    return _last_seq


def _placeholders(start: int, count: int) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


def _chunks(items: list[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass
class _Slot:
    """The place of the message a handler task is handling: given once to a message it publishes."""
    consumer: EmbeddedConsumer
    given: bool = False


_HANDLING: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("flowbus_bus_handling", default=None)


@dataclass
class EmbeddedHandOff:
    consumer: EmbeddedConsumer
    used: bool = False


class EmbeddedBus:
    publishes_in_store = True  # publish(tx=…) writes the message in the caller's transaction
    def __init__(self, store: Store, *, lease: timedelta = timedelta(seconds=30),
                 backoff_base: timedelta = timedelta(seconds=5), backoff_max: timedelta = timedelta(minutes=10),
                 idle_poll: float = 5.0) -> None:
        self.store = store
        self.lease = lease
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.idle_poll = idle_poll
        self._consumers: list[EmbeddedConsumer] = []
        self._outbox: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._publisher: asyncio.Task[None] | None = None
        self._acks: list[tuple[str, asyncio.Future[None]]] = []
        self._acker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.open()

    # ---- writing -----------------------------------------------------------------------------

    def _row(self, message: Message, delay: timedelta | None, *, last_error: str | None = None) -> tuple[Any, ...]:
        now = _now()
        due = now + delay if delay and delay > timedelta(0) else now
        return (message.id, message.queue, message.key, encode_body(message.body), isoformat(due), _next_seq(),
                0, 0, last_error, isoformat(now))

    async def _insert(self, tx: Tx, rows: list[tuple[Any, ...]]) -> None:
        for chunk in _chunks(rows):
            values = ", ".join(f"({_placeholders(i * 10 + 1, 10)})" for i in range(len(chunk)))
            args = [v for row in chunk for v in row]
            # same id published twice (a retried publish): keep one
            await tx.execute(f"INSERT INTO bus_messages {_COLUMNS} VALUES {values} ON CONFLICT (id) DO NOTHING",
                             *args)

    def _wake(self, queues: Iterable[str]) -> None:
        wanted = set(queues)
        for consumer in self._consumers:
            if consumer.queue in wanted:
                consumer.wake()

    def hand_off(self, queue: str, tx: Tx) -> EmbeddedHandOff | None:
        slot = _HANDLING.get()
        if slot is not None and not slot.given and slot.consumer.queue == queue and slot.consumer.running:
            slot.given = True  # the publishing handler's place goes to the message it publishes
            return EmbeddedHandOff(slot.consumer)
        for consumer in self._consumers:
            if consumer.queue == queue and consumer.running and consumer.has_room():
                consumer.reserved += 1  # held for this transaction, whether it publishes or not
                tx.on_end(consumer.release_reservation)
                return EmbeddedHandOff(consumer)
        return None

    async def publish(self, message: Message, *, delay: timedelta | None = None, tx: Tx | None = None,
                      hand_off: Any = None) -> None:
        if tx is not None and isinstance(hand_off, EmbeddedHandOff) and not hand_off.used \
                and not (delay and delay > timedelta(0)):
            hand_off.used = True
            consumer = hand_off.consumer
            # leased to the consumer (due when the lease runs out) and counted as delivered once
            msg_id, queue, key, body, lease_end, seq, _deliveries, *rest = self._row(message, self.lease)
            await tx.execute(f"INSERT INTO bus_messages {_COLUMNS[:-1]}, lease_owner) VALUES "
                             f"({_placeholders(1, 11)})", msg_id, queue, key, body, lease_end, seq, 1, *rest,
                             consumer.owner)
            tx.after_commit(lambda: consumer.take(message))
            return
        row = self._row(message, delay)
        if tx is not None:
            await self._insert(tx, [row])
            tx.after_commit(lambda: self._wake([message.queue]))
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((row, fut))
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._flush_outbox())
        await fut

    async def _flush_outbox(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                async with self.store.transaction() as tx:
                    await self._insert(tx, [row for row, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - handed to each publisher
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            self._wake(row[1] for row, _ in batch)

    async def _ack(self, message_id: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.append((message_id, fut))
        if self._acker is None or self._acker.done():
            self._acker = asyncio.create_task(self._flush_acks())
        await fut

    async def _flush_acks(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                async with self.store.transaction() as tx:
                    for chunk in _chunks([mid for mid, _ in batch]):
                        await tx.execute(f"DELETE FROM bus_messages WHERE id IN ({_placeholders(1, len(chunk))})",
                                         *chunk)
            except BaseException as exc:  # noqa: BLE001 - handed to each waiter
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    # ---- claiming ----------------------------------------------------------------------------

    async def _claim(self, queue: str, count: int, owner: str) -> tuple[list[dict[str, Any]], datetime | None]:
        """Lease up to ``count`` due messages; also return when the next one is due if fewer were found."""
        now = _now()
        lock = " FOR UPDATE SKIP LOCKED" if self.store.dialect == "postgres" else ""
        async with self.store.transaction() as tx:
            rows = await tx.fetch("SELECT id, msg_key, body, deliveries, retries, last_error FROM bus_messages "
                                  f"WHERE queue = $1 AND due_at <= $2 ORDER BY due_at, seq LIMIT $3{lock}",
                                  queue, isoformat(now), count)
            if rows:
                ids = [r["id"] for r in rows]
                await tx.execute(f"UPDATE bus_messages SET due_at = $1, lease_owner = $2, "
                                 f"deliveries = deliveries + 1 WHERE id IN ({_placeholders(3, len(ids))})",
                                 isoformat(now + self.lease), owner, *ids)
            nxt = None
            if len(rows) < count:
                nxt = await tx.fetchval("SELECT MIN(due_at) FROM bus_messages WHERE queue = $1 "
                                        "AND (lease_owner IS NULL OR lease_owner <> $2)", queue, owner)
        return rows, parse_iso(nxt) if nxt else None

    async def _renew(self, ids: list[str], owner: str) -> None:
        until = isoformat(_now() + self.lease)
        async with self.store.transaction() as tx:
            for chunk in _chunks(ids):
                await tx.execute(f"UPDATE bus_messages SET due_at = $1 WHERE lease_owner = $2 "
                                 f"AND id IN ({_placeholders(3, len(chunk))})", until, owner, *chunk)

    async def _release(self, queue: str, message_ids: list[str], owner: str) -> None:
        """Messages leased to ``owner`` that it will not handle: due again now, for whoever consumes."""
        async with self.store.transaction() as tx:
            for chunk in _chunks(message_ids):
                await tx.execute(f"UPDATE bus_messages SET due_at = $1, lease_owner = NULL WHERE lease_owner = $2 "
                                 f"AND id IN ({_placeholders(3, len(chunk))})", isoformat(_now()), owner, *chunk)
        self._wake([queue])

    async def _reschedule(self, message: Message, owner: str, delay: timedelta, *, retried: bool,
                          last_error: str | None) -> None:
        async with self.store.transaction() as tx:
            await tx.execute("UPDATE bus_messages SET due_at = $1, lease_owner = NULL, retries = retries + $2, "
                             "last_error = COALESCE($3, last_error) WHERE id = $4 AND lease_owner = $5",
                             isoformat(_now() + delay), 1 if retried else 0, last_error, message.id, owner)
        self._wake([message.queue])

    async def _bury(self, message: Message, error: str, attempts: int) -> None:
        async with self.store.transaction() as tx:
            await tx.execute("DELETE FROM bus_dead_letters WHERE id = $1", message.id)
            await tx.execute("INSERT INTO bus_dead_letters (id, queue, msg_key, body, deliveries, attempts, error, "
                             "failed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", message.id, message.queue,
                             message.key, encode_body(message.body), message.deliveries, attempts, error,
                             isoformat(_now()))
            await tx.execute("DELETE FROM bus_messages WHERE id = $1", message.id)

    # ---- Bus ---------------------------------------------------------------------------------

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16,
                      max_attempts: int = 5) -> EmbeddedConsumer:
        consumer = EmbeddedConsumer(self, queue, handler, prefetch=prefetch, max_attempts=max_attempts)
        self._consumers.append(consumer)
        consumer.start()
        return consumer

    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        async with self.store.transaction() as tx:
            rows = await tx.fetch("SELECT * FROM bus_dead_letters WHERE queue = $1 ORDER BY failed_at, id", queue)
        return [DeadLetter(message=Message(queue=r["queue"], body=json.loads(r["body"]), key=r["msg_key"], id=r["id"],
                                           deliveries=int(r["deliveries"]), last_error=r["error"]),
                           error=r["error"], failed_at=parse_iso(r["failed_at"]), attempts=int(r["attempts"]))
                for r in rows]

    async def requeue_dead_letter(self, queue: str, message_id: str) -> None:
        async with self.store.transaction() as tx:
            row = await tx.fetchrow("SELECT * FROM bus_dead_letters WHERE queue = $1 AND id = $2", queue, message_id)
            if row is None:
                raise NotFound(f"no dead letter {message_id!r} in queue {queue!r}", field="message_id")
            await tx.execute("DELETE FROM bus_dead_letters WHERE id = $1", message_id)
            message = Message(queue=queue, body=json.loads(row["body"]), key=row["msg_key"], id=message_id)
            await tx.execute("DELETE FROM bus_messages WHERE id = $1", message_id)
            await self._insert(tx, [self._row(message, None, last_error=row["error"])])
            tx.after_commit(lambda: self._wake([queue]))
        log.info("bus.dead_letter_requeued", queue=queue, message_id=message_id, key=row["msg_key"])

    async def discard_dead_letter(self, queue: str, message_id: str) -> None:
        async with self.store.transaction() as tx:
            row = await tx.fetchrow("SELECT msg_key FROM bus_dead_letters WHERE queue = $1 AND id = $2", queue,
                                    message_id)
            if row is None:
                raise NotFound(f"no dead letter {message_id!r} in queue {queue!r}", field="message_id")
            await tx.execute("DELETE FROM bus_dead_letters WHERE id = $1", message_id)
        log.warning("bus.dead_letter_discarded", queue=queue, message_id=message_id, key=row["msg_key"])

    async def queue_stats(self, queues: list[str]) -> list[QueueStats]:
        now = isoformat(datetime.now(UTC))
        out = []
        async with self.store.transaction() as tx:
            for queue in queues:
                row = await tx.fetchrow(
                    "SELECT COUNT(*) FILTER (WHERE lease_owner IS NULL AND due_at <= $2) AS ready, "
                    "COUNT(*) FILTER (WHERE lease_owner IS NULL AND due_at > $2) AS delayed, "
                    "COUNT(*) FILTER (WHERE lease_owner IS NOT NULL) AS in_flight "
                    "FROM bus_messages WHERE queue = $1", queue, now)
                dead = await tx.fetchval("SELECT COUNT(*) FROM bus_dead_letters WHERE queue = $1", queue)
                out.append(QueueStats(queue, int(row["ready"] or 0), int(row["delayed"] or 0),
                                      int(row["in_flight"] or 0), int(dead or 0)))
        return out

    async def pending(self, queue: str) -> int:
        async with self.store.transaction() as tx:
            count = int(await tx.fetchval("SELECT COUNT(*) FROM bus_messages WHERE queue = $1", queue) or 0)
        return count + sum(1 for row, _ in self._outbox if row[1] == queue)

    async def check(self) -> Health:
        health = await self.store.check()
        if not health.ok:
            return Health(False, f"embedded bus: {health.detail}", health.fix)
        return Health(True, f"embedded bus in {health.detail}")

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        for task in (self._publisher, self._acker):
            if task is not None and not task.done():
                await task


class EmbeddedConsumer:
    def __init__(self, bus: EmbeddedBus, queue: str, handler: Handler, *, prefetch: int, max_attempts: int) -> None:
        self.bus, self.queue, self.handler = bus, queue, handler
        self.prefetch, self.max_attempts = max(1, prefetch), max_attempts
        self.owner = uuid4().hex
        self._event = asyncio.Event()
        self._held: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self.running = False
        self._context = contextvars.Context()
        self.reserved = 0  # slots promised to hand-offs whose transaction has not ended yet
        self._releasing: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._event.set()

    def has_room(self) -> bool:
        return len(self._held) + self.reserved < self.prefetch

    def release_reservation(self) -> None:
        self.reserved -= 1

    def take(self, message: Message) -> None:
        """A message handed off to this consumer (already leased to it): handle it now."""
        if not self.running:  # stopped since the hand-off was promised: leave it to whoever consumes next
            task = asyncio.ensure_future(self._release(message.id))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
            return
        if message.id not in self._held:
            # in the context the consumer started with, as a message it claimed: none of the publisher's
            # context variables (an API request's log bindings…) follow the message
            self._held[message.id] = asyncio.create_task(self._handle(message, 0), context=self._context.copy())

    async def _release(self, message_id: str) -> None:
        try:
            await self.bus._release(self.queue, [message_id], self.owner)
        except Exception:  # noqa: BLE001 - the lease runs out instead, and the message comes back then
            log.exception("bus.release_failed", queue=self.queue, message_id=message_id)

    def start(self) -> None:
        self.running = True
        self._context = contextvars.copy_context()
        self._loop = asyncio.create_task(self._run(), name=f"bus-consumer-{self.queue}")
        self._renewer = asyncio.create_task(self._renew_leases(), name=f"bus-lease-{self.queue}")

    async def _run(self) -> None:
        while True:
            self._event.clear()
            free = self.prefetch - len(self._held)
            timeout: float | None = None
            if free > 0:
                try:
                    rows, nxt = await self.bus._claim(self.queue, free, self.owner)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the store is down: try again shortly
                    log.exception("bus.claim_failed", queue=self.queue)
                    await asyncio.sleep(1.0)
                    continue
                for row in rows:
                    if row["id"] not in self._held:
                        message = Message(queue=self.queue, body=json.loads(row["body"]), key=row["msg_key"],
                                          id=row["id"], deliveries=int(row["deliveries"]) + 1,
                                          last_error=row["last_error"])
                        self._held[row["id"]] = asyncio.create_task(self._handle(message, int(row["retries"])))
                if len(rows) == free:
                    continue
                timeout = self.bus.idle_poll
                if nxt is not None:
                    timeout = min(timeout, max(0.0, (nxt - _now()).total_seconds()) + 0.001)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
                # arrives in the turn the event is set, and stop() would wait for this task forever
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                pass

    async def _renew_leases(self) -> None:
        period = max(0.05, self.bus.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(period)
            if self._held:
                try:
                    await self.bus._renew(list(self._held), self.owner)
                except Exception:  # noqa: BLE001 - next period will try again
                    log.exception("bus.renew_failed", queue=self.queue)

    async def _handle(self, message: Message, retries: int) -> None:
        deliveries = message.deliveries
        _HANDLING.set(_Slot(self))  # this task's context only
        try:
            try:
                await self.handler(message)
            except Retry as retry:
                await self.bus._reschedule(message, self.owner, retry.delay, retried=True, last_error=None)
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                error = error_text(exc)
                attempts = deliveries - retries
                if attempts >= self.max_attempts:
                    log.warning("bus.dead_letter", queue=self.queue, key=message.key, message_id=message.id,
                                attempts=attempts, error=error)
                    await self.bus._bury(message, error, attempts)
                else:
                    delay = backoff(attempts, self.bus.backoff_base, self.bus.backoff_max)
                    log.info("bus.handler_failed", queue=self.queue, key=message.key, attempts=attempts,
                             retry_in=delay.total_seconds(), error=error)
                    await self.bus._reschedule(message, self.owner, delay, retried=False, last_error=error)
            else:
                await self.bus._ack(message.id)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the store failed: the lease runs out and the message comes back
            log.exception("bus.settle_failed", queue=self.queue, message_id=message.id)
        finally:
            self._held.pop(message.id, None)
            self._event.set()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, let the handlers in progress finish (up to ``timeout``), release the rest."""
        self.running = False
        if self in self.bus._consumers:
            self.bus._consumers.remove(self)
        for task in (self._loop, self._renewer):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task])  # unlike `await task`, never mistakes our own cancellation for its
        if self._held:
            await asyncio.wait(set(self._held.values()), timeout=timeout)
        left = list(self._held.values())
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
            async with self.bus.store.transaction() as tx:
                await tx.execute("UPDATE bus_messages SET due_at = $1, lease_owner = NULL WHERE lease_owner = $2",
                                 isoformat(_now()), self.owner)
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
