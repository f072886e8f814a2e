"""Journal search reads through an index on both stores, never a whole table or another chain."""

from __future__ import annotations

from datetime import timedelta

from flowbus import journal
from flowbus.journal_search import Query, plan, search


async def _fill(rt, entities: int = 20, per_entity: int = 150):
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        for e in range(entities):
            for n in range(per_entity):
                kind = "admin.grant.given" if n % 50 == 0 else "state.changed"
                await journal.append(tx, entity_id=f"e{e:03d}", actor=f"user:a{n % 7}", kind=kind,
                                     at=now + timedelta(seconds=n), document_id=f"d{e}-{n % 30}", data={"n": n})


async def test_searches_use_indexes_and_page_newest_first(backend, runtime_factory):
    rt = await runtime_factory(backend, workers=False)
    await _fill(rt)
    dialect = rt.store.dialect
    async with rt.store.transaction() as tx:
        if dialect != "sqlite":
            await tx.execute("ANALYZE journal")
        page1 = await search(tx, Query(entity_id="e005"), limit=100)
        assert [e.seq for e in page1] == list(range(150, 50, -1))
        from flowbus.journal_search import cursor
        page2 = await search(tx, Query(entity_id="e005"), after=cursor(page1[-1]), limit=100)
        assert [e.seq for e in page2] == list(range(50, 0, -1))
        admin = await search(tx, Query(admin_only=True), limit=1000)
        assert len(admin) == 20 * 3 and all(e.kind.startswith("admin.") for e in admin)
        assert [e.at for e in admin] == sorted((e.at for e in admin), reverse=True)
        mine = await search(tx, Query(admin_only=True), limit=1000, entity_ids=["e001", "e002"])
        assert {e.entity_id for e in mine} == {"e001", "e002"}
        by_doc = await search(tx, Query(document_id="d3-4", actor="user:a4"), limit=100)
        assert by_doc and all(e.document_id == "d3-4" and e.actor == "user:a4" for e in by_doc)
        plans = {name: await plan(tx, q, dialect) for name, q in {
            "entity": Query(entity_id="e005", kind="state."), "document": Query(document_id="d3-4"),
            "admin": Query(admin_only=True, actor="user:a1")}.items()}
    if dialect == "sqlite":
        assert "sqlite_autoindex_journal_1" in plans["entity"] or "PRIMARY KEY" in plans["entity"]
        assert "journal_document" in plans["document"]
        assert "journal_admin_at" in plans["admin"]
        assert all("SCAN journal\n" not in p + "\n" and not p.strip().endswith("SCAN journal") for p in plans.values())
    else:
        assert "Seq Scan" not in "".join(plans.values()), plans
        assert "journal_admin_at" in plans["admin"]
        assert "journal_document" in plans["document"]
