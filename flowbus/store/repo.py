"""Repositories over a Tx: entities, API keys, documents and their files (portable SQL)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from flowbus.clock import isoformat, parse_iso
from flowbus.errors import Conflict, NotFound
from flowbus.models import ApiKey, Document, Entity, FileRef
from flowbus.store import textsearch
from flowbus.store.base import Tx, Where

# ---- entities --------------------------------------------------------------------------------


def _entity(row: dict[str, Any]) -> Entity:
    return Entity(row["id"], row["name"], row["siren"], row["parent_id"], parse_iso(row["created_at"]),
                  bool(row.get("active", 1)))


async def insert_entity(tx: Tx, entity: Entity) -> None:
    await tx.execute("INSERT INTO entities (id, name, siren, parent_id, created_at) VALUES ($1, $2, $3, $4, $5)",
                     entity.id, entity.name, entity.siren, entity.parent_id, isoformat(entity.created_at))


async def get_entity(tx: Tx, entity_id: str) -> Entity:
    row = await tx.fetchrow("SELECT * FROM entities WHERE id = $1", entity_id)
    if row is None:
        raise NotFound(f"entity {entity_id!r} does not exist", field="entity")
    return _entity(row)


async def find_entity(tx: Tx, entity_id: str) -> Entity | None:
    row = await tx.fetchrow("SELECT * FROM entities WHERE id = $1", entity_id)
    return None if row is None else _entity(row)


async def list_entities(tx: Tx) -> list[Entity]:
    return [_entity(r) for r in await tx.fetch("SELECT * FROM entities ORDER BY name, id")]


async def entities_by_ids(tx: Tx, entity_ids: list[str] | set[str]) -> dict[str, Entity]:
    """The named entities in one statement (id → entity); unknown ids are left out."""
    ids = sorted(set(entity_ids))
    if not ids:
        return {}
    out: dict[str, Entity] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        ph = ", ".join(f"${i}" for i in range(1, len(chunk) + 1))
        for r in await tx.fetch(f"SELECT * FROM entities WHERE id IN ({ph})", *chunk):
            out[r["id"]] = _entity(r)
    return out


async def children(tx: Tx, parent_id: str | None, *, limit: int = 200, after_name: str | None = None) -> list[Entity]:
    """Entities directly under ``parent_id`` (None: top level), by name, a page at a time."""
    args: list[Any] = []
    where = "parent_id IS NULL" if parent_id is None else "parent_id = $1"
    if parent_id is not None:
        args.append(parent_id)
    if after_name is not None:
        args.append(after_name)
        where += f" AND name > ${len(args)}"
    args.append(limit)
    rows = await tx.fetch(f"SELECT * FROM entities WHERE {where} ORDER BY name, id LIMIT ${len(args)}", *args)
    return [_entity(r) for r in rows]


async def child_counts(tx: Tx, parent_ids: list[str]) -> dict[str, int]:
    if not parent_ids:
        return {}
    ph = ", ".join(f"${i}" for i in range(1, len(parent_ids) + 1))
    rows = await tx.fetch(f"SELECT parent_id, COUNT(*) AS n FROM entities WHERE parent_id IN ({ph}) GROUP BY parent_id",
                          *parent_ids)
    return {r["parent_id"]: int(r["n"]) for r in rows}


async def find_entities(tx: Tx, text: str, *, within: list[str] | None, limit: int = 50) -> list[Entity]:
    """Entities whose name contains ``text`` or whose SIREN is ``text`` (``within``: only those ids)."""
    args: list[Any] = ["%" + text.strip().lower() + "%", text.strip()]
    where = "(LOWER(name) LIKE $1 OR siren = $2)"
    if within is not None:
        if not within:
            return []
        where += f" AND id IN ({', '.join(f'${i}' for i in range(3, len(within) + 3))})"
        args.extend(within)
    args.append(limit)
    rows = await tx.fetch(f"SELECT * FROM entities WHERE {where} ORDER BY name, id LIMIT ${len(args)}", *args)
    return [_entity(r) for r in rows]


async def update_entity(tx: Tx, entity_id: str, *, name: str, siren: str | None, parent_id: str | None,
                        active: bool) -> None:
    await tx.execute("UPDATE entities SET name = $2, siren = $3, parent_id = $4, active = $5 WHERE id = $1",
                     entity_id, name, siren, parent_id, 1 if active else 0)


async def entity_by_siren(tx: Tx, siren: str) -> Entity | None:
    row = await tx.fetchrow("SELECT * FROM entities WHERE siren = $1", siren)
    return None if row is None else _entity(row)


async def ancestors(tx: Tx, entity_id: str) -> list[str]:
    """The entity id followed by its parents up to the root, in one recursive statement."""
    rows = await tx.fetch(
        "WITH RECURSIVE up(id, parent_id, depth) AS ("
        " SELECT id, parent_id, 0 FROM entities WHERE id = $1"
        " UNION ALL SELECT e.id, e.parent_id, up.depth + 1 FROM entities e JOIN up ON e.id = up.parent_id"
        " WHERE up.depth < 64)"
        " SELECT id FROM up ORDER BY depth", entity_id)
    return [r["id"] for r in rows]


async def subtree(tx: Tx, roots: list[str]) -> list[str]:
    """The given entities and every entity below them (by the ``entities_parent`` index)."""
    if not roots:
        return []
    placeholders = ", ".join(f"${i}" for i in range(1, len(roots) + 1))
    rows = await tx.fetch(
        "WITH RECURSIVE down(id, depth) AS ("
        f" SELECT id, 0 FROM entities WHERE id IN ({placeholders})"
        " UNION ALL SELECT e.id, down.depth + 1 FROM entities e JOIN down ON e.parent_id = down.id"
        " WHERE down.depth < 64)"
        " SELECT DISTINCT id FROM down", *roots)
    return [r["id"] for r in rows]


# ---- API keys --------------------------------------------------------------------------------


def _key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(row["id"], row["name"], json.loads(row["roles"]), parse_iso(row["created_at"]),
                  parse_iso(row["revoked_at"]) if row["revoked_at"] else None)


async def insert_api_key(tx: Tx, key: ApiKey, key_hash: str) -> None:
    await tx.execute("INSERT INTO api_keys (id, name, key_hash, roles, created_at) VALUES ($1, $2, $3, $4, $5)",
                     key.id, key.name, key_hash, json.dumps(key.roles), isoformat(key.created_at))


async def api_key_by_hash(tx: Tx, key_hash: str) -> ApiKey | None:
    row = await tx.fetchrow("SELECT * FROM api_keys WHERE key_hash = $1", key_hash)
    return None if row is None else _key(row)


async def get_api_key(tx: Tx, key_id: str) -> ApiKey:
    row = await tx.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
    if row is None:
        raise NotFound(f"API key {key_id!r} does not exist", field="id")
    return _key(row)


async def list_api_keys(tx: Tx) -> list[ApiKey]:
    return [_key(r) for r in await tx.fetch("SELECT * FROM api_keys ORDER BY created_at")]


async def revoke_api_key(tx: Tx, key_id: str, at: datetime) -> None:
    if not await tx.execute("UPDATE api_keys SET revoked_at = $2 WHERE id = $1", key_id, isoformat(at)):
        raise NotFound(f"API key {key_id!r} does not exist", field="id")


# ---- documents -------------------------------------------------------------------------------


def search_text(fields: dict[str, Any]) -> str:
    """The document's words as its text index holds them (flowbus.store.textsearch)."""
    return textsearch.folded(fields.values())


def _file(row: dict[str, Any]) -> FileRef:
    return FileRef(row["document_id"], row["field"], int(row["idx"]), row["filename"], row["media_type"],
                   int(row["size"]), row["sha256"], row["blob_key"], parse_iso(row["created_at"]))


def _document(row: dict[str, Any], files: list[FileRef]) -> Document:
    return Document(row["id"], row["entity_id"], row["flow_id"], row["state"], json.loads(row["fields"]),
                    int(row["version"]), parse_iso(row["created_at"]), parse_iso(row["updated_at"]),
                    row["step"], row["last_error"], tuple(files), row["flow_version"])


async def insert_document(tx: Tx, doc: Document) -> None:
    await tx.execute(
        "INSERT INTO documents (id, entity_id, flow_id, state, step, last_error, fields, search_text, version, "
        "created_at, updated_at, flow_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        doc.id, doc.entity_id, doc.flow_id, doc.state, doc.step, doc.last_error, json.dumps(doc.fields),
        search_text(doc.fields), doc.version, isoformat(doc.created_at), isoformat(doc.updated_at), doc.flow_version)


async def documents_by_ids(tx: Tx, document_ids: list[str]) -> dict[str, Document]:
    """The named documents without their files (id → document), 500 ids per statement; unknown ids left out."""
    ids = sorted(set(document_ids))
    out: dict[str, Document] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        ph = ", ".join(f"${i}" for i in range(1, len(chunk) + 1))
        for r in await tx.fetch(f"SELECT * FROM documents WHERE id IN ({ph})", *chunk):
            out[r["id"]] = _document(r, [])
    return out


async def get_document(tx: Tx, document_id: str, *, with_files: bool = True) -> Document:
    if with_files:
        return (await document_and_row(tx, document_id))[0]
    row = await tx.fetchrow("SELECT * FROM documents WHERE id = $1", document_id)
    if row is None:
        raise NotFound(f"document {document_id!r} does not exist", field="id")
    return _document(row, [])


async def document_and_row(tx: Tx, document_id: str) -> tuple[Document, dict[str, Any]]:
    """The document with its files and its stored row (``version``, ``step_seq``…), in one statement."""
    rows = await _document_with_files_rows(tx, document_id)
    doc = document_from_joined_rows(rows)
    if doc is None:
        raise NotFound(f"document {document_id!r} does not exist", field="id")
    return doc, rows[0]


def document_from_row(row: dict[str, Any], files: list[FileRef]) -> Document:
    return _document(row, files)


# The columns and join that read a document with its files in one statement (``document_with_files``):
# one row per file (one row with NULL file columns when it has none), ordered by field and index.
DOCUMENT_WITH_FILES_COLUMNS = (
    "d.*, f.field AS f_field, f.idx AS f_idx, f.filename AS f_filename, f.media_type AS f_media_type, "
    "f.size AS f_size, f.sha256 AS f_sha256, f.blob_key AS f_blob_key, f.created_at AS f_created_at")
DOCUMENT_FILES_JOIN = "LEFT JOIN document_files f ON f.document_id = d.id"


def document_from_joined_rows(rows: list[dict[str, Any]]) -> Document | None:
    """The document of rows read with ``DOCUMENT_WITH_FILES_COLUMNS`` (None when there are none)."""
    if not rows:
        return None
    document_id = rows[0]["id"]
    files = [FileRef(document_id, r["f_field"], int(r["f_idx"]), r["f_filename"], r["f_media_type"], int(r["f_size"]),
                     r["f_sha256"], r["f_blob_key"], parse_iso(r["f_created_at"]))
             for r in rows if r["f_field"] is not None]
    return _document(rows[0], files)


async def document_with_files(tx: Tx, document_id: str) -> Document | None:
    """The document and its files, read in one statement (one round trip on a server database)."""
    return document_from_joined_rows(await _document_with_files_rows(tx, document_id))


async def _document_with_files_rows(tx: Tx, document_id: str) -> list[dict[str, Any]]:
    return await tx.fetch(f"SELECT {DOCUMENT_WITH_FILES_COLUMNS} FROM documents d {DOCUMENT_FILES_JOIN} "
                          "WHERE d.id = $1 ORDER BY f.field, f.idx", document_id)


async def document_row(tx: Tx, document_id: str) -> dict[str, Any]:
    row = await tx.fetchrow("SELECT * FROM documents WHERE id = $1", document_id)
    if row is None:
        raise NotFound(f"document {document_id!r} does not exist", field="id")
    return row


async def update_document(tx: Tx, doc: Document, *, expected_version: int, at: datetime,
                          step_seq: int | None = None) -> Document:
    """Write state/step/fields/last_error if the stored version is still ``expected_version``.

    Raises:
        Conflict: someone else changed the document in between (optimistic concurrency).
    """
    new_version = expected_version + 1
    seq_sql, args = "", [doc.id, expected_version, doc.state, doc.step, doc.last_error, json.dumps(doc.fields),
                         search_text(doc.fields), new_version, isoformat(at)]
    if step_seq is not None:
        seq_sql = ", step_seq = $10"
        args.append(step_seq)
    changed = await tx.execute(
        "UPDATE documents SET state = $3, step = $4, last_error = $5, fields = $6, search_text = $7, version = $8, "
        f"updated_at = $9{seq_sql} WHERE id = $1 AND version = $2", *args)
    if not changed:
        raise Conflict(f"document {doc.id} was modified concurrently (expected version {expected_version})",
                       expected_version=expected_version, hint="read the document again and retry")
    return Document(doc.id, doc.entity_id, doc.flow_id, doc.state, doc.fields, new_version, doc.created_at, at,
                    doc.step, doc.last_error, doc.files, doc.flow_version)


async def list_files(tx: Tx, document_id: str) -> list[FileRef]:
    rows = await tx.fetch("SELECT * FROM document_files WHERE document_id = $1 ORDER BY field, idx", document_id)
    return [_file(r) for r in rows]


async def put_file(tx: Tx, ref: FileRef, *, replace: bool) -> FileRef:
    """Attach a file: ``replace`` drops the field's existing files first; otherwise append."""
    if replace:
        await tx.execute("DELETE FROM document_files WHERE document_id = $1 AND field = $2", ref.document_id, ref.field)
        index = 0
    else:
        index = int(await tx.fetchval("SELECT COALESCE(MAX(idx) + 1, 0) FROM document_files "
                                      "WHERE document_id = $1 AND field = $2", ref.document_id, ref.field))
    await tx.execute(
        "INSERT INTO document_files (document_id, field, idx, filename, media_type, size, sha256, blob_key, "
        "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ref.document_id, ref.field, index, ref.filename, ref.media_type, ref.size, ref.sha256, ref.blob_key,
        isoformat(ref.created_at))
    return FileRef(ref.document_id, ref.field, index, ref.filename, ref.media_type, ref.size, ref.sha256,
                   ref.blob_key, ref.created_at)


async def search_documents(tx: Tx, *, entity_ids: list[str] | None, flow: str | None,
                           state: str | tuple[str, ...] | None,
                           since: datetime | None, until: datetime | None, q: str | None,
                           limit: int, after: tuple[str, str] | None, scope: Any = None,
                           newest_first: bool = False) -> list[Document]:
    """Keyset pagination on (created_at, id); ``scope`` (flowbus.people.access.Scope) limits to what a caller may read.

    Each combination of filters reads one index of migration 074 in the order shown (checked by
    tests/core/test_document_list_plans.py); a text query reads its matches from the text index."""
    if entity_ids is not None and not entity_ids:
        return []
    w = _document_filters(scope=scope, entity_ids=entity_ids, flow=flow, state=state, since=since, until=until, q=q,
                          dialect=tx.dialect)
    if after:  # one index range: a row comparison, never an OR that the planners cannot bound
        w.add(f"(created_at, id) {'<' if newest_first else '>'} ({{}}, {{}})", after[0], after[1])
    order = "created_at DESC, id DESC" if newest_first else "created_at, id"
    sql = f"SELECT * FROM documents {w.sql} ORDER BY {order} LIMIT {w.arg(limit)}"
    args = w.args
    rows = await tx.fetch(sql, *args)
    return [_document(r, []) for r in rows]


def _document_filters(*, scope: Any, entity_ids: list[str] | None, flow: str | None,
                      state: str | tuple[str, ...] | None,
                      since: datetime | None, until: datetime | None, q: str | None, dialect: str) -> Where:
    w = Where()
    if scope is not None:
        cond = scope.sql(w.arg)
        if cond is not None:
            w.clauses.append(cond)
    if entity_ids is not None:
        w.add_in("entity_id", entity_ids)
    if flow:
        w.add("flow_id = {}", flow)
    if isinstance(state, tuple):  # several states (e.g. every refusal state the flows name)
        w.add_in("state", list(state))
    elif state:
        w.add("state = {}", state)
    if since:
        w.add("created_at >= {}", isoformat(since))
    if until:
        w.add("created_at < {}", isoformat(until))
    text = textsearch.condition(dialect, "documents", q, w.arg)
    if text is not None:
        w.clauses.append(text)
    return w


async def count_documents_by_state(tx: Tx, states: Iterable[str] | dict[str, tuple[str, ...]], *, scope: Any,
                                   entity_ids: list[str] | None, flow: str | None, since: datetime | None,
                                   until: datetime | None, cap: int) -> dict[str, int]:
    """How many documents in each state, each count stopping at ``cap + 1`` (shown as « plus de cap »):
    one bounded index range per state (documents_state_entity, documents_state_created), never a count of the
    whole table.
    ``states`` may map a name to several stored states (every refusal state the flows name)."""
    groups = dict(states) if isinstance(states, dict) else {s: (s,) for s in states}
    if entity_ids is not None and not entity_ids:
        return dict.fromkeys(groups, 0)
    w = _document_filters(scope=scope, entity_ids=entity_ids, flow=flow, state=None, since=since, until=until, q=None,
                          dialect=tx.dialect)
    limit = w.arg(cap + 1)
    # One state within one entity or all: its newest cap + 1, read in the order of its index.  Without the
    # order PostgreSQL may prefer a scan of the table that it expects to stop early — which it does not
    # when the state's documents are the newest (running, error), at the end of the table.
    single_range = (entity_ids is None or len(entity_ids) == 1) and (scope is None or scope.everything)
    parts = []
    for name, stored in groups.items():
        label = w.arg(name)
        where = " AND ".join([*w.clauses, f"state IN ({', '.join(w.arg(s) for s in stored)})"])
        order = " ORDER BY created_at DESC" if single_range and len(stored) == 1 else ""
        parts.append(f"SELECT CAST({label} AS TEXT) AS state, (SELECT COUNT(*) FROM (SELECT 1 FROM documents "
                     f"WHERE {where}{order} LIMIT {limit}) AS capped) AS n")
    rows = await tx.fetch(" UNION ALL ".join(parts), *w.args)
    return {r["state"]: int(r["n"]) for r in rows}
