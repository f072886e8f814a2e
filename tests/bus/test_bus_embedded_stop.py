"""Stopping an embedded consumer always stops it, whatever arrives in the same loop turn.

Regression: Python 3.11's ``asyncio.wait_for`` returns the awaited result and drops a cancellation
that arrives in the loop turn where the awaited thing completes (fixed in 3.12).  The consumer
slept in ``wait_for(event.wait())``; a handler finishing (which sets the event) as the engine
stopped left the consumer task cancelled-but-running, and ``Runtime.close()`` waited for it forever.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from flowbus.bus.base import Message
from flowbus.bus.embedded import EmbeddedBus
from flowbus.store.sqlite import SQLiteStore


async def _idle_consumer(tmp_path: Path) -> tuple[SQLiteStore, EmbeddedBus, object]:
    store = SQLiteStore(tmp_path / "bus.sqlite3")
    await store.migrate()
    bus = EmbeddedBus(store, idle_poll=30.0)  # asleep far longer than the stop may take
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.id)

    consumer = await bus.consume("q", handler)
    await bus.publish(Message(queue="q", body={"n": 1}, key="k"))
    for _ in range(200):  # handled, then idle: asleep until a wake-up or the idle poll
        if seen:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert seen
    return store, bus, consumer


async def _finishes(stopping: Any, consumer: Any) -> None:
    """``stopping`` returns well before the consumer's 30 s idle poll, with the consumer's task ended."""
    task = asyncio.ensure_future(stopping)
    done, _ = await asyncio.wait([task], timeout=3)
    if not done:  # the consumer went on running: end it the hard way so that the test can clean up
        consumer._loop.cancel()
        await asyncio.wait([task], timeout=40)
    assert done, "stopping the consumer did not return: its task ignored the cancellation"
    assert consumer._loop.done() and consumer._loop.cancelled()


async def test_stop_in_the_same_turn_as_a_wake_up_stops_the_consumer(tmp_path: Path) -> None:
    store, bus, consumer = await _idle_consumer(tmp_path)
    consumer.wake()  # e.g. a handler finishing just as the engine stops
    await _finishes(consumer.stop(), consumer)
    await bus.close()
    await store.close()


async def test_bus_close_in_the_same_turn_as_a_publish_wake_up(tmp_path: Path) -> None:
    store, bus, consumer = await _idle_consumer(tmp_path)
    bus._wake(["q"])
    await _finishes(bus.close(), consumer)
    await store.close()
