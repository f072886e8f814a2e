"""`journal verify` at scale (issue 20 §5): streamed chains in bounded memory, --since from the checkpoints,
entities verified in parallel, on both backend sets."""

from __future__ import annotations

import argparse
import tracemalloc
from typing import Any

from flowbus import journal
from flowbus.clock import utcnow
from flowbus.journal_verify import verify_store


async def _chain(rt: Any, entity_id: str, count: int, *, size: int = 300) -> None:
    """``count`` entries chained by ``journal.chain`` after the entity's head, written in bulk (as append does)."""
    at = utcnow()
    async with rt.store.transaction() as tx:
        head = await tx.fetchrow("SELECT seq, hash FROM journal_heads WHERE entity_id = $1", entity_id)
        if head is None:
            await tx.execute("INSERT INTO journal_heads (entity_id, seq, hash) VALUES ($1, 0, $2)", entity_id,
                             journal.GENESIS)
            head = {"seq": 0, "hash": journal.GENESIS}
        seq, prev = int(head["seq"]), head["hash"]
        for start in range(0, count, 2000):
            entries = [journal.entry(entity_id=entity_id, actor="worker", kind="step.done", at=at,
                                     document_id=f"doc-{(start + i) // 10}",
                                     data={"step": "tdt", "n": start + i, "note": "é" + "x" * size})
                       for i in range(min(2000, count - start))]
            rows, seq, prev = journal.chain(entity_id, seq, prev, entries)
            for i in range(0, len(rows), 100):
                chunk = rows[i:i + 100]
                await tx.execute(f"INSERT INTO journal {journal.COLUMNS} VALUES {journal.values_sql(len(chunk))}",
                                 *[v for row in chunk for v in row])
        await tx.execute("UPDATE journal_heads SET seq = $2, hash = $3 WHERE entity_id = $1", entity_id, seq, prev)


async def _peak(coro: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = await coro
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_long_chain_is_verified_in_bounded_memory(backend, runtime_factory):
    rt = await runtime_factory(backend, workers=False)
    await _chain(rt, "e-long", 50_000)

    report, streamed = await _peak(verify_store(rt.store, entity_id="e-long", jobs=1))
    assert report.breaks == [] and report.verified == 50_000

    async def whole_chain() -> list[Any]:  # the old way: the whole chain fetched, then checked
        async with rt.store.transaction() as tx:
            return await journal.verify(tx, "e-long")

    breaks, fetched = await _peak(whole_chain())
    assert breaks == []
    assert streamed < 8 * 2**20, f"streamed verification peaked at {streamed / 2**20:.1f} MB"
    assert fetched > 4 * streamed, (fetched, streamed)  # this test would catch a whole-chain fetch


async def test_since_verifies_only_entries_after_each_checkpoint(backend, runtime_factory, monkeypatch, capsys):
    from flowbus.commands.core import cmd_journal_verify

    rt = await runtime_factory(backend, workers=False)
    if backend == "embedded":
        monkeypatch.setenv("FLOWBUS_DATA_DIR", str(rt.settings.data_dir))
    monkeypatch.setenv("FLOWBUS_DATABASE_URL", rt.settings.database_url)
    for eid, n in (("e-a", 1200), ("e-b", 300), ("e-c", 10)):
        await _chain(rt, eid, n)

    async def run(since: bool) -> tuple[int, str]:
        code = await cmd_journal_verify(argparse.Namespace(entity=None, since=since, jobs=2, quiet=True, host=None,
                                                           port=None, demo=False))
        return code, capsys.readouterr().out

    capsys.readouterr()  # the runtime's start-up logs
    assert await run(since=True) == (0, "Journal intact: 1510 entries verified.\n")  # no checkpoint yet: everything
    async with rt.store.transaction() as tx:
        cps = {r["entity_id"]: (r["seq"], r["hash"]) for r in await tx.fetch("SELECT * FROM journal_checkpoints")}
        heads = {r["entity_id"]: (r["seq"], r["hash"]) for r in await tx.fetch("SELECT * FROM journal_heads")}
    assert cps == heads and cps["e-a"][0] == 1200

    # new entries through the product's own path, on two entities
    async with rt.store.transaction() as tx:
        for i in range(7):
            await journal.append(tx, entity_id="e-a", actor="api", kind="document.created", at=utcnow(),
                                 document_id=f"new-{i}", data={"i": i})
        await journal.append(tx, entity_id="e-c", actor="api", kind="document.created", at=utcnow(), data={})
    assert await run(since=True) == (0, "Journal intact: 8 entries verified.\n1510 earlier entries of 3 entities "
                                        "skipped: verified up to their checkpoint before (--since).\n")
    # the checkpoints moved: nothing new now
    assert (await run(since=True))[1].startswith("Journal intact: 0 entries verified.\n")

    # a modified entry after e-a's checkpoint is found by --since
    await _chain(rt, "e-a", 50)
    async with rt.store.transaction() as tx:
        await tx.execute("UPDATE journal SET data = $2 WHERE entity_id = 'e-a' AND seq = $1", 1230,
                         '{"forged":true}')
    code, out = await run(since=True)
    assert code == 1 and "BROKEN: entity e-a, entry #1230: content modified" in out, out
    # a modified entry before the checkpoint: --since trusts the checkpoint, the full verification finds it
    async with rt.store.transaction() as tx:
        await tx.execute("UPDATE journal SET data = $2 WHERE entity_id = 'e-b' AND seq = $1", 5, '{"forged":true}')
    code, out = await run(since=True)
    assert code == 1 and "e-b" not in out
    code, out = await run(since=False)
    assert code == 1 and "BROKEN: entity e-b, entry #5: content modified" in out and "entity e-a, entry #1230" in out
    # the checkpointed entry itself, rewritten with a consistent hash: --since says so
    async with rt.store.transaction() as tx:
        await tx.execute("UPDATE journal SET hash = $1 WHERE entity_id = 'e-c' AND seq = 11", "f" * 64)
    code, out = await run(since=True)
    assert code == 1 and "BROKEN: entity e-c, entry #11: the entry verified on" in out, out


async def test_parallel_verification_finds_a_break_in_any_entity(backend, runtime_factory):
    rt = await runtime_factory(backend, workers=False)
    ids = [f"e-{i:02d}" for i in range(9)]
    for i, eid in enumerate(ids):
        await _chain(rt, eid, 200 + 150 * i, size=20)
    report = await verify_store(rt.store, jobs=3)
    assert report.breaks == [] and report.verified == sum(200 + 150 * i for i in range(9)) and report.entities == 9

    async with rt.store.transaction() as tx:
        await tx.execute("DELETE FROM journal_checkpoints")
        await tx.execute("DELETE FROM journal WHERE entity_id = 'e-03' AND seq = 17")  # inside a chain
        await tx.execute("DELETE FROM journal WHERE entity_id = 'e-08' AND seq > 1390")  # at its end
        await tx.execute("UPDATE journal SET actor = 'mallory' WHERE entity_id = 'e-00' AND seq = 200")  # its last
    report = await verify_store(rt.store, jobs=3)
    assert [str(b) for b in report.breaks] == [
        "entity e-00, entry #200: content modified: its hash no longer matches",
        "entity e-03, entry #17: entries #17..#17 are missing (deleted)",
        "entity e-03, entry #18: does not follow the previous entry (inserted, or the previous entry was modified or "
        "deleted)",
        "entity e-08, entry #1391: entries #1391..#1400 are missing (deleted at the end)",
    ]
    async with rt.store.transaction() as tx:  # what the whole-chain check finds, entity by entity
        assert report.breaks == await journal.verify(tx)
    # the broken entities keep no new checkpoint; the intact ones have theirs
    async with rt.store.transaction() as tx:
        kept = {r["entity_id"] for r in await tx.fetch("SELECT entity_id FROM journal_checkpoints")}
    assert kept == set(ids) - {"e-00", "e-03", "e-08"}


async def test_escapes_and_non_canonical_json_verify_as_the_journal_hashes_them(backend, runtime_factory):
    """The database writes the string fields as JSON literals for the fast hash: quotes, backslashes, control
    characters and non-ASCII text hash as ``journal.entry_hash`` does; data stored as other JSON than ``canonical``
    (reordered keys, spaces) is parsed and still verifies; a modified one does not."""
    rt = await runtime_factory(backend, workers=False)
    async with rt.store.transaction() as tx:
        for i, (actor, data, document_id) in enumerate([
                ('a"c\\t€ur', {"é": "x\"\n\t\r\b\f\x01\x1f\\", "z": [1, 2.5, None, True]}, None),
                ("agent\u2028", {"emoji": "📄", "n": 10**18, "ctl": "\x7f"}, "d-é\"x"),
                ("plain", {"b": 1, "a": {"d": 2, "c": 3}}, "d2")]):
            await journal.append(tx, entity_id='ent "é"', actor=actor, kind=f"k\n{i}", at=utcnow(),
                                 document_id=document_id, data=data)
    assert (await verify_store(rt.store)).breaks == []
    async with rt.store.transaction() as tx:
        await tx.execute("UPDATE journal SET data = $1 WHERE seq = 3", '{ "b" : 1, "a": {"c": 3, "d": 2} }')
    report = await verify_store(rt.store)
    assert report.breaks == [] and report.verified == 3
    async with rt.store.transaction() as tx:
        await tx.execute("UPDATE journal SET data = $1 WHERE seq = 3", '{ "b" : 1, "a": {"c": 3, "d": 4} }')
    assert [str(b) for b in (await verify_store(rt.store)).breaks] == [
        'entity ent "é", entry #3: content modified: its hash no longer matches']
