"""Bus contract: the same cases against the embedded bus (on SQLite and on PostgreSQL) and RabbitMQ.

RabbitMQ is this machine's broker (SERVICES.md); each test uses its own queue prefix and
deletes its queues at teardown.  When the broker is unreachable the rabbitmq cases fail in CI
(CI=true) and are skipped locally, with the command that starts it (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from flowbus.bus.base import DeadLetter, Message, Retry
from flowbus.errors import NotFound

if TYPE_CHECKING:
    from tests.bus.conftest import BusEnv  # the env fixture's type

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "bus_kill_worker.py"


async def wait_until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def msg(i: int, queue: str = "q") -> Message:
    return Message(queue=queue, body={"n": i, "document": f"doc-{i}"}, key=f"k{i}")


# ---- cases -----------------------------------------------------------------------------------


async def test_publish_consume_roundtrip(env: BusEnv) -> None:
    bus = await env.open()
    sent = [msg(i) for i in range(20)]
    for m in sent:
        await bus.publish(m)
    assert await bus.pending("q") == 20
    got: list[Message] = []

    async def handler(m: Message) -> None:
        got.append(m)

    consumer = await bus.consume("q", handler, prefetch=4)
    await wait_until(lambda: len(got) == 20, 10, "20 messages")
    await wait_until(lambda: _zero(bus.pending("q")), 5, "pending == 0")
    await consumer.stop()
    by_id = {m.id: m for m in got}
    assert set(by_id) == {m.id for m in sent}
    for m in sent:
        assert by_id[m.id].body == m.body and by_id[m.id].key == m.key
        assert by_id[m.id].deliveries == 1 and by_id[m.id].last_error is None
    assert (await bus.check()).ok


async def _zero(pending: Awaitable[int]) -> bool:
    return await pending == 0


async def test_publish_in_transaction_only_after_commit(env: BusEnv) -> None:
    bus = await env.open()
    store = env.stores[0] if env.stores else await env.store()
    got: list[str] = []

    async def handler(m: Message) -> None:
        got.append(m.key)

    await bus.consume("q", handler)
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await bus.publish(msg(1), tx=tx)
            raise RuntimeError("roll back")
    async with store.transaction() as tx:
        await bus.publish(msg(2), tx=tx)
        await bus.publish(msg(3), delay=timedelta(milliseconds=100), tx=tx)
    await wait_until(lambda: len(got) == 2, 10, "the committed messages")
    await asyncio.sleep(0.2)
    assert sorted(got) == ["k2", "k3"]


async def test_delays_deliver_in_due_order_never_early(env: BusEnv) -> None:
    bus = await env.open()
    got: list[tuple[int, float]] = []
    start = time.monotonic()

    async def handler(m: Message) -> None:
        got.append((m.body["n"], time.monotonic() - start))

    await bus.consume("q", handler)
    delays = {1: 0.6, 2: 0.2, 3: 0.4, 4: 0.0}
    for n, d in delays.items():
        await bus.publish(msg(n), delay=timedelta(seconds=d) if d else None)
    assert await bus.pending("q") >= 3  # delayed messages count as pending
    await wait_until(lambda: len(got) == 4, 10, "4 delayed messages")
    assert [n for n, _ in got] == [4, 2, 3, 1]
    for n, at in got:
        assert at >= delays[n] - 0.02, f"message {n} delivered at {at:.3f}s, before its {delays[n]}s delay"


async def test_retry_redelivers_after_delay_without_counting_a_failure(env: BusEnv) -> None:
    bus = await env.open()
    seen: list[tuple[int, float]] = []
    start = time.monotonic()

    async def handler(m: Message) -> None:
        seen.append((m.deliveries, time.monotonic() - start))
        if m.deliveries < 3:
            raise Retry(timedelta(milliseconds=250))

    await bus.consume("q", handler, max_attempts=1)  # one failure would dead-letter: Retry must not count
    await bus.publish(msg(1))
    await wait_until(lambda: len(seen) == 3, 10, "3 deliveries")
    await wait_until(lambda: _zero(bus.pending("q")), 5, "pending == 0")
    assert [d for d, _ in seen] == [1, 2, 3]
    assert seen[1][1] - seen[0][1] >= 0.23 and seen[2][1] - seen[1][1] >= 0.23
    assert await bus.dead_letters("q") == []


async def test_always_failing_message_ends_in_dead_letters_then_requeue(env: BusEnv) -> None:
    bus = await env.open()
    calls: list[Message] = []
    healed = asyncio.Event()

    async def handler(m: Message) -> None:
        calls.append(m)
        if not healed.is_set():
            raise ValueError(f"remote refused (attempt {m.deliveries})")

    await bus.consume("q", handler, max_attempts=3)
    await bus.publish(msg(7))
    await bus.publish(msg(8))
    await wait_until(lambda: len(calls) == 6, 10, "3 attempts of each message")
    letters: list[DeadLetter] = []

    async def two_letters() -> bool:
        letters[:] = await bus.dead_letters("q")
        return len(letters) == 2

    await wait_until(two_letters, 10, "2 dead letters")
    await asyncio.sleep(0.2)
    assert len(calls) == 6, "a dead letter must not be delivered again"
    assert await bus.pending("q") == 0
    seven = next(d for d in letters if d.message.key == "k7")
    assert seven.attempts == 3
    assert seven.error == "ValueError: remote refused (attempt 3)"
    assert seven.message.body == {"n": 7, "document": "doc-7"}
    second = [m for m in calls if m.key == "k7"][1]
    assert second.deliveries == 2 and second.last_error == "ValueError: remote refused (attempt 1)"

    healed.set()
    await bus.requeue_dead_letter("q", seven.message.id)
    await wait_until(lambda: len(calls) == 7, 10, "the requeued message")
    assert calls[-1].key == "k7" and calls[-1].id == seven.message.id
    await wait_until(lambda: _zero(bus.pending("q")), 5, "pending == 0")
    remaining = await bus.dead_letters("q")
    assert [d.message.key for d in remaining] == ["k8"]
    with pytest.raises(NotFound):
        await bus.requeue_dead_letter("q", "no-such-message")
    [stats] = await bus.queue_stats(["q"])
    assert (stats.queue, stats.ready, stats.dead) == ("q", 0, 1)
    # discarded: gone for good, never delivered
    await bus.discard_dead_letter("q", remaining[0].message.id)
    assert await bus.dead_letters("q") == []
    await asyncio.sleep(0.2)
    assert len(calls) == 7
    with pytest.raises(NotFound):
        await bus.discard_dead_letter("q", remaining[0].message.id)
    [stats] = await bus.queue_stats(["q"])
    assert (stats.ready, stats.delayed, stats.in_flight, stats.dead) == (0, 0, 0, 0)


async def test_queue_stats_count_ready_delayed_and_in_flight(env: BusEnv) -> None:
    bus = await env.open()
    release = asyncio.Event()
    started: list[Message] = []

    async def slow(m: Message) -> None:
        started.append(m)
        await release.wait()

    await bus.publish(msg(1))
    await bus.publish(msg(2))
    await bus.publish(msg(3), delay=timedelta(seconds=60))

    async def counted() -> bool:
        [s] = await bus.queue_stats(["q"])
        return (s.ready, s.delayed) == (2, 1)

    await wait_until(counted, 10, "2 ready, 1 delayed")
    await bus.consume("q", slow, prefetch=1)
    await wait_until(lambda: len(started) == 1, 10, "one message taken")

    async def one_in_flight() -> bool:
        [s] = await bus.queue_stats(["q"])
        return (s.ready, s.delayed, s.in_flight, s.dead) == (1, 1, 1, 0)

    await wait_until(one_in_flight, 10, "1 ready, 1 delayed, 1 in flight")
    release.set()


async def test_ack_only_after_the_handler_returns(env: BusEnv) -> None:
    bus = await env.open()
    started = asyncio.Event()
    deliveries: list[int] = []

    async def stuck(m: Message) -> None:
        deliveries.append(m.deliveries)
        started.set()
        await asyncio.sleep(3600)

    consumer = await bus.consume("q", stuck)
    await bus.publish(msg(1))
    await asyncio.wait_for(started.wait(), 10)
    assert await bus.pending("q") == 1  # held, not acked
    await consumer.stop(timeout=0.2)  # the handler never returned: the message must come back

    again: list[Message] = []

    async def ok(m: Message) -> None:
        again.append(m)

    await bus.consume("q", ok)
    await wait_until(lambda: len(again) == 1, 10, "the redelivery")
    assert again[0].key == "k1" and again[0].deliveries == 2
    await wait_until(lambda: _zero(bus.pending("q")), 5, "pending == 0")


async def test_messages_survive_a_restart(env: BusEnv) -> None:
    first = await env.open()
    for i in range(50):
        await first.publish(msg(i))
    await first.publish(msg(50), delay=timedelta(milliseconds=300))
    await first.close()
    for store in env.stores:  # the whole process goes away: its database connection too
        await store.close()

    second = await env.open()
    got: set[str] = set()

    async def handler(m: Message) -> None:
        got.add(m.key)

    await second.consume("q", handler)
    await wait_until(lambda: len(got) == 51, 10, "51 messages after the restart")
    assert got == {f"k{i}" for i in range(51)}


async def test_10000_messages_consumer_killed_midway_none_lost(env: BusEnv, tmp_path: Path) -> None:
    total = 10_000
    bus = await env.open()
    sent = [msg(i, "big") for i in range(total)]
    if env.embedded:
        async with env.stores[0].transaction() as tx:
            for m in sent:
                await bus.publish(m, tx=tx)
    else:
        for i in range(0, total, 1000):
            await asyncio.gather(*(bus.publish(m) for m in sent[i:i + 1000]))
    assert await bus.pending("big") == total

    effects = tmp_path / "effects.txt"
    args = [env.location, "big"] if env.embedded else [env.amqp_url or "", env.prefix, "big"]
    proc = subprocess.Popen([sys.executable, str(WORKER), "embedded" if env.embedded else "rabbitmq", *args, str(effects)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE)
    try:
        await wait_until(lambda: effects.exists() and effects.read_text().count("\n") >= 3000, 30,
                         "the worker process to handle 3000 messages")
    finally:
        proc.send_signal(signal.SIGKILL)  # no ack, no lease release, no clean close
        proc.wait()
    before = effects.read_text().split()
    assert 3000 <= len(before) < total, "the worker must be killed mid-way"
    claimed = None
    if env.embedded:  # the messages the dead worker had claimed (leased), whether handled or not
        async with env.stores[0].transaction() as tx:
            claimed = await tx.fetchval("SELECT COUNT(*) FROM bus_messages WHERE queue = $1 AND deliveries > 0",
                                        "big")

    done = set(before)
    performed: list[str] = []
    redelivered = 0

    async def handler(m: Message) -> None:
        nonlocal redelivered
        if m.deliveries > 1:
            redelivered += 1
        if m.key in done:  # the effect already happened before the kill: never repeat it
            return
        done.add(m.key)
        performed.append(m.key)

    await bus.consume("big", handler, prefetch=100)
    await wait_until(lambda: len(done) == total, 40, f"all {total} messages")
    await wait_until(lambda: _zero(bus.pending("big")), 10, "pending == 0")
    all_effects = before + performed
    assert len(all_effects) == total, "an effect was repeated"
    assert set(all_effects) == {m.key for m in sent}, "a message was lost"
    if claimed is not None:  # every message in flight at the kill, and only those, comes again
        assert claimed > 0 and redelivered == claimed
    else:  # RabbitMQ: the unacked messages (up to the prefetch) come back marked as redelivered
        assert redelivered > 0, "messages in flight at the kill must be delivered again"


@pytest.mark.parametrize("env", ["rabbitmq"], indirect=True)
async def test_rabbitmq_consumer_resumes_after_connections_are_closed(env: BusEnv) -> None:
    """``rabbitmqctl close_connection`` on the bus's connection: the robust connection comes back,
    the consumer resumes, nothing is lost (only this bus's connection is closed, not the neighbours')."""
    bus = await env.open()
    total = 4000
    sent = [msg(i) for i in range(total)]
    for i in range(0, total, 1000):
        await asyncio.gather(*(bus.publish(m) for m in sent[i:i + 1000]))
    done: set[str] = set()
    reconnected = asyncio.Event()
    bus._conn.reconnect_callbacks.add(lambda *_: reconnected.set())

    async def handler(m: Message) -> None:
        await asyncio.sleep(0.01)
        done.add(m.key)

    await bus.consume("q", handler, prefetch=20)
    await wait_until(lambda: len(done) >= 300, 20, "300 messages")
    await asyncio.to_thread(close_connections, bus.connection_name)
    assert len(done) < total, "the connection must be closed mid-way"
    await bus.publish(msg(total))  # published while the connection is down: waits for it to come back
    await asyncio.wait_for(reconnected.wait(), 20)
    await wait_until(lambda: len(done) == total + 1, 40, "every message after the reconnection")
    assert (await bus.check()).ok
    await wait_until(lambda: _zero(bus.pending("q")), 10, "pending == 0")


def close_connections(connection_name: str) -> None:
    out = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    pids = [line.split("\t", 1)[0] for line in out.splitlines() if connection_name in line]
    assert pids, f"connection {connection_name} not found in rabbitmqctl list_connections"
    for pid in pids:
        subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "test: abrupt close"],
                       capture_output=True, timeout=30, check=True)


@pytest.mark.parametrize("env", ["rabbitmq"], indirect=True)
async def test_rabbitmq_undecodable_message_goes_to_dead_letters(env: BusEnv) -> None:
    """A message that is not ours (published by hand, not JSON) must not block the queue."""
    import aio_pika
    bus = await env.open()
    got: list[str] = []

    async def handler(m: Message) -> None:
        got.append(m.key)

    await bus.consume("q", handler)
    conn = await aio_pika.connect(env.amqp_url)
    async with conn:
        channel = await conn.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"<not json>", message_id="raw-1"),
                                               routing_key=bus.work_queue("q"))
    await bus.publish(msg(1))
    await wait_until(lambda: got == ["k1"], 10, "the next message")
    letters = await bus.dead_letters("q")
    assert [d.message.id for d in letters] == ["raw-1"]
    assert letters[0].error.startswith("undecodable message body")
    assert letters[0].message.body == {"undecodable": "<not json>"}
