"""Console: the journal searched by collectivité, document, actor, event and dates, the chain checked on demand, exported as CSV."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from flowbus import journal
from flowbus.errors import FlowbusError, ValidationError
from flowbus.journal_search import Query, cursor, search
from flowbus.people.audit import PLATFORM
from flowbus.store import repo
from flowbus.web import console
from flowbus.web.journal_labels import LABELS, actor as actor_words, label, sentence

BASE = "/admin/journal"
PAGE = 50
CSV_PAGE = 1000


def _date(value: str, field: str, *, end: bool = False) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"Date invalide « {value} » : attendu AAAA-MM-JJ.", field=field) from None
    if day.tzinfo is None:
        day = day.replace(tzinfo=UTC)
    return day + timedelta(days=1) if end else day


async def _query(request: web.Request, who: Any) -> tuple[Query, list[str] | None]:
    """The search the page's parameters ask for, and the entities the person may read (None: all)."""
    q = request.query
    administered = await console.administered_entities(request, who)
    entity = q.get("entity") or None
    if entity and entity != PLATFORM:
        rt = console.runtime(request)
        async with rt.store.transaction() as tx:
            found = await repo.entity_by_siren(tx, entity.replace(" ", "")) or await repo.find_entity(tx, entity)
        if found is None:
            raise ValidationError(f"Aucune collectivité de SIREN ou d'identifiant « {entity} ».", field="entity")
        entity = found.id
    if entity == PLATFORM and not who.is_platform_admin:
        raise ValidationError("Le journal de la plateforme est réservé à ses administrateurs.", field="entity")
    if entity and entity != PLATFORM and administered is not None and entity not in administered:
        raise ValidationError("Vous n'administrez pas cette collectivité.", field="entity")
    query = Query(entity_id=entity, document_id=(q.get("document") or "").strip() or None,
                  actor=(q.get("actor") or "").strip() or None, kind=(q.get("kind") or "").strip() or None,
                  since=_date(q.get("from", ""), "from"), until=_date(q.get("to", ""), "to", end=True),
                  admin_only=bool(q.get("admin")) or not (entity or q.get("document")))
    return query, administered


def _entity_refs(data: dict[str, Any]) -> set[str]:
    """Values of an entry's data that name an entity (``entity``, ``parent``), also inside before/after."""
    out = set()
    for key, value in data.items():
        if key in ("entity", "parent") and isinstance(value, str):
            out.add(value)
        elif isinstance(value, dict):
            out |= _entity_refs(value)
    return out


def _after(value: str | None) -> tuple[str, str, int] | None:
    if not value:
        return None
    try:
        at, entity, seq = json.loads(base64.urlsafe_b64decode(value.encode()))
        return str(at), str(entity), int(seq)
    except (ValueError, TypeError):
        return None


def _encode(c: tuple[str, str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(c)).encode()).decode()


async def page(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    if not console.is_entity_admin(who):
        raise console.forbid(request, who, "Le journal est réservé aux administrateurs.")
    rt = console.runtime(request)
    error, entries, next_url, chain = None, [], None, None
    q = request.query
    try:
        query, administered = await _query(request, who)
        async with rt.store.transaction() as tx:
            entries = await search(tx, query, after=_after(q.get("apres")), limit=PAGE + 1, entity_ids=administered)
            if q.get("verifier") and query.entity_id:
                breaks = await journal.verify(tx, query.entity_id)
                count = await tx.fetchval("SELECT seq FROM journal_heads WHERE entity_id = $1", query.entity_id)
                chain = {"ok": not breaks, "count": int(count or 0), "breaks": breaks[:20]}
            mentioned = {e.entity_id for e in entries} | {v for e in entries for v in _entity_refs(e.data)}
            names = {i: e.name for i, e in (await repo.entities_by_ids(tx, mentioned)).items()}
            names[PLATFORM] = "Plateforme"
            entity_name = names.get(query.entity_id or "") or (
                e.name if query.entity_id and (e := await repo.find_entity(tx, query.entity_id)) else None)
    except FlowbusError as exc:
        error, query, names, entity_name = exc.message, None, {}, None
    if len(entries) > PAGE:
        entries = entries[:PAGE]
        params = {k: v for k, v in q.items() if k not in ("apres", "verifier", "message", "error")}
        params["apres"] = _encode(cursor(entries[-1]))
        next_url = f"{BASE}?{urlencode(params)}"
    export = {k: v for k, v in q.items() if k not in ("apres", "verifier", "message", "error")}
    rows = [{"e": e, "label": label(e.kind), "actor": actor_words(e.actor), "details": sentence(e.data, names)}
            for e in entries]
    return await console.page(request, "console_journal.html", who=who, rows=rows, query=q, error=error,
                              names=names, next_url=next_url, chain=chain, entity_name=entity_name,
                              entity_id=query.entity_id if query else None, kinds=sorted(LABELS.items(),
                                                                                        key=lambda kv: kv[1]),
                              csv_url=f"{BASE}.csv?{urlencode(export)}")


async def export_csv(request: web.Request) -> web.StreamResponse:
    """The whole search as CSV (« ; », UTF-8 with BOM for spreadsheets), streamed a page at a time."""
    who = await console.signed_in(request)
    if not console.is_entity_admin(who):
        raise console.forbid(request, who, "Le journal est réservé aux administrateurs.")
    rt = console.runtime(request)
    try:
        query, administered = await _query(request, who)
        query.check()
    except FlowbusError as exc:
        raise console.failed(BASE, exc.message) from None
    stamp = rt.clock.now().strftime("%Y%m%d-%H%M")
    resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                       "Content-Disposition": f'attachment; filename="journal-{stamp}.csv"'})
    await resp.prepare(request)
    buf = io.StringIO()
    out = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    out.writerow(["date (UTC)", "collectivité", "acteur", "événement", "type", "document", "données", "empreinte"])
    await resp.write(("\ufeff" + buf.getvalue()).encode("utf-8"))
    after = None
    names: dict[str, str] = {PLATFORM: "Plateforme"}
    while True:
        async with rt.store.transaction() as tx:
            batch = await search(tx, query, after=after, limit=CSV_PAGE, entity_ids=administered)
            missing = {e.entity_id for e in batch} - set(names)
            names.update({i: e.name for i, e in (await repo.entities_by_ids(tx, missing)).items()})
        if not batch:
            break
        buf.seek(0)
        buf.truncate()
        for e in batch:
            out.writerow([e.at.strftime("%Y-%m-%d %H:%M:%S"), names.get(e.entity_id, e.entity_id), e.actor,
                          label(e.kind), e.kind, e.document_id or "", json.dumps(e.data, ensure_ascii=False),
                          e.hash])
        await resp.write(buf.getvalue().encode("utf-8"))
        if len(batch) < CSV_PAGE:
            break
        after = cursor(batch[-1])
    await resp.write_eof()
    return resp


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get(BASE, page)
    app.router.add_get(BASE + ".csv", export_csv)

