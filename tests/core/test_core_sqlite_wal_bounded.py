"""The embedded SQLite store keeps its WAL under a size limit while it writes without pause — even with
another connection reading all the while — and ``journal_size_limit`` is set (issue 20 §6)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

from flowbus.store import sqlite as sqlite_store
from flowbus.store.sqlite import SQLiteStore

LIMIT = 2 * 1024 * 1024


def _reader(path, stop: threading.Event, snapshots: list[int]) -> None:
    """Short read transactions back to back on a connection of its own (as a backup, a second process's
    reads or a command-line tool would): each holds a snapshot for a few milliseconds."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        while not stop.is_set():
            conn.execute("BEGIN")
            conn.execute("SELECT COUNT(*) FROM kv").fetchone()
            time.sleep(0.003)
            conn.execute("COMMIT")
            snapshots[0] += 1
    finally:
        conn.close()


async def test_wal_stays_under_its_limit_under_continuous_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "WAL_LIMIT", LIMIT)
    path = tmp_path / "state.db"
    wal = path.with_name("state.db-wal")
    store = SQLiteStore(path)
    await store.open()
    stop = threading.Event()
    snapshots = [0]
    try:
        async with store.transaction() as tx:
            await tx.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)")
            assert await tx.fetchval("PRAGMA journal_size_limit") == LIMIT
        reader = threading.Thread(target=_reader, args=(path, stop, snapshots), daemon=True)
        reader.start()
        written, sizes, i = 0, [], 0
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            async with store.transaction() as tx:
                for _ in range(50):
                    i += 1
                    await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", i, "x" * 1000)
            written += 50 * 1000
            if wal.exists():
                sizes.append(wal.stat().st_size)
            await asyncio.sleep(0)
        stop.set()
        reader.join(5)
        assert written > 10 * LIMIT, f"the test wrote too little to mean anything ({written} bytes)"
        assert snapshots[0] > 50, "the reader did not read all the while"
        assert max(sizes) <= 2 * LIMIT, f"WAL grew to {max(sizes)} bytes (limit {LIMIT}) after {written} bytes written"
        async with store.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM kv") == i
    finally:
        stop.set()
        await store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT COUNT(*) FROM kv").fetchone()[0] == i
