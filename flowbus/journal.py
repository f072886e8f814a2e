"""Hash-chained journal: one chain per entity; append inside a transaction, verify offline.

Each entry's hash is SHA-256 over a canonical JSON of its content and the previous entry's
hash; ``journal_heads`` keeps the last (seq, hash) of each chain so that removing the newest
entries is detected too.

Writing: entries are chained at commit.  On PostgreSQL one statement locks the entity's head row,
chains the entries after it and moves it (``sql_chain``: PostgreSQL computes the same SHA-256 as
``chain``), whichever process wrote last; the engine's short record puts the same chaining in its
own statement.  On SQLite (one writer at a time) the process remembers the head it last wrote and
writes after it in one conditional statement, reading the head again when another process (a
command-line tool) moved it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowbus.clock import isoformat, parse_iso
from flowbus.models import JournalEntry
from flowbus.store.base import Tx

GENESIS = "0" * 64


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(entity_id: str, seq: int, at: str, actor: str, kind: str, document_id: str | None,
               data_json: str, prev_hash: str) -> str:
    payload = canonical({"entity": entity_id, "seq": seq, "at": at, "actor": actor, "kind": kind,
                         "document": document_id, "data": json.loads(data_json), "prev": prev_hash})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


_str = json.JSONEncoder(ensure_ascii=False).encode


def _canonical_entry_hash(entity_id: str, seq: int, at: str, actor: str, kind: str, document_id: str | None,
                          data_json: str, prev_hash: str) -> str:
    """``entry_hash`` for a ``data_json`` already produced by ``canonical`` (as ``append`` does).

    Builds the same canonical string directly (keys in sorted order) instead of parsing and
    re-serialising the data; ``verify`` keeps ``entry_hash``, which accepts any stored JSON.
    """
    payload = (hash_prefix(entity_id, at, actor, kind, document_id, data_json) + _str(prev_hash)[1:]
               + f',"seq":{int(seq)}}}')
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def hash_prefix(entity_id: str, at: str, actor: str, kind: str, document_id: str | None, data_json: str) -> str:
    """An entry's canonical payload up to its previous hash: the payload is this prefix, then the
    previous hash (hexadecimal: nothing to escape), then ``","seq":`` and the sequence number and ``}``
    — so that PostgreSQL can finish it after a head it has just locked (``sql_chain``)."""
    return (f'{{"actor":{_str(actor)},"at":{_str(at)},"data":{data_json},'
            f'"document":{"null" if document_id is None else _str(document_id)},"entity":{_str(entity_id)},'
            f'"kind":{_str(kind)},"prev":"')


def sql_chain(head: str, entity: str, entries: list[tuple], first_param: int) -> tuple[str, list[Any]]:
    """PostgreSQL CTEs that chain ``entries`` (built with ``entry``) after the head row of the CTE
    ``head`` (columns ``seq``, ``hash``), with the hashes ``chain`` computes, insert them and move the
    entity's head; nothing is written when ``head`` is empty.  ``entity`` is the entity's SQL
    parameter; the entries' parameters are numbered from ``first_param``.  Returns (the CTEs, the
    entries' parameter values)."""
    ctes, rows, args, prev = [], [], [], head
    for i, (entity_id, at_s, actor, kind, document_id, data_json) in enumerate(entries, 1):
        p = [f"${first_param + len(args) + j}" for j in range(6)]
        args += [hash_prefix(entity_id, at_s, actor, kind, document_id, data_json), at_s, actor, kind, document_id,
                 data_json]
        payload = f"{p[0]}::text || {prev}.hash || '\",\"seq\":' || ({prev}.seq + 1) || '}}'"
        ctes.append(f"e{i} AS (SELECT {prev}.seq + 1 AS seq, {prev}.hash AS prev, "
                    f"encode(sha256(convert_to({payload}, 'UTF8')), 'hex') AS hash FROM {prev})")
        rows.append(f"SELECT {entity}::text, e{i}.seq, {p[1]}::text, {p[2]}::text, {p[3]}::text, {p[4]}::text, "
                    f"{p[5]}::text, e{i}.prev, e{i}.hash FROM e{i}")
        prev = f"e{i}"
    ctes.append(f"head AS (UPDATE journal_heads h SET seq = n.seq, hash = n.hash FROM {prev} n "
                f"WHERE h.entity_id = {entity})")
    ctes.append(f"j AS (INSERT INTO journal {COLUMNS} {' UNION ALL '.join(rows)})")
    return ", ".join(ctes), args


async def append(tx: Tx, *, entity_id: str, actor: str, kind: str, at: datetime,
                 document_id: str | None = None, data: dict[str, Any] | None = None) -> None:
    """Append one entry to the entity's chain, written with the caller's transaction.

    Entries are queued and chained at the end of the transaction (``Tx.before_commit``), so
    the chain head of a busy entity is locked only for the last moment of each transaction,
    and several entries of one transaction take that lock once.
    """
    append_entries(tx, [entry(entity_id=entity_id, actor=actor, kind=kind, at=at, document_id=document_id,
                              data=data)])


def append_entries(tx: Tx, entries: list[tuple]) -> None:
    """``append`` for entries already built with ``entry``."""
    pending: list[tuple] | None = getattr(tx, "_journal_pending", None)
    if pending is None:
        pending = []
        tx._journal_pending = pending  # type: ignore[attr-defined]
        tx.before_commit(lambda: _flush(tx, pending))
    pending.extend(entries)


def entry(*, entity_id: str, actor: str, kind: str, at: datetime, document_id: str | None = None,
          data: dict[str, Any] | None = None) -> tuple:
    """An entry to chain: (entity, at, actor, kind, document, canonical data JSON)."""
    return (entity_id, isoformat(at), actor, kind, document_id, canonical(data or {}))


_CHUNK = 100  # journal rows per INSERT
COLUMNS = "(entity_id, seq, at, actor, kind, document_id, data, prev_hash, hash)"


def chain(entity_id: str, seq: int, prev: str, entries: list[tuple]) -> tuple[list[tuple], int, str]:
    """The rows of ``entries`` chained after the head (``seq``, ``prev``), and the new head."""
    rows: list[tuple] = []
    for _eid, at_s, actor, kind, document_id, data_json in entries:
        seq += 1
        digest = _canonical_entry_hash(entity_id, seq, at_s, actor, kind, document_id, data_json, prev)
        rows.append((entity_id, seq, at_s, actor, kind, document_id, data_json, prev, digest))
        prev = digest
    return rows, seq, prev


@functools.lru_cache(maxsize=128)
def values_sql(count: int) -> str:
    """``($1, …, $9), (…)``: the VALUES of ``count`` journal rows, their parameters first in the statement."""
    return ", ".join("(" + ", ".join(f"${j * 9 + k + 1}" for k in range(9)) + ")" for j in range(count))


def remembered_heads(hints: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """The head (seq, hash) this process last wrote, per entity (SQLite): a hint for conditional writes only."""
    return hints.setdefault("journal_heads", {})


def head_lock(hints: dict[str, Any], entity_id: str) -> asyncio.Lock:
    """The in-process lock under which this process's transactions chain an entity's entries on
    PostgreSQL (see ``_hold_head``)."""
    locks: dict[str, asyncio.Lock] = hints.setdefault("journal_locks", {})
    lock = locks.get(entity_id)
    if lock is None:
        lock = locks[entity_id] = asyncio.Lock()
    return lock


async def _flush(tx: Tx, pending: list[tuple]) -> None:
    by_entity: dict[str, list[tuple]] = {}
    for entry in pending:
        by_entity.setdefault(entry[0], []).append(entry)
    pending.clear()
    heads = remembered_heads(tx.hints)
    for entity_id in sorted(by_entity):  # a fixed order: two transactions never lock heads crosswise
        entries = by_entity[entity_id]
        if tx.dialect == "postgres":
            await _hold_head(tx, entity_id)
            await _append_in_sql(tx, entity_id, entries)
            continue
        known = heads.get(entity_id)
        if known is not None and len(entries) <= _CHUNK and await _append_after(tx, entity_id, known, entries, heads):
            continue
        await _append_locked(tx, entity_id, entries, heads)


async def _hold_head(tx: Tx, entity_id: str) -> None:
    """On PostgreSQL, this process's transactions chain an entity's entries one at a time, each
    holding the entity's lock from its journal write to its end (commit or rollback): they queue
    here rather than on the head row inside PostgreSQL, each holding a pooled connection.  The
    engine's short record takes the same lock (``head_lock``).
    """
    lock = head_lock(tx.hints, entity_id)
    await lock.acquire()
    tx.on_end(lock.release)


_SQL_CHUNK = 50  # entries chained per statement by PostgreSQL


async def _append_in_sql(tx: Tx, entity_id: str, entries: list[tuple]) -> None:
    """PostgreSQL: lock the head row, chain ``entries`` after it and move it, in one statement per
    ``_SQL_CHUNK`` entries — whichever process wrote last (``sql_chain``)."""
    for i in range(0, len(entries), _SQL_CHUNK):
        chained, args = sql_chain("l", "$1", entries[i:i + _SQL_CHUNK], 2)
        sql = (f"WITH l AS (SELECT seq, hash FROM journal_heads WHERE entity_id = $1 FOR UPDATE), {chained} "
               "SELECT 1 FROM l")
        if await tx.fetchrow(sql, entity_id, *args) is None:  # the entity's first entry: start from the genesis
            await tx.execute("INSERT INTO journal_heads (entity_id, seq, hash) VALUES ($1, 0, $2) "
                             "ON CONFLICT (entity_id) DO NOTHING", entity_id, GENESIS)
            assert await tx.fetchrow(sql, entity_id, *args) is not None


async def _append_after(tx: Tx, entity_id: str, known: tuple[int, str], entries: list[tuple],
                        heads: dict[str, tuple[int, str]]) -> bool:
    """SQLite: chain ``entries`` after the head this process last wrote, in one conditional write: the head
    moves only if it still is (seq, hash) = ``known``, and the rows are written only then.  False when
    another writer moved it: the caller then reads it (``_append_locked``).

    The hint is never trusted: a head rolled back, rewritten or tampered with since does not match.
    """
    rows, seq, prev = chain(entity_id, known[0], known[1], entries)
    heads[entity_id] = (seq, prev)
    args = [v for row in rows for v in row]
    moved = await tx.execute("UPDATE journal_heads SET seq = $2, hash = $3 WHERE entity_id = $1 AND seq = $4 "
                             "AND hash = $5", entity_id, seq, prev, known[0], known[1])
    if not moved:
        return False
    await tx.execute(f"INSERT INTO journal {COLUMNS} VALUES {values_sql(len(rows))}", *args)
    return True


async def _append_locked(tx: Tx, entity_id: str, entries: list[tuple], heads: dict[str, tuple[int, str]]) -> None:
    """SQLite: read the head, chain ``entries`` after it, write them and the new head."""
    head = await tx.fetchrow("SELECT seq, hash FROM journal_heads WHERE entity_id = $1", entity_id)
    if head is None:
        await tx.execute("INSERT INTO journal_heads (entity_id, seq, hash) VALUES ($1, 0, $2) "
                         "ON CONFLICT (entity_id) DO NOTHING", entity_id, GENESIS)
        head = await tx.fetchrow("SELECT seq, hash FROM journal_heads WHERE entity_id = $1", entity_id)
        assert head is not None
    rows, seq, prev = chain(entity_id, int(head["seq"]), head["hash"], entries)
    heads[entity_id] = (seq, prev)
    for i in range(0, len(rows), _CHUNK):
        chunk = rows[i:i + _CHUNK]
        await tx.execute(f"INSERT INTO journal {COLUMNS} VALUES {values_sql(len(chunk))}",
                         *[v for row in chunk for v in row])
    await tx.execute("UPDATE journal_heads SET seq = $2, hash = $3 WHERE entity_id = $1", entity_id, seq, prev)


def row_to_entry(row: dict[str, Any]) -> JournalEntry:
    return JournalEntry(row["entity_id"], int(row["seq"]), parse_iso(row["at"]), row["actor"], row["kind"],
                        row["document_id"], json.loads(row["data"]), row["prev_hash"], row["hash"])


@dataclass(frozen=True)
class ChainBreak:
    entity_id: str
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"entity {self.entity_id}, entry #{self.seq}: {self.problem}"


def verify_rows(entity_id: str, rows: list[dict[str, Any]], head: dict[str, Any] | None) -> list[ChainBreak]:
    """Check one entity's chain (rows ordered by seq) against its head; name every break."""
    breaks: list[ChainBreak] = []
    prev_hash, expected_seq = GENESIS, 1
    for row in rows:
        seq = int(row["seq"])
        if seq != expected_seq:
            if seq > expected_seq:
                breaks.append(ChainBreak(entity_id, expected_seq,
                                         f"entries #{expected_seq}..#{seq - 1} are missing (deleted)"))
            else:
                breaks.append(ChainBreak(entity_id, seq, "entry number repeated (inserted)"))
        recomputed = entry_hash(entity_id, seq, row["at"], row["actor"], row["kind"], row["document_id"],
                                row["data"], row["prev_hash"])
        if recomputed != row["hash"]:
            breaks.append(ChainBreak(entity_id, seq, "content modified: its hash no longer matches"))
        elif row["prev_hash"] != prev_hash:
            breaks.append(ChainBreak(entity_id, seq, "does not follow the previous entry (inserted, "
                                                     "or the previous entry was modified or deleted)"))
        prev_hash, expected_seq = row["hash"], seq + 1
    if head is not None:
        head_seq = int(head["seq"])
        if head_seq > expected_seq - 1:
            breaks.append(ChainBreak(entity_id, expected_seq,
                                     f"entries #{expected_seq}..#{head_seq} are missing (deleted at the end)"))
        elif head["hash"] != prev_hash and head_seq == expected_seq - 1:
            breaks.append(ChainBreak(entity_id, head_seq, "last entry differs from the recorded chain head"))
        elif head_seq < expected_seq - 1:
            breaks.append(ChainBreak(entity_id, head_seq + 1, "entries after the recorded chain head (inserted)"))
    return breaks


async def verify(tx: Tx, entity_id: str | None = None) -> list[ChainBreak]:
    """Verify one entity's chain, or every chain."""
    if entity_id is None:
        ids = [r["entity_id"] for r in await tx.fetch(
            "SELECT entity_id FROM journal_heads UNION SELECT DISTINCT entity_id FROM journal")]
    else:
        ids = [entity_id]
    breaks: list[ChainBreak] = []
    for eid in sorted(set(ids)):
        rows = await tx.fetch("SELECT * FROM journal WHERE entity_id = $1 ORDER BY seq", eid)
        head = await tx.fetchrow("SELECT seq, hash FROM journal_heads WHERE entity_id = $1", eid)
        breaks.extend(verify_rows(eid, rows, head))
    return breaks


async def document_rows(tx: Tx, document_id: str) -> list[dict[str, Any]]:
    """A document's journal rows (index ``journal_document``), by entity and sequence."""
    return await tx.fetch("SELECT * FROM journal WHERE document_id = $1 ORDER BY entity_id, seq", document_id)


async def for_document(tx: Tx, document_id: str) -> list[JournalEntry]:
    return [row_to_entry(r) for r in await document_rows(tx, document_id)]


_NEIGHBOURS_CHUNK = 400


async def verify_entries(tx: Tx, rows: list[dict[str, Any]]) -> list[ChainBreak]:
    """Check some entries where they sit in their chain, reading only them and their neighbours.

    For each entry: its content gives its hash; it follows its predecessor (the genesis for #1),
    whose own hash is recomputed too; its successor follows it, or, being the last, it is the
    recorded chain head.  Reads two entries per entry at most (by primary key) and the head: the
    cost does not grow with the entity's chain.  What this cannot see — a rewrite carried on
    consistently from an entry to the head — only the whole-chain check (``verify``) can.
    """
    by_entity: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        by_entity.setdefault(row["entity_id"], {})[int(row["seq"])] = row
    breaks: list[ChainBreak] = []
    for entity_id in sorted(by_entity):
        own = by_entity[entity_id]
        head = await tx.fetchrow("SELECT seq, hash FROM journal_heads WHERE entity_id = $1", entity_id)
        head_seq = int(head["seq"]) if head is not None else None
        wanted = sorted({n for s in own for n in (s - 1, s + 1)} - set(own) - {0})
        if head_seq is not None:
            wanted = [n for n in wanted if n <= head_seq]
        known = dict(own)
        for i in range(0, len(wanted), _NEIGHBOURS_CHUNK):
            chunk = wanted[i:i + _NEIGHBOURS_CHUNK]
            marks = ", ".join(f"${j + 2}" for j in range(len(chunk)))
            for r in await tx.fetch(f"SELECT * FROM journal WHERE entity_id = $1 AND seq IN ({marks})",
                                    entity_id, *chunk):
                known[int(r["seq"])] = r
        found: dict[tuple[int, str], None] = {}

        def broken(seq: int, problem: str) -> None:
            found.setdefault((seq, problem))

        def intact(row: dict[str, Any]) -> bool:
            ok = entry_hash(entity_id, int(row["seq"]), row["at"], row["actor"], row["kind"], row["document_id"],
                            row["data"], row["prev_hash"]) == row["hash"]
            if not ok:
                broken(int(row["seq"]), "content modified: its hash no longer matches")
            return ok

        for seq in sorted(own):
            row = own[seq]
            intact(row)
            if seq == 1:
                if row["prev_hash"] != GENESIS:
                    broken(seq, "does not start from the genesis")
            elif (before := known.get(seq - 1)) is None:
                broken(seq - 1, "missing (deleted)")
            elif intact(before) and row["prev_hash"] != before["hash"]:
                broken(seq, "does not follow the previous entry (inserted, or the previous entry was modified "
                            "or deleted)")
            if head_seq is None:
                broken(seq, "no recorded chain head for this entity")
            elif seq > head_seq:
                broken(seq, "after the recorded chain head (inserted)")
            elif seq == head_seq:
                if head["hash"] != row["hash"]:
                    broken(seq, "last entry differs from the recorded chain head")
            elif (after := known.get(seq + 1)) is None:
                broken(seq + 1, "missing (deleted)")
            elif after["prev_hash"] != row["hash"]:
                broken(seq + 1, "does not follow the previous entry (inserted, or the previous entry was modified "
                                "or deleted)")
        breaks.extend(ChainBreak(entity_id, seq, problem) for seq, problem in sorted(found))
    return breaks
