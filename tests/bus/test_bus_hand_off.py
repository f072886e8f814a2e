"""Hand-off (``Bus.hand_off``): a message published by a handler, or while the consumer has room, goes
straight to a handler of this process once the transaction commits, still durable and leased.

Embedded bus on SQLite and on PostgreSQL; RabbitMQ never hands off.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from flowbus.bus.base import Message
from tests.bus.test_bus_contract import msg, wait_until

if TYPE_CHECKING:
    from tests.bus.conftest import BusEnv  # the env fixture's type

embedded_only = pytest.mark.parametrize("env", ["embedded", "embedded-postgres"], indirect=True)


async def _lease_owner(store: Any, message_id: str) -> tuple[str | None, int] | None:
    async with store.transaction() as tx:
        row = await tx.fetchrow("SELECT lease_owner, deliveries FROM bus_messages WHERE id = $1", message_id)
    return None if row is None else (row["lease_owner"], int(row["deliveries"]))


@embedded_only
async def test_a_handler_hands_its_successor_over_with_the_publishers_attachment(env: BusEnv) -> None:
    bus = await env.open()
    store = env.stores[0]
    attachment = object()
    seen: list[Message] = []
    leased: list[Any] = []
    read = asyncio.Event()  # the successor's handler waits until its lease was read: acked, its row is gone

    async def handler(m: Message) -> None:
        seen.append(m)
        if m.body["n"] == 1:
            await read.wait()
        if m.body["n"] == 0:
            async with store.transaction() as tx:
                slot = bus.hand_off("q", tx)
                assert slot is not None, "a handler's successor is always handed off"
                successor = Message(queue="q", body={"n": 1}, key="k1", local=attachment)
                await bus.publish(successor, tx=tx, hand_off=slot)
                second = bus.hand_off("q", tx)  # its place is given; prefetch 1 leaves no room
                assert second is None
                await bus.publish(Message(queue="q", body={"n": 2}, key="k2", local=attachment), tx=tx)
            leased.append(await _lease_owner(store, successor.id))
            read.set()

    consumer = await bus.consume("q", handler, prefetch=1)
    await bus.publish(msg(0))
    await wait_until(lambda: len(seen) == 3, 10, "three messages")
    by_n = {m.body["n"]: m for m in seen}
    assert by_n[1].local is attachment, "the handed-off message is the object published"
    assert by_n[1].deliveries == 1
    assert by_n[2].local is None, "a message that went through the queue carries no attachment"
    assert by_n[0].local is None
    assert leased == [(consumer.owner, 1)], "durable, and leased to the consumer before its handler ran"
    await wait_until(lambda: _zero(bus.pending("q")), 10, "every message acked")


async def _zero(pending: Any) -> bool:
    return await pending == 0


@embedded_only
async def test_a_rolled_back_hand_off_delivers_nothing_and_frees_its_slot(env: BusEnv) -> None:
    bus = await env.open()
    store = env.stores[0]
    seen: list[Message] = []

    async def handler(m: Message) -> None:
        seen.append(m)

    consumer = await bus.consume("q", handler, prefetch=1)
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            slot = bus.hand_off("q", tx)
            assert slot is not None, "an idle consumer has room"
            assert bus.hand_off("q", tx) is None, "its only slot is promised"
            await bus.publish(Message(queue="q", body={"n": 1}, key="k1"), tx=tx, hand_off=slot)
            raise RuntimeError("roll back")
    assert consumer.reserved == 0
    async with store.transaction() as tx:
        slot = bus.hand_off("q", tx)
        assert slot is not None, "the slot of the rolled-back transaction is free again"
        await bus.publish(Message(queue="q", body={"n": 2}, key="k2"), tx=tx, hand_off=slot)
    await wait_until(lambda: len(seen) == 1, 10, "the committed message")
    await asyncio.sleep(0.1)
    assert [m.body["n"] for m in seen] == [2]


@embedded_only
async def test_a_delayed_message_is_never_handed_off(env: BusEnv) -> None:
    bus = await env.open()
    store = env.stores[0]
    seen: list[tuple[float, Message]] = []
    loop = asyncio.get_running_loop()

    async def handler(m: Message) -> None:
        seen.append((loop.time(), m))

    await bus.consume("q", handler, prefetch=4)
    start = loop.time()
    async with store.transaction() as tx:
        slot = bus.hand_off("q", tx)
        await bus.publish(Message(queue="q", body={"n": 1}, key="k1", local="x"), tx=tx, hand_off=slot,
                          delay=timedelta(milliseconds=300))
    await wait_until(lambda: len(seen) == 1, 10, "the delayed message")
    at, m = seen[0]
    assert at - start >= 0.29 and m.local is None


@embedded_only
async def test_a_handed_off_message_whose_process_died_comes_back_from_its_row(env: BusEnv) -> None:
    """The process dies after the commit, in the middle of the handler: nothing releases the lease;
    once it runs out, another process's consumer gets the message from its row."""
    bus = await env.open()
    store = env.stores[0]
    started = asyncio.Event()

    async def stuck(m: Message) -> None:
        started.set()
        await asyncio.sleep(3600)

    first = await bus.consume("q", stuck, prefetch=1)
    handed = Message(queue="q", body={"n": 1}, key="k1", local="attachment")
    async with store.transaction() as tx:
        await bus.publish(handed, tx=tx, hand_off=bus.hand_off("q", tx))
    await asyncio.wait_for(started.wait(), 5)
    # the process dies: its tasks stop, no lease renewed, nothing released
    bus._consumers.remove(first)
    for task in [first._loop, first._renewer, *first._held.values()]:
        task.cancel()
    other = await env.open()  # another process on the same database
    got: list[Message] = []

    async def handler(m: Message) -> None:
        got.append(m)

    await other.consume("q", handler)
    await wait_until(lambda: len(got) == 1, 10, "the message, once its lease ran out")
    assert got[0].id == handed.id and got[0].local is None and got[0].deliveries == 2


@embedded_only
async def test_a_hand_off_committed_after_its_consumer_stopped_goes_back_to_the_queue(env: BusEnv) -> None:
    bus = await env.open()
    store = env.stores[0]

    async def handler(m: Message) -> None:
        raise AssertionError("the stopped consumer must not handle it")

    consumer = await bus.consume("q", handler)
    in_tx, leave = asyncio.Event(), asyncio.Event()

    async def publisher() -> None:
        async with store.transaction() as tx:
            await bus.publish(Message(queue="q", body={"n": 1}, key="k1"), tx=tx, hand_off=bus.hand_off("q", tx))
            in_tx.set()
            await leave.wait()

    task = asyncio.ensure_future(publisher())
    await asyncio.wait_for(in_tx.wait(), 5)
    await consumer.stop()
    leave.set()
    await task
    got: list[Message] = []

    async def second(m: Message) -> None:
        got.append(m)

    await bus.consume("q", second)  # well before the 1 s lease runs out
    await wait_until(lambda: len(got) == 1, 0.8, "the message released by the stopped consumer")


@pytest.mark.parametrize("env", ["rabbitmq"], indirect=True)
async def test_rabbitmq_never_hands_off(env: BusEnv) -> None:
    bus = await env.open()
    store = await env.store()
    got: list[Message] = []

    async def handler(m: Message) -> None:
        got.append(m)

    await bus.consume("q", handler)
    async with store.transaction() as tx:
        slot = bus.hand_off("q", tx)
        assert slot is None
        await bus.publish(Message(queue="q", body={"n": 1}, key="k1", local="x"), tx=tx, hand_off=slot)
    await wait_until(lambda: len(got) == 1, 10, "the message, through the broker")
    assert got[0].local is None
