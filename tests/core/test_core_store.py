"""State store on both backends: migrations, concurrent updates lose nothing, journal chain tamper detection."""

from __future__ import annotations

import asyncio
import json

import pytest

from flowbus import documents, journal
from flowbus.api.entities import create_entity
from flowbus.clock import utcnow
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


def _second_store(runtime):
    """Another store on the same database, as another process (API, second worker) would have."""
    if runtime.store.dialect == "postgres":
        from flowbus.store.postgres import PostgresStore
        return PostgresStore(runtime.store.dsn)
    from flowbus.store.sqlite import SQLiteStore
    return SQLiteStore(runtime.store.path)


async def _append(store, entity_id: str, n: int, actor: str) -> None:
    async with store.transaction() as tx:
        for i in range(n):
            await journal.append(tx, entity_id=entity_id, actor=actor, kind="test.entry", at=utcnow(),
                                 data={"i": i})


async def test_journal_chain_stays_whole_when_two_processes_append(runtime):
    """Interleaved and concurrent appends from two stores on one database keep one unbroken chain
    (PostgreSQL chains after the head row it locks; SQLite writes after the remembered head only if
    it is still the head, and reads it again otherwise)."""
    eid = await _chain(runtime, "Deux processus")
    other = _second_store(runtime)
    await other.open()
    try:
        for round_ in range(10):  # strictly alternating: each store's remembered head is stale every time
            await _append(runtime.store, eid, 1 + round_ % 3, "a")
            await _append(other, eid, 2, "b")
        await asyncio.gather(*(_append(store, eid, 2, actor) for _ in range(10)
                               for store, actor in ((runtime.store, "a"), (other, "b"))))
    finally:
        await other.close()
    async with runtime.store.transaction() as tx:
        assert await journal.verify(tx, eid) == []
        kinds = [r["actor"] for r in await tx.fetch("SELECT actor FROM journal WHERE entity_id = $1 AND "
                                                     "kind = 'test.entry'", eid)]
    assert kinds.count("a") == sum(1 + r % 3 for r in range(10)) + 20 and kinds.count("b") == 20 + 20
    if runtime.store.dialect == "sqlite":  # it remembers the head it wrote last (PostgreSQL needs no hint)
        assert eid in runtime.store.hints["journal_heads"]


async def test_journal_many_entries_in_one_transaction(runtime):
    """More entries than one statement chains (PostgreSQL: 50 per statement; SQLite: 100 rows per INSERT)."""
    eid = await _chain(runtime, "Lot")
    async with runtime.store.transaction() as tx:
        before = await tx.fetchval("SELECT seq FROM journal_heads WHERE entity_id = $1", eid)
    await _append(runtime.store, eid, 130, "a")
    async with runtime.store.transaction() as tx:
        assert await journal.verify(tx, eid) == []
        assert await tx.fetchval("SELECT seq FROM journal_heads WHERE entity_id = $1", eid) == before + 130
        data = [json.loads(r["data"])["i"] for r in await tx.fetch(
            "SELECT data FROM journal WHERE entity_id = $1 AND kind = 'test.entry' ORDER BY seq", eid)]
    assert data == list(range(130))


async def test_journal_never_trusts_a_wrong_remembered_head(runtime_factory):
    """SQLite writes after the head it remembers only if it still is the head (PostgreSQL needs no hint)."""
    runtime = await runtime_factory("embedded")
    eid = await _chain(runtime, "Tête fausse")
    seq, _hash = runtime.store.hints["journal_heads"][eid]
    for wrong in ((seq, "f" * 64), (seq - 1, _hash), (seq + 5, _hash)):
        runtime.store.hints["journal_heads"][eid] = wrong
        await _append(runtime.store, eid, 2, "a")
    async with runtime.store.transaction() as tx:
        assert await journal.verify(tx, eid) == []
        assert await tx.fetchval("SELECT seq FROM journal_heads WHERE entity_id = $1", eid) == seq + 6


async def test_on_end_runs_after_commit_and_after_rollback(runtime):
    ended: list[str] = []
    async with runtime.store.transaction() as tx:
        tx.on_end(lambda: ended.append("committed"))
        tx.after_commit(lambda: ended.append("after-commit"))
        await tx.fetchval("SELECT 1")
    with pytest.raises(RuntimeError):
        async with runtime.store.transaction() as tx:
            tx.on_end(lambda: ended.append("rolled back"))
            tx.after_commit(lambda: ended.append("never"))
            raise RuntimeError("boom")
    async with runtime.store.statements() as tx:
        tx.on_end(lambda: ended.append("statements"))
    assert ended == ["committed", "after-commit", "rolled back", "statements"]


async def test_statements_keep_what_they_wrote_when_their_block_fails(runtime):
    """statements(): each statement stands alone (autocommit on PostgreSQL; on SQLite no savepoint in the
    group commit), so a failure later in the block does not undo an earlier write, as a transaction would."""
    ent = await create_entity(runtime, name="Autocommit", siren=None, parent=None, actor_name="test")
    other = await create_entity(runtime, name="Autre", siren=None, parent=None, actor_name="test")

    async def failing(name: str) -> None:
        async with runtime.store.statements() as tx:
            await tx.execute("UPDATE entities SET name = $2 WHERE id = $1", ent.id, name)
            raise RuntimeError("later failure")

    async def meanwhile() -> None:
        async with runtime.store.transaction() as tx:
            await tx.execute("UPDATE entities SET name = 'voisin' WHERE id = $1", other.id)

    with pytest.raises(RuntimeError):
        await failing("seul")  # alone (SQLite: the first of its group)
    async with runtime.store.transaction() as tx:
        assert await tx.fetchval("SELECT name FROM entities WHERE id = $1", ent.id) == "seul"
    results = await asyncio.gather(meanwhile(), failing("écrit"), return_exceptions=True)  # SQLite: one group
    assert results[0] is None and isinstance(results[1], RuntimeError)
    async with runtime.store.transaction() as tx:
        assert await tx.fetchval("SELECT name FROM entities WHERE id = $1", ent.id) == "écrit"
        assert await tx.fetchval("SELECT name FROM entities WHERE id = $1", other.id) == "voisin"
    with pytest.raises(RuntimeError):
        async with runtime.store.transaction() as tx:
            await tx.execute("UPDATE entities SET name = 'annulé' WHERE id = $1", ent.id)
            raise RuntimeError("rolled back")
    async with runtime.store.transaction() as tx:
        assert await tx.fetchval("SELECT name FROM entities WHERE id = $1", ent.id) == "écrit"
