"""``GET /api/v2/document/count``: documents per entity, flux and Pastell state, counted by index ranges, never by reading a table.

Two answers, as Pastell's ``DocumentCount``:

* ``output=detail`` (default): ``{id_e: {"flux": {flux: {last_action: count}}, "info": {entity}}}``
  for the entities where the caller may read something (``id_e`` and ``type`` narrow it), each flux
  the caller may read there listed, ``{}`` when it has no document;
* ``output=simple``: ``{"count": n}`` for one entity and one flux (both required), the other query
  parameters being field filters as Pastell's indexed fields (``numero_de_lacte=DEL2026_012``; ``%``
  matches any text, as in Pastell's ``LIKE``).

Each (entity, flow, state) is one range of the index ``documents_entity_flow_state`` read newest
first and stopped after ``CAP`` documents (the bounded pattern of ``repo.count_documents_by_state``):
a count never goes past ``CAP + 1``.  The Pastell state of a document needs its current step and,
once a step is over, its last step done (``laststate``): both are read for the documents of the range
only (the document row, then ``step_states`` by primary key), inside the same bounded statement.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

from aiohttp import web

from flowbus.api.auth import visible_entities
from flowbus.connectors.inbound.pastell_v2 import ids, mapping
from flowbus.connectors.inbound.pastell_v2.answers import (allowed, answer, check, entity, entity_numbers,
                                                           pastell, rt, who)
from flowbus.errors import ValidationError
from flowbus.store import repo, textsearch
from flowbus.store.base import Tx

CAP = 10_000
BASE_STATES = ("draft", "running", "waiting", "error", "done", "cancelled")


def _states(flow: Any) -> list[str]:
    named = [s for s in (getattr(flow, "states", None) or {}) if s not in BASE_STATES]
    return [*BASE_STATES, *named]


async def count_flow(tx: Tx, flux: mapping.ResolvedFlux, entity_id: str, *, cap: int = CAP) -> dict[str, int]:
    """Pastell ``last_action`` → number of the entity's documents of the flux's flow (each state capped)."""
    flow = flux.flow
    steps = mapping.pastell_steps(flow)
    args: list[Any] = [entity_id, flow.id, cap + 1]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    order = " ".join(f"WHEN {arg(s)} THEN {i}" for i, s in enumerate(steps, 1))
    last = (f"(SELECT MAX(CASE s.step {order} ELSE 0 END) FROM step_states s WHERE s.document_id = d.id "
            "AND s.status = 'done')") if steps else "0"
    parts = []
    for state in _states(flow):
        parts.append(
            f"SELECT d.state AS state, d.step AS step, CASE WHEN d.version <= 1 THEN 1 ELSE 0 END AS fresh, "
            f"{last} AS last, 1 AS one FROM (SELECT id, state, step, version FROM documents "
            f"WHERE entity_id = $1 AND flow_id = $2 AND state = {arg(state)} "
            f"ORDER BY created_at DESC, id DESC LIMIT $3) AS d")
    sql = (f"SELECT state, step, fresh, last, COUNT(*) AS n FROM ({' UNION ALL '.join(parts)}) AS t "
           "GROUP BY state, step, fresh, last")
    out: dict[str, int] = {}
    for r in await tx.fetch(sql, *args):
        done_step = steps[int(r["last"]) - 1] if r["last"] else None
        doc = SimpleNamespace(state=r["state"], step=r["step"], version=1 if r["fresh"] else 2)
        action = mapping.last_action_for(flux, doc, done_step)
        out[action] = out.get(action, 0) + int(r["n"])
    return out


async def _detail(request: web.Request) -> dict[str, Any]:
    runtime = rt(request)
    q = request.query
    if q.get("id_e") and q["id_e"] != ids.ROOT:
        id_e = await entity(request, q["id_e"])
        await check(request, id_e, "entite:lecture")
        wanted = [id_e]
    else:
        visible = await visible_entities(runtime, who(request))
        async with runtime.store.transaction() as tx:
            wanted = [e.id for e in await repo.list_entities(tx)] if visible is None else list(visible)
    if q.get("type"):
        fluxes = [mapping.resolve_any(q["type"], runtime.flows)]
    else:
        fluxes = [mapping.for_document(f, runtime.flows) for f in sorted(runtime.flows)]
    counted: dict[str, dict[str, dict[str, int]]] = {}
    for entity_id in wanted:
        readable = [f for f in fluxes if await allowed(request, entity_id, f"{f.flux}:lecture", f.flow.id)]
        if not readable:
            continue
        async with runtime.store.transaction() as tx:
            counted[entity_id] = {f.flux: await count_flow(tx, f, entity_id) for f in readable}
    nums = await entity_numbers(request, counted)
    async with runtime.store.transaction() as tx:
        found = await repo.entities_by_ids(tx, list(counted))
    parents = await entity_numbers(request, [e.parent_id for e in found.values()])
    out: dict[str, Any] = {}
    for entity_id, by_flux in counted.items():
        e = found.get(entity_id)
        if e is None:
            continue
        out[nums[entity_id]] = {"flux": by_flux, "info": {
            "id_e": nums[entity_id], "type": "collectivite", "denomination": e.name, "siren": e.siren or "",
            "date_inscription": e.created_at.strftime("%Y-%m-%d %H:%M:%S"), "etat": "0",
            "entite_mere": parents[e.parent_id or ids.ROOT], "centre_de_gestion": "0",
            "is_active": "1" if e.active else "0"}}
    return out


def _matches(value: Any, wanted: str) -> bool:
    """Pastell's ``field_value LIKE ?``: case-insensitive, ``%`` any text, ``_`` one character."""
    text = "" if value is None else (", ".join(map(str, value)) if isinstance(value, list) else str(value))
    pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in wanted)
    return re.fullmatch(pattern, text, flags=re.IGNORECASE | re.DOTALL) is not None


async def _simple(request: web.Request) -> dict[str, Any]:
    runtime = rt(request)
    q = request.query
    if not q.get("id_e") or not q.get("type"):
        raise ValidationError("Les paramètres id_e et type sont obligatoires.", field="id_e")
    id_e = await entity(request, q["id_e"])
    await check(request, id_e, "entite:lecture")
    flux = mapping.resolve_any(q["type"], runtime.flows)
    await check(request, id_e, f"{flux.flux}:lecture", flux.flow.id)
    filters = {k: v for k, v in q.items() if k not in ("id_e", "type", "output", "api_function")}
    ours = {k: flux.our_field(k) for k in filters}
    args: list[Any] = [id_e, flux.flow.id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    sql = "SELECT fields FROM documents WHERE entity_id = $1 AND flow_id = $2"
    text = textsearch.condition(runtime.store.dialect, "documents",
                                " ".join(v.replace("%", " ") for v in filters.values()), arg)
    if text is not None:
        sql += f" AND {text}"
    sql += f" LIMIT {arg(CAP + 1)}"
    async with runtime.store.transaction() as tx:
        if not filters:
            n = await tx.fetchval("SELECT COUNT(*) FROM (SELECT 1 FROM documents WHERE entity_id = $1 AND flow_id = $2 "
                                  "LIMIT $3) AS capped", id_e, flux.flow.id, CAP + 1)
            return {"count": int(n)}
        rows = await tx.fetch(sql, *args)
    n = 0
    for r in rows:
        fields = json.loads(r["fields"])
        if all(ours[k] is not None and _matches(flux.value_out(ours[k], fields.get(ours[k])), v)
               for k, v in filters.items()):
            n += 1
    return {"count": n}


async def get_count(request: web.Request) -> web.Response:
    if request.query.get("output", "detail") == "simple":
        return answer(await _simple(request))
    return answer(await _detail(request))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v2/document/count", pastell(get_count))
