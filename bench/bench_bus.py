"""Bus throughput: RabbitMQBus against raw aio-pika on the same broker, and the embedded bus.

Usage: python bench/bench_bus.py [messages] [amqp url]

Both RabbitMQ runs use the same settings: durable quorum queue, persistent messages, publisher
confirms, manual acks, the same prefetch, the same publishing concurrency (a window of
``WINDOW`` publishes awaited together) and a JSON body encoded/decoded on each side.  Each run
publishes N messages, then consumes them; messages/s = N / (publish time + consume time).
Target: RabbitMQBus ≥ 0.7 × raw aio-pika.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowbus.bus.base import Message  # noqa: E402
from flowbus.bus.embedded import EmbeddedBus  # noqa: E402
from flowbus.bus.rabbitmq import RabbitMQBus  # noqa: E402
from flowbus.store.sqlite import SQLiteStore  # noqa: E402

PREFETCH = 200
WINDOW = 1000
ROUNDS = 3


def body(i: int) -> dict[str, object]:
    return {"document": f"doc-{i}", "step": "sign", "attempt": 1, "seq": i, "op": "start"}


async def raw_aiopika(url: str, n: int) -> tuple[float, float]:
    name = f"bench.raw.{uuid.uuid4().hex[:8]}"
    conn = await aio_pika.connect_robust(url)
    try:
        pub = await conn.channel(publisher_confirms=True)
        await pub.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        t0 = time.perf_counter()
        for start in range(0, n, WINDOW):
            await asyncio.gather(*(pub.default_exchange.publish(
                aio_pika.Message(json.dumps(body(i)).encode(), message_id=uuid.uuid4().hex,
                                 content_type="application/json", headers={"key": f"k{i}"},
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=name, mandatory=True) for i in range(start, min(n, start + WINDOW))))
        t_pub = time.perf_counter() - t0

        cons = await conn.channel()
        await cons.set_qos(prefetch_count=PREFETCH)
        queue = await cons.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        done = asyncio.Event()
        count = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count
            json.loads(message.body)
            await message.ack()
            count += 1
            if count == n:
                done.set()

        t0 = time.perf_counter()
        tag = await queue.consume(on_message)
        await done.wait()
        t_cons = time.perf_counter() - t0
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await conn.close()
    return t_pub, t_cons


async def through_bus(bus: object, n: int, queue: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    for start in range(0, n, WINDOW):
        await asyncio.gather(*(bus.publish(Message(queue=queue, body=body(i), key=f"k{i}"))  # type: ignore[attr-defined]
                               for i in range(start, min(n, start + WINDOW))))
    t_pub = time.perf_counter() - t0
    done = asyncio.Event()
    count = 0

    async def handler(message: Message) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    t0 = time.perf_counter()
    consumer = await bus.consume(queue, handler, prefetch=PREFETCH)  # type: ignore[attr-defined]
    await done.wait()
    while await bus.pending(queue):  # type: ignore[attr-defined]  # the last acks
        await asyncio.sleep(0.005)
    t_cons = time.perf_counter() - t0
    await consumer.stop()
    return t_pub, t_cons


async def rabbit_bus(url: str, n: int) -> tuple[float, float]:
    bus = RabbitMQBus(url, prefix=f"bench{uuid.uuid4().hex[:8]}")
    await bus.start()
    try:
        return await through_bus(bus, n, "steps")
    finally:
        await bus.close()
        await bus.delete_queues()


async def embedded_bus(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.sqlite3")
        await store.open()
        await store.migrate()
        bus = EmbeddedBus(store)
        await bus.start()
        try:
            return await through_bus(bus, n, "steps")
        finally:
            await bus.close()
            await store.close()


async def measure(run: Callable[[str, int], Awaitable[tuple[float, float]]], url: str, n: int
                  ) -> tuple[float, float]:
    """One run; run it again if someone closed the broker's connections meanwhile (shared broker)."""
    for _ in range(3):
        try:
            return await run(url, n)
        except CONNECTION_EXCEPTIONS as exc:
            print(f"  (run disturbed by {type(exc).__name__}: {exc}; running it again)")
    raise SystemExit("the broker kept closing the connections: no figures")


def line(name: str, n: int, times: tuple[float, float]) -> float:
    t_pub, t_cons = times
    rate = n / (t_pub + t_cons)
    print(f"{name:<22} publish {n / t_pub:>9,.0f} msg/s   consume {n / t_cons:>9,.0f} msg/s   "
          f"publish+consume {rate:>9,.0f} msg/s")
    return rate


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    url = sys.argv[2] if len(sys.argv) > 2 else "amqp://guest:guest@127.0.0.1:5672/"
    print(f"{n:,} messages, prefetch {PREFETCH}, publish window {WINDOW}, quorum queues, persistent, confirms")
    await measure(raw_aiopika, url, min(n, 2000))  # warm-up (connections, broker caches)
    raw, bus = [], []
    for _ in range(ROUNDS):  # alternate, to spread machine and broker noise over both
        raw.append(line("raw aio-pika", n, await measure(raw_aiopika, url, n)))
        bus.append(line("RabbitMQBus", n, await measure(rabbit_bus, url, n)))
    ratio = max(bus) / max(raw)
    print(f"RabbitMQBus / raw aio-pika (best of {ROUNDS} each): {ratio:.2f}  (target >= 0.70: "
          f"{'ok' if ratio >= 0.7 else 'MISSED'})")
    line("EmbeddedBus (SQLite)", n, await embedded_bus(n))


if __name__ == "__main__":
    asyncio.run(main())
