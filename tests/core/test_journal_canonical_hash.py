from flowbus.journal import _canonical_entry_hash, canonical, entry_hash


def test_direct_canonical_hash_equals_entry_hash():
    for data in [{}, {"a": 1, "é": "x\"\n\\", "b": [1, 2.5, None, {"z": True, "y": "ü\u2028"}]}]:
        for document_id in [None, "doc-é"]:
            args = ('ent"1', 42, "2026-01-01T00:00:00+00:00", "act€r", "step.done", document_id,
                    canonical(data), "ab" * 32)
            assert _canonical_entry_hash(*args) == entry_hash(*args)


async def test_postgresql_chains_entries_with_the_same_hashes(pg_database):
    """``sql_chain`` (PostgreSQL's SHA-256 over ``hash_prefix`` + previous hash + sequence) writes the
    rows ``chain`` computes in Python, escapes, non-ASCII text and empty documents included."""
    import asyncpg

    from flowbus.clock import utcnow
    from flowbus.journal import chain, entry, hash_prefix, sql_chain

    entries = [entry(entity_id='ent"1', actor="act€r", kind="step.done", at=utcnow(), document_id=document_id,
                     data=data)
               for data, document_id in [({}, None), ({"é": "x\"\n\\", "b": [1, 2.5, None, {"z": "ü\u2028"}]}, "d-é"),
                                         ({"emoji": "📄", "n": 10**18}, "d2")]]
    expected, seq, head = chain('ent"1', 41, "ab" * 32, entries)
    args: list = ['ent"1', 41, "ab" * 32]
    params = []
    for entity_id, at_s, actor, kind, document_id, data_json in entries:
        params.append({name: f"${len(args) + i + 1}" for i, name in enumerate(
            ("prefix", "at", "actor", "kind", "document", "data"))})
        args += [hash_prefix(entity_id, at_s, actor, kind, document_id, data_json), at_s, actor, kind, document_id,
                 data_json]
    ctes, rows, last = sql_chain("h", "$1", params)
    conn = await asyncpg.connect(pg_database)
    try:
        got = await conn.fetch(f"WITH h AS (SELECT $2::bigint AS seq, $3::text AS hash), {ctes} SELECT r.*, "
                               f"(SELECT seq FROM {last}) AS head_seq, (SELECT hash FROM {last}) AS head_hash "
                               f"FROM ({rows}) r ORDER BY 2", *args)
    finally:
        await conn.close()
    assert [tuple(r)[:9] for r in got] == expected
    assert (got[0]["head_seq"], got[0]["head_hash"]) == (seq, head) == (44, expected[-1][-1])
