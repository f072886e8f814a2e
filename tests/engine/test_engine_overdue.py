"""A waiting step whose next check message is lost (a broker that keeps an expired TTL message, a process that died
between its commit and its publish) is found by its due date and checked again — once: the lost message, should it
come back, does not start a second chain of checks."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.connectors.testing import calls_for


async def _lose_the_check(rt) -> int:
    """Take the waiting step's delayed check message out of the bus, as a broker losing it would."""
    if rt.settings.bus_url.startswith("amqp"):
        channel = await rt.bus._channel()
        lost = 0
        for name in [n for n in rt.bus._queues if ".delay." in n]:
            queue = await channel.get_queue(name, ensure=False)
            while (message := await queue.get(fail=False)) is not None:
                await message.ack()
                lost += 1
        return lost
    async with rt.store.transaction() as tx:
        return await tx.execute("DELETE FROM bus_messages WHERE queue = 'steps'")


async def test_a_lost_check_is_sent_again_once(backend, runtime_factory, engine_config, wait_state):
    rt = await runtime_factory(backend, config_dir=engine_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="waiting", fields={"title": "a"}, actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")
    await wait_state(rt, doc.id, "waiting", timeout=30)
    assert await _lose_the_check(rt) == 1
    await asyncio.sleep(1.5)  # its check was due after 1 s: nothing comes
    assert (await documents.get_document(rt, doc.id)).state == "waiting"
    assert calls_for(rt).count(op="check") == 0

    assert await rt.engine.resend_overdue(grace=timedelta(seconds=10)) == 0, "not overdue by the grace yet"
    assert await rt.engine.resend_overdue(grace=timedelta(0)) == 1
    assert await rt.engine.resend_overdue(grace=timedelta(0)) == 0, "its new due date is ahead"
    await wait_state(rt, doc.id, "done", timeout=30)  # slow-answer: done at the 2nd check
    assert calls_for(rt).count(op="check") == 2


async def test_a_stale_check_runs_but_starts_no_second_chain(runtime_factory, engine_config, wait_state):
    (engine_config / "connectors" / "slower.yml").write_text(
        "instances:\n  - {id: slower, family: tdt-actes, kind: test-wait, entity: null, settings: {checks: 4}}\n")
    (engine_config / "flows" / "lent.yml").write_text(
        "id: lent\nlabel: Lent\ndescription: Quatre vérifications\nfields:\n  - {name: title, type: text, label: T}\n"
        "steps:\n  - {id: tdt, label: TdT, family: tdt-actes, connector: slower, wait: {check_every: 1s, deadline: 1h}}\n")
    rt = await runtime_factory("embedded", config_dir=engine_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="lent", fields={"title": "a"}, actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")
    await wait_state(rt, doc.id, "waiting", timeout=30)
    async with rt.store.transaction() as tx:  # the check message is late, not lost
        await tx.execute("UPDATE bus_messages SET due_at = '9999-01-01T00:00:00+00:00' WHERE queue = 'steps'")
    assert await rt.engine.resend_overdue(grace=timedelta(seconds=-5)) == 1
    await _until(lambda: calls_for(rt).count(op="check") == 1)
    async with rt.store.transaction() as tx:  # the late one arrives after all, while the step still waits
        await tx.execute("UPDATE bus_messages SET due_at = '2000-01-01T00:00:00+00:00' WHERE queue = 'steps' "
                         "AND due_at > '9000'")
    await _until(lambda: calls_for(rt).count(op="check") >= 2)  # the late one and the chain's next may come together
    await asyncio.sleep(0.2)
    async with rt.store.transaction() as tx:
        queued = await tx.fetchval("SELECT COUNT(*) FROM bus_messages WHERE queue = 'steps'")
    assert queued == 1, "one chain of checks, not two"
    await wait_state(rt, doc.id, "done", timeout=30)
    assert calls_for(rt).count(op="check") == 4


async def _until(predicate, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")
