"""A document's journal is checked where its entries sit in the entity's chain — their content, their
predecessors' and successors' links, the head — reading a bounded number of rows whatever the size of
the entity's chain; tampering near them is named, on both backends and through the API."""

from __future__ import annotations

from typing import Any

from flowbus import documents, journal
from flowbus.api.entities import create_entity


class CountingTx:
    """A Tx that counts the rows its reads return (to show the check never reads the whole chain)."""

    def __init__(self, tx: Any) -> None:
        self._tx, self.rows_read, self.statements = tx, 0, []
        self.dialect, self.hints = tx.dialect, tx.hints

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        rows = await self._tx.fetch(sql, *args)
        self.rows_read += len(rows)
        self.statements.append(sql)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        row = await self._tx.fetchrow(sql, *args)
        self.rows_read += row is not None
        self.statements.append(sql)
        return row


async def _entity_with_documents(runtime, name: str, count: int) -> tuple[str, list[str]]:
    ent = await create_entity(runtime, name=name, siren=None, parent=None, actor_name="test")
    ids = []
    for i in range(count):
        doc = await documents.create_document(runtime, entity_id=ent.id, flow_id="demo",
                                              fields={"title": f"acte {i}"}, actor="test")
        await documents.update_fields(runtime, doc.id, {"title": f"acte {i} modifié"}, actor="test")
        ids.append(doc.id)
    return ent.id, ids


async def _check(runtime, document_id: str) -> tuple[list[journal.ChainBreak], CountingTx]:
    async with runtime.store.transaction() as tx:
        counting = CountingTx(tx)
        rows = await journal.document_rows(counting, document_id)
        breaks = await journal.verify_entries(counting, rows)
    return breaks, counting


async def test_document_journal_reads_do_not_grow_with_the_entity(runtime):
    eid, ids = await _entity_with_documents(runtime, "Grande commune", 60)
    async with runtime.store.transaction() as tx:
        assert await tx.fetchval("SELECT seq FROM journal_heads WHERE entity_id = $1", eid) >= 120
    for doc_id in (ids[0], ids[30], ids[-1]):
        breaks, counting = await _check(runtime, doc_id)
        assert breaks == []
        # the document's 2 entries, at most 2 neighbours each, the head: never the 120+ of the chain
        assert counting.rows_read <= 2 + 4 + 1, counting.rows_read
        assert all("document_id" in s or "seq IN" in s or "journal_heads" in s for s in counting.statements)


async def test_modified_entry_of_the_document_is_named(runtime):
    _eid, ids = await _entity_with_documents(runtime, "Modifiée", 5)
    async with runtime.store.transaction() as tx:
        await tx.execute("UPDATE journal SET actor = 'mallory' WHERE document_id = $1 AND kind = 'document.created'",
                         ids[2])
    breaks, _ = await _check(runtime, ids[2])
    assert [("modified" in b.problem) for b in breaks] == [True]
    assert (await _check(runtime, ids[1]))[0] == []  # another document's entries still check


async def test_rewritten_entry_with_a_recomputed_hash_is_caught_by_its_successor(runtime):
    eid, ids = await _entity_with_documents(runtime, "Réécrite", 5)
    async with runtime.store.transaction() as tx:
        row = await tx.fetchrow("SELECT * FROM journal WHERE document_id = $1 AND kind = 'document.created'", ids[2])
        forged = journal.entry_hash(eid, row["seq"], row["at"], "mallory", row["kind"], row["document_id"],
                                    row["data"], row["prev_hash"])
        await tx.execute("UPDATE journal SET actor = 'mallory', hash = $3 WHERE entity_id = $1 AND seq = $2",
                         eid, row["seq"], forged)
    breaks, _ = await _check(runtime, ids[2])
    assert [b.seq for b in breaks] == [row["seq"] + 1]
    assert "does not follow" in breaks[0].problem
    async with runtime.store.transaction() as tx:  # the whole-chain check agrees
        assert [b.seq for b in await journal.verify(tx, eid)] == [row["seq"] + 1]


async def test_modified_predecessor_and_deleted_successor_are_named(runtime):
    eid, ids = await _entity_with_documents(runtime, "Voisins", 5)
    async with runtime.store.transaction() as tx:
        seqs = [r["seq"] for r in await tx.fetch("SELECT seq FROM journal WHERE document_id = $1 ORDER BY seq", ids[2])]
        # the entry before this document's first (another document's), rewritten with a recomputed own hash
        before = await tx.fetchrow("SELECT * FROM journal WHERE entity_id = $1 AND seq = $2", eid, seqs[0] - 1)
        forged = journal.entry_hash(eid, before["seq"], before["at"], "mallory", before["kind"],
                                    before["document_id"], before["data"], before["prev_hash"])
        await tx.execute("UPDATE journal SET actor = 'mallory', hash = $3 WHERE entity_id = $1 AND seq = $2",
                         eid, before["seq"], forged)
        await tx.execute("DELETE FROM journal WHERE entity_id = $1 AND seq = $2", eid, seqs[-1] + 1)
    breaks, _ = await _check(runtime, ids[2])
    assert [(b.seq, b.problem.split(" ")[0]) for b in breaks] == [(seqs[0], "does"), (seqs[-1] + 1, "missing")]


async def test_last_entry_must_be_the_recorded_head(runtime):
    eid, ids = await _entity_with_documents(runtime, "Tête", 3)
    async with runtime.store.transaction() as tx:
        await tx.execute("UPDATE journal_heads SET hash = $2 WHERE entity_id = $1", eid, "f" * 64)
    breaks, _ = await _check(runtime, ids[-1])
    assert len(breaks) == 1 and "chain head" in breaks[0].problem
    assert (await _check(runtime, ids[0]))[0] == []


async def test_api_journal_says_what_it_checked(server):
    rt = server.rt
    _eid, ids = await _entity_with_documents(rt, "API", 4)
    async with rt.store.transaction() as tx:
        await tx.execute("UPDATE journal SET data = '{\"title\":\"faux\"}' WHERE document_id = $1 "
                         "AND kind = 'fields.changed'", ids[1])
    async with server.client() as app:
        body = await (await app.get(f"/api/v1/documents/{ids[1]}/journal")).json()
        assert body["chain_ok"] is False and body["chain_scope"] == "entries"
        assert len(body["chain_breaks"]) == 1 and "modified" in body["chain_breaks"][0]
        assert [e["kind"] for e in body["items"]] == ["document.created", "fields.changed"]
        body = await (await app.get(f"/api/v1/documents/{ids[3]}/journal")).json()
        assert body["chain_ok"] is True and body["chain_breaks"] == []
