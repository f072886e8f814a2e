"""Two processes share the work on PostgreSQL + RabbitMQ, as ``flowbus serve --role api`` and
``--role worker`` do: documents started through one runtime, their steps run by the workers of both,
on the same entities' journal chains.  Each runtime has its own pool and in-process locks, like a
separate process.  Every document must end, every step run once, and
each entity's chain stay whole (the short record chains after the head row it locks, wherever the
other process left it)."""

from __future__ import annotations

import asyncio

from flowbus import documents, journal
from flowbus.api.entities import create_entity
from flowbus.connectors.testing import calls_for

DOCUMENTS = 60


async def test_two_processes_share_the_steps_and_the_chains(runtime_factory, engine_config,
                                                            short_statements) -> None:
    api = await runtime_factory("scaleout", config_dir=engine_config, workers=True)
    other = await runtime_factory("scaleout", config_dir=engine_config, workers=True,
                                  bus_prefix=api.settings.bus_prefix, s3_bucket=api.settings.s3_bucket)
    assert other.store is not api.store
    entities = [await create_entity(api, name=f"Commune {i}", siren=None, parent=None, actor_name="test")
                for i in range(2)]
    ids = []
    for i in range(DOCUMENTS):
        doc = await documents.create_document(api, entity_id=entities[i % 2].id, flow_id="four",
                                              fields={"title": f"d{i}"}, actor="test")
        ids.append(doc.id)
    await asyncio.gather(*(documents.run_action(api, d, "start", actor="test") for d in ids))
    async with asyncio.timeout(60):
        while True:
            states = [(await documents.get_document(api, d)).state for d in ids]
            if all(s == "done" for s in states):
                break
            assert "error" not in states
            await asyncio.sleep(0.1)
    # both processes ran steps
    assert api.engine.stats["steps"] > 0 and other.engine.stats["steps"] > 0
    assert api.engine.stats["steps"] + other.engine.stats["steps"] == 4 * DOCUMENTS
    # every record short, one statement each, whichever process moved the head last
    assert len(short_statements) == 4 * DOCUMENTS and None not in short_statements
    async with api.store.transaction() as tx:
        for ent in entities:
            assert await journal.verify(tx, ent.id) == []
        for doc_id in ids:
            kinds = [e.kind for e in await journal.for_document(tx, doc_id)]
            assert kinds.count("step.done") == 4 and kinds.count("state.changed") == 2
    # every step's outside effect once, in one process or the other
    effects = calls_for(api).by_key() + calls_for(other).by_key()
    assert sorted(effects) == sorted(f"{d}:{step}:1" for d in ids for step in ("one", "two", "three", "four"))
    assert set(effects.values()) == {1}
