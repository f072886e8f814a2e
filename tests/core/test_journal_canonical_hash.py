from flowbus.journal import _canonical_entry_hash, canonical, entry_hash


def test_direct_canonical_hash_equals_entry_hash():
    for data in [{}, {"a": 1, "é": "x\"\n\\", "b": [1, 2.5, None, {"z": True, "y": "ü\u2028"}]}]:
        for document_id in [None, "doc-é"]:
            args = ('ent"1', 42, "2026-01-01T00:00:00+00:00", "act€r", "step.done", document_id,
                    canonical(data), "ab" * 32)
            assert _canonical_entry_hash(*args) == entry_hash(*args)
