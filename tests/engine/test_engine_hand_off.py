"""Steps handed off to a worker of the same process (embedded bus): the transaction that enters a step
claims it for its message, and the worker calls the connector without a claim or a read of its own.
A worker that dies in the middle of a handed-off step leaves it to be run again, with the same
idempotency key, once the lease runs out."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from flowbus import documents, journal
from flowbus.api.entities import create_entity
from flowbus.connectors.testing import calls_for, read_effect_log
from flowbus.flows.runner import Claim, Engine
from tests.engine.test_engine_crash import STEPS, crash_config


@pytest.fixture
def handled(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """How many step messages reached the engine already claimed (``handed``) or through the queue (``queued``)."""
    seen: Counter = Counter()
    handle = Engine.handle

    async def spy_handle(self: Engine, msg: Any) -> None:
        seen["handed" if isinstance(msg.local, Claim) else "queued"] += 1
        await handle(self, msg)

    monkeypatch.setattr(Engine, "handle", spy_handle)
    return seen


@pytest.fixture
def claims(returns_of: Any) -> list[Any]:
    """The usual claims a worker made itself (one conditional UPDATE each), in call order."""
    return returns_of(Engine, "_claim")


@pytest.fixture
def checked(returns_of: Any) -> list[Any]:
    """The checked claims (a stale, duplicate or unclaimable message)."""
    return returns_of(Engine, "_claim_checked")


async def _started(rt: Any, n: int, flow: str = "four") -> list[str]:
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    ids = []
    for i in range(n):
        doc = await documents.create_document(rt, entity_id=ent.id, flow_id=flow, fields={"title": f"d{i}"},
                                              actor="test")
        await documents.run_action(rt, doc.id, "start", actor="test")
        ids.append(doc.id)
    return ids


async def test_steps_run_without_a_claim_of_their_own_when_handed_off(backend, runtime_factory, engine_config,
                                                                     wait_state, handled, claims, checked) -> None:
    rt = await runtime_factory(backend, workers=False, config_dir=engine_config)
    await rt.engine.start_workers()  # after the spies: the consumer takes Engine.handle as it is now
    ids = await _started(rt, 5)
    for doc_id in ids:
        await wait_state(rt, doc_id, "done")
    counter = calls_for(rt)
    assert all(counter.count(f"{d}:{s}") == 1 for d in ids for s in ("one", "two", "three", "four"))
    async with rt.store.transaction() as tx:
        states = Counter(r["status"] for r in await tx.fetch("SELECT status FROM step_states"))
        left = await tx.fetchval("SELECT COUNT(*) FROM bus_messages") if rt.bus.publishes_in_store else 0
        entity = (await tx.fetchrow("SELECT entity_id FROM documents WHERE id = $1", ids[0]))["entity_id"]
        assert await journal.verify(tx, entity) == []
    assert states == {"done": 20} and left == 0
    assert checked == []
    if backend == "embedded":  # the start and every step hand the next step over: nothing claimed by a worker
        assert handled == {"handed": 20} and claims == []
    else:  # RabbitMQ: every step run comes through the broker and is claimed by its worker
        assert handled == {"queued": 20} and len(claims) == 20


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_a_worker_dying_in_a_handed_off_step_leaves_it_to_run_again_once(backend, runtime_factory, tmp_path,
                                                                               wait_state, handled, claims) -> None:
    log = tmp_path / "effects.log"
    cfg = crash_config(tmp_path, log, delay=1.0)  # every call lasts 1 s after its effect
    rt = await runtime_factory(backend, workers=False, config_dir=cfg, bus_lease_seconds=1)
    await rt.engine.start_workers()
    [doc_id] = await _started(rt, 1, flow="crashy")
    for _ in range(500):  # the second step's effect is done, its call not yet
        if any(e["step"] == "two" for e in read_effect_log(log)):
            break
        await asyncio.sleep(0.02)
    assert handled == {"handed": 2}, "the start and the first step handed their next step over"
    async with rt.store.transaction() as tx:
        claimed = await tx.fetchrow("SELECT s.status, s.claim, m.lease_owner FROM step_states s JOIN bus_messages m "
                                    "ON m.id = s.claim WHERE s.document_id = $1 AND s.step = 'two'", doc_id)
    assert claimed is not None and claimed["status"] == "running" and claimed["lease_owner"]
    # the process dies: its tasks end, no lease is renewed, nothing is released
    consumer, rt.engine._consumer = rt.engine._consumer, None
    rt.bus._consumers.remove(consumer)
    for task in [consumer._loop, consumer._renewer, *consumer._held.values()]:
        task.cancel()
    # the restarted worker: the second step's message comes back once its lease has run out
    await rt.engine.start_workers()
    doc = await wait_state(rt, doc_id, ("done", "error"), timeout=60)
    assert doc.state == "done"
    ops = {step: [e["op"] for e in read_effect_log(log) if e["step"] == step] for step in STEPS}
    assert ops == {"one": ["start"], "two": ["start", "replay"], "three": ["start"], "four": ["start"]}, \
        "one effect per step; the step run again saw its own key"
    assert len({e["key"] for e in read_effect_log(log) if e["step"] == "two"}) == 1
    assert len(claims) == 1, "the message from its row is claimed again: same message, same claim"
    assert handled == {"handed": 4, "queued": 1}


async def test_embedded_bus_on_postgresql_hands_off_the_first_steps(runtime_factory, engine_config, pg_database,
                                                                   wait_state, handled, claims) -> None:
    """The embedded bus over PostgreSQL: a start hands its first step off (claimed by the start's
    statement on PostgreSQL); the steps after it are recorded by the general path, which reads the
    document without its files and so publishes through the queue."""
    rt = await runtime_factory("embedded", workers=False, config_dir=engine_config, database_url=pg_database)
    assert rt.store.dialect == "postgres" and rt.bus.publishes_in_store
    await rt.engine.start_workers()
    ids = await _started(rt, 3)
    for doc_id in ids:
        await wait_state(rt, doc_id, "done")
    counter = calls_for(rt)
    assert all(counter.count(f"{d}:{s}") == 1 for d in ids for s in ("one", "two", "three", "four"))
    assert handled == {"handed": 3, "queued": 9} and len(claims) == 9
