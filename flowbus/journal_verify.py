"""`journal verify` at scale: each chain streamed in keyset pages, hashed the fast canonical way, entities in parallel, per-entity checkpoints.

Memory stays bounded whatever the chain's length: an entity's entries are read ``PAGE`` at a time
(``seq > last ORDER BY seq LIMIT PAGE``, on the primary key), never the whole chain.  The database writes each
entry's canonical payload (its string fields as JSON literals, the stored data as it is: ``append`` stores
canonical JSON), so that Python only hashes it; only when that hash differs is the row read again and its data
parsed and re-serialised (``journal.entry_hash``), so a row written with non-canonical JSON still verifies.
Accepting the fast hash is sound: every other field is a JSON string literal or a number, so the hashed payload
can be split back into its fields one way only, and equal payloads mean equal fields.

Each entity starts from one consistent snapshot of its head and its last sequence number; entries
appended after it (a live server) are left for the next run.  A verification that finds an entity
intact writes its checkpoint (``journal_checkpoints``: seq, hash, when); ``since=True`` then starts that
entity after its checkpoint, from the checkpointed hash, after checking that the checkpointed entry
still hashes to it.  The checkpoints are kept in the same database: a run without ``since`` is the
whole check.

SQLite is read on read-only connections of its own (one per thread; never the store's writing
connection, which would hold the write lock), PostgreSQL on pooled connections, ``jobs`` entities at a
time, largest first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flowbus.clock import isoformat, utcnow
from flowbus.journal import GENESIS, ChainBreak, entry_hash

PAGE = 1000  # entries per keyset page
_COLUMNS = "seq, at, actor, kind, document_id, data, prev_hash, hash"
_ROW_SQL = f"SELECT {_COLUMNS} FROM journal WHERE entity_id = $1 AND seq = $2"


def _page_sql(dialect: str) -> str:
    """A page of entries as (seq, canonical payload as UTF-8 bytes, prev_hash, hash): the database writes each
    string field as a JSON literal (``json_quote``, ``to_json``: the same escapes as Python's ``json``), so
    that Python only hashes; ``$4`` is the entity's id as a JSON literal."""
    if dialect == "postgres":
        def q(col: str) -> str:
            return f"to_json({col}::text)::text"
        concat, entity, as_bytes = "||", "$4::text", "convert_to({}, 'UTF8')"
    else:
        def q(col: str) -> str:
            return f"json_quote({col})"
        concat, entity, as_bytes = "||", "$4", "CAST({} AS BLOB)"
    payload = f" {concat} ".join([
        "'{\"actor\":'", q("actor"), "',\"at\":'", q("at"), "',\"data\":'", "data", "',\"document\":'",
        f"COALESCE({q('document_id')}, 'null')", "',\"entity\":'", entity, "',\"kind\":'", q("kind"),
        "',\"prev\":'", q("prev_hash"), "',\"seq\":'", "CAST(seq AS TEXT)", "'}'"])
    return (f"SELECT seq, {as_bytes.format(payload)}, prev_hash, hash FROM journal WHERE entity_id = $1 "
            f"AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT {PAGE}")


# one statement, so one snapshot: the head and the chain's last entry as they were together
_SNAPSHOT_SQL = ("SELECT (SELECT seq FROM journal_heads WHERE entity_id = $1) AS head_seq, "
                 "(SELECT hash FROM journal_heads WHERE entity_id = $1) AS head_hash, "
                 "(SELECT MAX(seq) FROM journal WHERE entity_id = $1) AS last_seq")
# every entity with a head or an entry: the heads, and a skip scan of the journal's primary key
_ENTITIES_SQL = ("WITH RECURSIVE e(id) AS (SELECT MIN(entity_id) FROM journal UNION ALL "
                 "SELECT (SELECT MIN(entity_id) FROM journal WHERE entity_id > e.id) FROM e WHERE e.id IS NOT NULL) "
                 "SELECT id FROM e WHERE id IS NOT NULL UNION SELECT entity_id FROM journal_heads")
_encode = json.JSONEncoder(ensure_ascii=False).encode
_sha256 = hashlib.sha256


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    verified_at: str


@dataclass
class EntityResult:
    entity_id: str
    verified: int = 0  # entries hashed
    skipped: int = 0  # entries up to the checkpoint, not read again
    breaks: list[ChainBreak] = field(default_factory=list)
    head: tuple[int, str] | None = None  # the head verified (for the checkpoint)


@dataclass
class Report:
    breaks: list[ChainBreak]
    verified: int
    skipped: int
    entities: int
    checkpointed: int  # entities started from their checkpoint
    seconds: float


class _Chain:
    """One entity's chain checked entry by entry (pages fed in order), from the genesis or a checkpoint."""

    def __init__(self, entity_id: str, after_seq: int = 0, prev_hash: str = GENESIS) -> None:
        self.entity_id = entity_id
        self.prev_hash, self.expected = prev_hash, after_seq + 1
        self.breaks: list[ChainBreak] = []
        self.count = 0
        self._entity = _encode(entity_id)
        self._strings: dict[str, str] = {}

    def _str(self, value: str) -> str:
        """A JSON string literal, remembered for the values that repeat (actors, kinds, documents)."""
        got = self._strings.get(value)
        if got is None:
            if len(self._strings) > 4096:
                self._strings.clear()
            got = self._strings[value] = _encode(value)
        return got

    def hashes_to(self, row: tuple) -> bool:
        seq, at, actor, kind, document_id, data, prev, digest = row
        payload = (f'{{"actor":{self._str(actor)},"at":{_encode(at)},"data":{data},"document":'
                   f'{"null" if document_id is None else self._str(document_id)},"entity":{self._entity},'
                   f'"kind":{self._str(kind)},"prev":{_encode(prev)},"seq":{int(seq)}}}')
        if _sha256(payload.encode("utf-8")).hexdigest() == digest:
            return True
        try:  # data stored as other JSON than ``canonical`` writes: parsed and re-serialised
            return entry_hash(self.entity_id, int(seq), at, actor, kind, document_id, data, prev) == digest
        except ValueError:
            return False

    def feed(self, rows: list[tuple], modified: set[int]) -> None:
        """Rows (seq, payload, prev_hash, hash) in order; ``modified``: those whose content does not give their hash."""
        entity_id, breaks = self.entity_id, self.breaks
        prev_hash, expected = self.prev_hash, self.expected
        for seq, _payload, prev, digest in rows:
            if seq != expected:
                if seq > expected:
                    breaks.append(ChainBreak(entity_id, expected,
                                             f"entries #{expected}..#{seq - 1} are missing (deleted)"))
                else:
                    breaks.append(ChainBreak(entity_id, seq, "entry number repeated (inserted)"))
            if seq in modified:
                breaks.append(ChainBreak(entity_id, seq, "content modified: its hash no longer matches"))
            elif prev != prev_hash:
                breaks.append(ChainBreak(entity_id, seq, "does not follow the previous entry (inserted, "
                                                         "or the previous entry was modified or deleted)"))
            prev_hash, expected = digest, seq + 1
        self.count += len(rows)
        self.prev_hash, self.expected = prev_hash, expected

    def finish(self, head_seq: int | None, head_hash: str | None, start_seq: int) -> None:
        if head_seq is None:
            return
        last = self.expected - 1
        if head_seq < start_seq:
            self.breaks.append(ChainBreak(self.entity_id, head_seq + 1,
                                          f"the recorded chain head (#{head_seq}) is before the last verified "
                                          f"entry #{start_seq}: entries deleted at the end"))
        elif head_seq > last:
            self.breaks.append(ChainBreak(self.entity_id, self.expected,
                                          f"entries #{self.expected}..#{head_seq} are missing (deleted at the end)"))
        elif head_seq < last:
            self.breaks.append(ChainBreak(self.entity_id, head_seq + 1, "entries after the recorded chain head "
                                                                        "(inserted)"))
        elif head_hash != self.prev_hash:
            self.breaks.append(ChainBreak(self.entity_id, head_seq, "last entry differs from the recorded chain head"))


Fetch = Callable[..., Awaitable[list[tuple]]]


async def verify_entity(fetch: Fetch, dialect: str, entity_id: str,
                        checkpoint: Checkpoint | None = None) -> EntityResult:
    """Verify one entity's chain with ``fetch(sql, *args) -> rows as tuples``, from ``checkpoint`` if given."""
    result = EntityResult(entity_id)
    head_seq, head_hash, last_seq = (await fetch(_SNAPSHOT_SQL, entity_id))[0]
    head_seq = None if head_seq is None else int(head_seq)
    last_seq = 0 if last_seq is None else int(last_seq)
    start = 0
    chain = _Chain(entity_id)
    if checkpoint is not None and checkpoint.seq > 0:
        start = checkpoint.seq
        anchor = await fetch(_ROW_SQL, entity_id, start)
        if not anchor or anchor[0][7] != checkpoint.hash or not chain.hashes_to(anchor[0]):
            result.breaks.append(ChainBreak(entity_id, start, f"the entry verified on {checkpoint.verified_at} "
                                                              "(checkpoint) was modified or deleted since"))
            return result
        chain = _Chain(entity_id, start, checkpoint.hash)
        result.skipped = start  # the checkpointed entry's own hash is recomputed above, not counted
    after = start
    page_sql = _page_sql(dialect)
    literal = _encode(entity_id)
    while after < last_seq:
        rows = await fetch(page_sql, entity_id, after, last_seq, literal)
        if not rows:
            break
        modified = set()
        for seq, payload, _prev, digest in rows:
            if _sha256(payload).hexdigest() != digest:  # other JSON than ``canonical`` writes, or modified
                full = await fetch(_ROW_SQL, entity_id, seq)
                if not chain.hashes_to(full[0]):
                    modified.add(seq)
        chain.feed(rows, modified)
        after = int(rows[-1][0])
        if len(rows) < PAGE:
            break
    chain.finish(head_seq, head_hash, start)
    result.verified += chain.count
    result.breaks += chain.breaks
    if not result.breaks and head_seq is not None and head_seq > 0:
        result.head = (head_seq, head_hash)
    return result


# ---- readers ---------------------------------------------------------------------------------


class _SQLiteReaders:
    """Read-only SQLite connections, one per thread of a pool of ``jobs`` threads (sqlite3 releases the GIL while
    it reads pages)."""

    def __init__(self, path: Any, jobs: int) -> None:
        from flowbus.store.sqlite import _translate
        self._translate = _translate
        self._uri = path.resolve().as_uri() + "?mode=ro"
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self.pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="journal-verify")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False, timeout=30)
            self._conns.append(conn)
        return conn

    def fetch_sync(self, sql: str, *args: Any) -> list[tuple]:
        return self._conn().execute(self._translate(sql), args).fetchall()

    async def verify(self, entity_id: str, checkpoint: Checkpoint | None) -> EntityResult:
        def run() -> EntityResult:
            async def fetch(sql: str, *args: Any) -> list[tuple]:
                return self.fetch_sync(sql, *args)
            coro = verify_entity(fetch, "sqlite", entity_id, checkpoint)
            try:  # nothing in it awaits anything else: driven to its end on this thread
                coro.send(None)
            except StopIteration as done:
                return done.value
            raise RuntimeError("the SQLite verification awaited")  # pragma: no cover
        return await asyncio.get_running_loop().run_in_executor(self.pool, run)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for conn in self._conns:
            conn.close()


# ---- the whole journal -----------------------------------------------------------------------


async def _checkpoints(store: Any) -> dict[str, Checkpoint]:
    async with store.transaction() as tx:
        rows = await tx.fetch("SELECT entity_id, seq, hash, verified_at FROM journal_checkpoints")
    return {r["entity_id"]: Checkpoint(int(r["seq"]), r["hash"], r["verified_at"]) for r in rows}


async def _save_checkpoints(store: Any, results: list[EntityResult]) -> None:
    at = isoformat(utcnow())
    async with store.transaction() as tx:
        for r in results:
            assert r.head is not None
            await tx.execute("INSERT INTO journal_checkpoints (entity_id, seq, hash, verified_at) "
                             "VALUES ($1, $2, $3, $4) "
                             "ON CONFLICT (entity_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
                             "verified_at = excluded.verified_at", r.entity_id, r.head[0], r.head[1], at)


def default_jobs(dialect: str) -> int:
    """Entities verified at a time.  Measured on the 100k store of bench/bench_scale.py (2 cores): PostgreSQL
    110k entries/s with 1, 152k with 2, 164k with 4, 157k with 8 (it builds the next pages while Python hashes);
    SQLite 147k with 1 thread, 152k with 2 (the GIL holds the hashing), 65k with 2 worker processes (733
    mostly small entities: the round trips cost more than the second core gives)."""
    return 4 if dialect == "postgres" else 2


async def verify_store(store: Any, *, entity_id: str | None = None, since: bool = False, jobs: int | None = None,
                       progress: Callable[[int, int, int, int], None] | None = None,
                       progress_every: float = 5.0) -> Report:
    """Verify every chain (or ``entity_id``'s) of ``store``; write the checkpoint of each entity found intact.

    ``progress(entries_done, entries_expected, entities_done, entities)`` is called at most every
    ``progress_every`` seconds."""
    started = time.monotonic()
    jobs = jobs or default_jobs(store.dialect)
    async with store.transaction() as tx:
        if entity_id is None:
            ids = sorted({r["id"] for r in await tx.fetch(_ENTITIES_SQL)})
        else:
            ids = [entity_id]
        heads = {r["entity_id"]: int(r["seq"]) for r in await tx.fetch("SELECT entity_id, seq FROM journal_heads")}
    checkpoints = await _checkpoints(store) if since else {}
    ids.sort(key=lambda e: -(heads.get(e, 0) - (checkpoints[e].seq if e in checkpoints else 0)))  # largest first
    expected = sum(max(0, heads.get(e, 0) - (checkpoints[e].seq if e in checkpoints else 0)) for e in ids)
    results: list[EntityResult] = []
    to_save: list[EntityResult] = []
    done = [0, 0]
    last_report = [time.monotonic()]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for e in ids:
        queue.put_nowait(e)
    sqlite_readers = _SQLiteReaders(store.path, jobs) if store.dialect == "sqlite" else None

    async def record(result: EntityResult) -> None:
        results.append(result)
        done[0] += result.verified
        done[1] += 1
        if result.head is not None:
            to_save.append(result)
            if len(to_save) >= 100:
                batch = to_save[:]
                to_save.clear()
                await _save_checkpoints(store, batch)
        now = time.monotonic()
        if progress is not None and now - last_report[0] >= progress_every:
            last_report[0] = now
            progress(done[0], expected, done[1], len(ids))

    async def worker() -> None:
        if sqlite_readers is not None:
            while not queue.empty():
                e = queue.get_nowait()
                await record(await sqlite_readers.verify(e, checkpoints.get(e)))
            return
        async with store.statements() as tx:
            async def fetch(sql: str, *args: Any) -> list[tuple]:
                return [tuple(r.values()) for r in await tx.fetch(sql, *args)]
            while not queue.empty():
                e = queue.get_nowait()
                await record(await verify_entity(fetch, "postgres", e, checkpoints.get(e)))

    try:
        await asyncio.gather(*(worker() for _ in range(min(jobs, max(1, len(ids))))))
    finally:
        if sqlite_readers is not None:
            sqlite_readers.close()
    if to_save:
        await _save_checkpoints(store, to_save)
    breaks = [b for r in sorted(results, key=lambda r: r.entity_id) for b in r.breaks]
    return Report(breaks, sum(r.verified for r in results), sum(r.skipped for r in results), len(ids),
                  sum(1 for e in ids if e in checkpoints), time.monotonic() - started)
