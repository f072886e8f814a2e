"""Steps handed off to a worker of the same process (embedded bus): the transaction that enters a step
claims it for its message, and the worker calls the connector without a claim or a read of its own.
A worker that dies in the middle of a handed-off step leaves it to be run again, with the same
idempotency key, once the lease runs out."""

from __future__ import annotations

import asyncio
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flowbus import documents, journal
from flowbus.api.entities import create_entity
from flowbus.connectors.testing import calls_for, read_effect_log
from flowbus.flows.runner import Claim, Engine


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """How many step runs were claimed by the worker (``claim``, ``checked``) and how many arrived
    already claimed (``handed``)."""
    seen: Counter = Counter()
    claim, checked, handle = Engine._claim, Engine._claim_checked, Engine.handle

    async def spy_claim(self: Engine, *args: Any) -> Any:
        seen["claim"] += 1
        return await claim(self, *args)

    async def spy_checked(self: Engine, *args: Any) -> Any:
        seen["checked"] += 1
        return await checked(self, *args)

    async def spy_handle(self: Engine, msg: Any) -> None:
        seen["handed" if isinstance(msg.local, Claim) else "queued"] += 1
        await handle(self, msg)

    monkeypatch.setattr(Engine, "_claim", spy_claim)
    monkeypatch.setattr(Engine, "_claim_checked", spy_checked)
    monkeypatch.setattr(Engine, "handle", spy_handle)
    return seen


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
                                                                     wait_state, spied) -> None:
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
    if backend == "embedded":  # the start and every step hand the next step over: nothing claimed by a worker
        assert spied == {"handed": 20}
    else:  # RabbitMQ: every step run comes through the broker and is claimed by its worker
        assert spied["claim"] == 20 and spied["handed"] == 0


def _crash_config(tmp_path: Path, log: Path) -> Path:
    cfg = tmp_path / "handoff-config"
    (cfg / "flows").mkdir(parents=True)
    (cfg / "connectors").mkdir()
    (cfg / "connectors" / "c.yml").write_text(
        "instances:\n"
        f"  - {{id: quick, family: notify, kind: test, entity: null, settings: {{log_path: '{log}'}}}}\n"
        f"  - {{id: slow, family: notify, kind: test, entity: null, settings: {{log_path: '{log}', delay: 3}}}}\n")
    (cfg / "flows" / "two.yml").write_text(textwrap.dedent("""\
        id: two
        label: "Deux étapes"
        description: "La seconde dure"
        fields:
          - {name: title, type: text, label: "Titre"}
        steps:
          - {id: first, label: "Première", family: notify, connector: quick}
          - {id: second, label: "Seconde", family: notify, connector: slow}
        """))
    return cfg


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_a_worker_dying_in_a_handed_off_step_leaves_it_to_run_again_once(backend, runtime_factory, tmp_path,
                                                                               wait_state, spied) -> None:
    log = tmp_path / "effects.log"
    rt = await runtime_factory(backend, workers=False, config_dir=_crash_config(tmp_path, log), bus_lease_seconds=1)
    await rt.engine.start_workers()
    [doc_id] = await _started(rt, 1, flow="two")
    for _ in range(500):  # the second step's effect is done; its call lasts 3 s more
        if any(e["step"] == "second" for e in read_effect_log(log)):
            break
        await asyncio.sleep(0.02)
    assert spied["handed"] == 2, "both steps were handed off"
    async with rt.store.transaction() as tx:
        claimed = await tx.fetchrow("SELECT s.status, s.claim, m.lease_owner FROM step_states s JOIN bus_messages m "
                                    "ON m.id = s.claim WHERE s.document_id = $1 AND s.step = 'second'", doc_id)
    assert claimed is not None and claimed["status"] == "running" and claimed["lease_owner"]
    # the process dies: its tasks end, no lease is renewed, nothing is released
    consumer, rt.engine._consumer = rt.engine._consumer, None
    rt.bus._consumers.remove(consumer)
    for task in [consumer._loop, consumer._renewer, *consumer._held.values()]:
        task.cancel()
    # the restarted worker: the second step's message comes back once its lease has run out
    await rt.engine.start_workers()
    doc = await wait_state(rt, doc_id, ("done", "error"), timeout=60)
    entries = [e for e in read_effect_log(log) if e["step"] == "second"]
    assert [e["op"] for e in entries] == ["start", "replay"], "one effect, then the same key seen again"
    assert len({e["key"] for e in entries}) == 1
    assert doc.state == "done"
    assert spied["claim"] == 1, "the message from its row is claimed again: same message, same claim"


async def test_embedded_bus_on_postgresql_hands_off_the_first_steps(runtime_factory, engine_config, pg_database,
                                                                   wait_state, spied) -> None:
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
    assert spied["handed"] == 3 and spied["claim"] == 9
