"""Embedded SQLite store: WAL checkpoints run in the background, off the event loop, and keep the
WAL from growing without bound; committed data is in the database file without any checkpoint
by SQLite itself (``wal_autocheckpoint=0``)."""

from __future__ import annotations

import asyncio
import sqlite3

from flowbus.store import sqlite as sqlite_store
from flowbus.store.sqlite import SQLiteStore


async def _write(store: SQLiteStore, start: int, n: int) -> None:
    async with store.transaction() as tx:
        for i in range(start, start + n):
            await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", f"k{i}", "x" * 500)


async def test_background_checkpoints_copy_the_wal_into_the_database_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 0.05)
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        async with store.transaction() as tx:
            await tx.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
            assert await tx.fetchval("PRAGMA wal_autocheckpoint") == 0  # SQLite no longer checkpoints in COMMIT
        await _write(store, 0, 2000)  # ~1 MB: more than SQLite's own 1,000-page checkpoint threshold
        wal = path.with_name("state.db-wal")
        for _ in range(100):  # the checkpointer copies the frames into the database file
            await asyncio.sleep(0.05)
            if path.stat().st_size > 1_000_000:
                break
        assert path.stat().st_size > 1_000_000, "committed pages never reached the database file"
        # the database file alone (WAL ignored) holds every committed row
        uri = f"file:{path}?immutable=1"
        with sqlite3.connect(uri, uri=True) as direct:
            assert direct.execute("SELECT COUNT(*) FROM kv").fetchone()[0] == 2000
        # once checkpointed, the WAL is rewound by the next writes instead of growing: after 8 more
        # rounds of the same size it holds a few rounds at most (a checkpoint may miss a round that
        # was being written), never all of them
        wal_size = wal.stat().st_size
        for round_ in range(8):
            await _write(store, 10_000 + round_ * 2000, 2000)
            await asyncio.sleep(0.3)
        assert wal.stat().st_size <= wal_size * 4, (wal_size, wal.stat().st_size)
    finally:
        await store.close()
    assert store._checkpointer is None and store._ckpt_conn is None
