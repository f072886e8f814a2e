from flowbus.journal import _canonical_entry_hash, canonical, entry_hash


def test_direct_canonical_hash_equals_entry_hash():
    for data in [{}, {"a": 1, "é": "x\"\n\\", "b": [1, 2.5, None, {"z": True, "y": "ü\u2028"}]}]:
        for document_id in [None, "doc-é"]:
            args = ('ent"1', 42, "2026-01-01T00:00:00+00:00", "act€r", "step.done", document_id,
                    canonical(data), "ab" * 32)
            assert _canonical_entry_hash(*args) == entry_hash(*args)


async def test_postgresql_chains_entries_with_the_same_hashes(runtime_factory):
    """``sql_chain`` (PostgreSQL's SHA-256 over ``hash_prefix`` + previous hash + sequence) writes the
    rows ``chain`` computes in Python, escapes, non-ASCII text and empty documents included, and
    moves the head."""
    from flowbus import journal
    from flowbus.api.entities import create_entity
    from flowbus.clock import utcnow

    rt = await runtime_factory("scaleout", workers=False)
    ent = await create_entity(rt, name='Commune "1"', siren=None, parent=None, actor_name="test")
    entries = [journal.entry(entity_id=ent.id, actor="act€r", kind="step.done", at=utcnow(), document_id=document_id,
                             data=data)
               for data, document_id in [({}, None), ({"é": "x\"\n\\", "b": [1, 2.5, None, {"z": "ü\u2028"}]}, "d-é"),
                                         ({"emoji": "📄", "n": 10**18}, "d2")]]
    async with rt.store.transaction() as tx:
        head = await tx.fetchrow("SELECT seq, hash FROM journal_heads WHERE entity_id = $1", ent.id)
        expected, seq, last = journal.chain(ent.id, int(head["seq"]), head["hash"], entries)
        chained, args = journal.sql_chain("l", "$1", entries, 2)
        await tx.fetchrow(f"WITH l AS (SELECT seq, hash FROM journal_heads WHERE entity_id = $1 FOR UPDATE), "
                          f"{chained} SELECT 1", ent.id, *args)
    async with rt.store.transaction() as tx:
        got = await tx.fetch(f"SELECT {journal.COLUMNS[1:-1]} FROM journal WHERE entity_id = $1 AND seq > $2 "
                             "ORDER BY seq", ent.id, int(head["seq"]))
        new_head = await tx.fetchrow("SELECT seq, hash FROM journal_heads WHERE entity_id = $1", ent.id)
        assert await journal.verify(tx, ent.id) == []
    assert [tuple(r.values()) for r in got] == expected
    assert (new_head["seq"], new_head["hash"]) == (seq, last) == (int(head["seq"]) + 3, expected[-1][-1])
