"""State store on both backends: migrations, concurrent updates lose nothing, journal chain tamper detection."""

from __future__ import annotations

import asyncio

import pytest

from flowbus import documents, journal
from flowbus.api.entities import create_entity
from flowbus.errors import Conflict
from flowbus.store import repo


async def test_migrations_are_idempotent(runtime):
    assert await runtime.store.migrate() == []
    async with runtime.store.transaction() as tx:
        names = [r["name"] for r in await tx.fetch("SELECT name FROM schema_migrations ORDER BY name")]
    assert names[0] == "001_core.sql"


async def test_concurrent_updates_never_lose_a_write(runtime):
    ent = await create_entity(runtime, name="Concurrence", siren=None, parent=None, actor_name="test")
    doc = await documents.create_document(runtime, entity_id=ent.id, flow_id="demo", fields={"title": "t0"},
                                          actor="test")
    # two writers racing on the same document many times, each changing a different field
    flow_fields = {f.name for f in runtime.flow("demo").fields}
    assert "title" in flow_fields

    async def writer(n: int) -> None:
        await documents.update_fields(runtime, doc.id, {"title": f"t{n}"}, actor=f"w{n}")

    await asyncio.gather(*(writer(i) for i in range(1, 21)))
    final = await documents.get_document(runtime, doc.id)
    assert final.version == 21  # 1 (created) + 20 updates, none lost
    async with runtime.store.transaction() as tx:
        changes = [e for e in await journal.for_document(tx, doc.id) if e.kind == "fields.changed"]
    assert len(changes) == 20


async def test_stale_version_is_a_conflict(runtime):
    ent = await create_entity(runtime, name="Version", siren=None, parent=None, actor_name="test")
    doc = await documents.create_document(runtime, entity_id=ent.id, flow_id="demo", fields={"title": "a"},
                                          actor="test")
    await documents.update_fields(runtime, doc.id, {"title": "b"}, actor="x", expected_version=1)
    with pytest.raises(Conflict) as err:
        await documents.update_fields(runtime, doc.id, {"title": "c"}, actor="y", expected_version=1)
    assert err.value.expected_version == 1
    assert (await documents.get_document(runtime, doc.id)).fields["title"] == "b"


async def _chain(runtime, name):
    ent = await create_entity(runtime, name=name, siren=None, parent=None, actor_name="test")
    for i in range(4):
        await documents.create_document(runtime, entity_id=ent.id, flow_id="demo", fields={"title": f"d{i}"},
                                        actor="test")
    async with runtime.store.transaction() as tx:
        assert await journal.verify(tx, ent.id) == []
    return ent.id


async def test_journal_detects_a_modified_entry(runtime):
    eid = await _chain(runtime, "Modif")
    async with runtime.store.transaction() as tx:
        await tx.execute("UPDATE journal SET actor = 'mallory' WHERE entity_id = $1 AND seq = 3", eid)
        breaks = await journal.verify(tx, eid)
    assert [(b.seq, "modified" in b.problem) for b in breaks] == [(3, True)]


async def test_journal_detects_a_deleted_entry(runtime):
    eid = await _chain(runtime, "Suppr")
    async with runtime.store.transaction() as tx:
        await tx.execute("DELETE FROM journal WHERE entity_id = $1 AND seq = 2", eid)
        breaks = await journal.verify(tx, eid)
    assert breaks and breaks[0].seq == 2 and "missing" in breaks[0].problem


async def test_journal_detects_a_deleted_last_entry(runtime):
    eid = await _chain(runtime, "Fin")
    async with runtime.store.transaction() as tx:
        last = await tx.fetchval("SELECT MAX(seq) FROM journal WHERE entity_id = $1", eid)
        await tx.execute("DELETE FROM journal WHERE entity_id = $1 AND seq = $2", eid, last)
        breaks = await journal.verify(tx, eid)
    assert breaks and breaks[0].seq == last and "missing" in breaks[0].problem


async def test_journal_detects_an_inserted_entry(runtime):
    eid = await _chain(runtime, "Insert")
    async with runtime.store.transaction() as tx:
        # shift entries 3.. up by one and forge an entry #3 with a correct-looking own hash
        rows = await tx.fetch("SELECT * FROM journal WHERE entity_id = $1 AND seq >= 3 ORDER BY seq DESC", eid)
        for r in rows:
            await tx.execute("UPDATE journal SET seq = $3 WHERE entity_id = $1 AND seq = $2", eid, r["seq"],
                             r["seq"] + 1)
        prev = await tx.fetchrow("SELECT hash FROM journal WHERE entity_id = $1 AND seq = 2", eid)
        forged = journal.entry_hash(eid, 3, "2026-01-01T00:00:00.000000Z", "mallory", "document.created", None,
                                    "{}", prev["hash"])
        await tx.execute("INSERT INTO journal (entity_id, seq, at, actor, kind, document_id, data, prev_hash, hash) "
                         "VALUES ($1, 3, '2026-01-01T00:00:00.000000Z', 'mallory', 'document.created', NULL, '{}', "
                         "$2, $3)", eid, prev["hash"], forged)
        breaks = await journal.verify(tx, eid)
    assert breaks, "an inserted entry must break the chain"
    assert breaks[0].seq == 4  # the genuine entry after the forged one no longer follows its predecessor


async def test_entity_ancestors(runtime):
    root = await create_entity(runtime, name="Syndicat", siren=None, parent=None, actor_name="t")
    child = await create_entity(runtime, name="Commune", siren=None, parent=root.id, actor_name="t")
    async with runtime.store.transaction() as tx:
        assert await repo.ancestors(tx, child.id) == [child.id, root.id]
