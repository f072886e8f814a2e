"""``/api/v2/journal``: the journal as Pastell lists it, entries named by their Pastell ``id_j`` (and ``id_e``, ``id_u``)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from flowbus.api.auth import visible_entities
from flowbus.connectors.inbound.pastell_v2 import ids, mapping
from flowbus.connectors.inbound.pastell_v2.answers import answer, check, entity, pastell, rt, who
from flowbus.errors import NotFound, ValidationError
from flowbus.store import repo


async def _answer_rows(request: web.Request, rows: list[dict[str, Any]], *, flux_type: str | None = None
                       ) -> list[dict[str, Any]]:
    """Journal rows as Pastell's entries, numbering their entries, entities and authors (oldest first)."""
    runtime = rt(request)
    now = runtime.clock.now()
    doc_ids = sorted({r["document_id"] for r in rows if r["document_id"]})
    async with runtime.store.transaction() as tx:
        flows: dict[str, str] = {}
        for start in range(0, len(doc_ids), 400):
            chunk = doc_ids[start:start + 400]
            marks = ", ".join(f"${i}" for i in range(1, len(chunk) + 1))
            for d in await tx.fetch(f"SELECT id, flow_id FROM documents WHERE id IN ({marks})", *chunk):
                flows[d["id"]] = d["flow_id"]
        entities = await repo.entities_by_ids(tx, {r["entity_id"] for r in rows})
    chronological = sorted(rows, key=lambda r: (r["at"], r["entity_id"], r["seq"]))
    async with runtime.store.transaction() as tx:
        id_j = await ids.numbers(tx, ids.JOURNAL, [f"{r['entity_id']}:{r['seq']}" for r in chronological], now)
        id_e = await ids.numbers(tx, ids.ENTITY, sorted(entities, key=lambda e: (entities[e].created_at, e)), now)
        id_u = await ids.user_numbers_for_actors(tx, [r["actor"] for r in rows], now)
    out = []
    for r in rows:
        flow_id = flows.get(r["document_id"] or "", "")
        doc_type = mapping.for_document(flow_id, runtime.flows).flux if flow_id in runtime.flows else flow_id
        if flux_type and flux_type != doc_type:
            continue
        data = json.loads(r["data"])
        out.append({"id_j": str(id_j[f"{r['entity_id']}:{r['seq']}"]), "type": 1 if r["document_id"] else 3,
                    "id_e": str(id_e.get(r["entity_id"], 0)), "id_u": id_u[r["actor"]],
                    "id_d": r["document_id"] or "0",
                    "action": data.get("action") or data.get("to") or r["kind"], "message": _message(r, data),
                    "date": r["at"], "document_type": doc_type,
                    "denomination": entities[r["entity_id"]].name if r["entity_id"] in entities else "",
                    "preuve": r["hash"], "date_horodatage": r["at"], "message_horodate": r["prev_hash"]})
    return out


async def get_journal(request: web.Request) -> web.Response:
    runtime = rt(request)
    q = request.query
    try:
        offset, limit = max(0, int(q.get("offset", "0"))), max(1, min(int(q.get("limit", "100")), 1000))
    except ValueError:
        raise ValidationError("offset et limit doivent être des nombres", field="limit") from None
    sql, args = "SELECT * FROM journal WHERE 1 = 1", []
    if q.get("id_e") and q["id_e"] != ids.ROOT:
        id_e = await entity(request, q["id_e"])
        await check(request, id_e, "journal:lecture")
        args.append(id_e)
        sql += f" AND entity_id = ${len(args)}"
    else:
        visible = await visible_entities(runtime, who(request))
        if visible is not None:
            if not visible:
                return answer([])
            marks = []
            for e in visible:
                args.append(e)
                marks.append(f"${len(args)}")
            sql += f" AND entity_id IN ({', '.join(marks)})"
    if q.get("id_d"):
        args.append(q["id_d"])
        sql += f" AND document_id = ${len(args)}"
    if q.get("date_debut"):
        args.append(q["date_debut"])
        sql += f" AND at >= ${len(args)}"
    if q.get("date_fin"):
        args.append(q["date_fin"] + "T23:59:59.999999Z" if len(q["date_fin"]) == 10 else q["date_fin"])
        sql += f" AND at <= ${len(args)}"
    args.extend([limit, offset])
    sql += f" ORDER BY at DESC, entity_id, seq DESC LIMIT ${len(args) - 1} OFFSET ${len(args)}"
    async with runtime.store.transaction() as tx:
        rows = await tx.fetch(sql, *args)
    return answer(await _answer_rows(request, rows, flux_type=q.get("type")))


async def get_journal_entry(request: web.Request) -> web.Response:
    """One entry by its Pastell ``id_j`` (or our ``<entity>:<seq>``)."""
    ref = request.match_info["id_j"]
    runtime = rt(request)
    num = ids.parse(ref)
    async with runtime.store.transaction() as tx:
        ours = await ids.ours_of(tx, ids.JOURNAL, num) if num is not None else ref
        entity_id, _, seq = (ours or "").rpartition(":")
        row = await tx.fetchrow("SELECT * FROM journal WHERE entity_id = $1 AND seq = $2", entity_id,
                                int(seq)) if entity_id and seq.isdigit() else None
    if row is None:
        raise NotFound(f"L'entrée {ref} du journal n'existe pas")
    await check(request, entity_id, "journal:lecture")
    return answer((await _answer_rows(request, [row]))[0])


def _message(row: dict[str, Any], data: dict[str, Any]) -> str:
    kind = row["kind"]
    if kind == "state.changed":
        return f"État : {data.get('from')} → {data.get('to')}" + (f" ({data['reason']})" if data.get("reason") else "")
    if kind == "file.added":
        return f"Fichier ajouté au champ {data.get('field')} : {data.get('filename')}"
    if kind == "fields.changed":
        return "Modification du document : " + ", ".join(data.get("fields", []))
    if kind == "document.created":
        return "Création du document"
    return data.get("message") or kind


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v2/journal", pastell(get_journal))
    app.router.add_get("/api/v2/journal/{id_j}", pastell(get_journal_entry))
