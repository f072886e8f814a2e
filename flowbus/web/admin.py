"""Administrator console (French): documents by state, newest first; a document's fields, files and journal; recovery actions.

Signed-in people only (``flowbus.web.session``); every page asks ``flowbus.people.access`` for the
person's role on the document's entity and flow, exactly as the API does.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

from aiohttp import web

from flowbus import batches, documents, journal
from flowbus.api import RUNTIME
from flowbus.api.auth import document_scope
from flowbus.clock import isoformat
from flowbus.errors import FlowbusError, NotFound
from flowbus.people import access
from flowbus.store import repo
from flowbus.web import (console, document_annulation, document_list, document_mailsec, document_pes, document_route,
                         french, headers, journal_labels)

STATE_LABELS = {"draft": "Brouillon", "running": "En cours", "waiting": "En attente", "error": "En erreur",
                "done": "Terminé", "cancelled": "Annulé", "rejected": "Refusé"}
ACTION_LABELS = {"retry": "Relancer l'étape", "skip": "Passer l'étape", "resume": "Reprendre",
                 "cancel": "Annuler le document", "start": "Démarrer"}
PAGE_SIZE = 50


def _cursor(doc: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([isoformat(doc.created_at), doc.id]).encode()).decode()


def _after(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    try:
        created, doc_id = json.loads(base64.urlsafe_b64decode(value.encode()))
        return str(created), str(doc_id)
    except (ValueError, TypeError):
        return None


def document_title(doc: Any, flows: Any = None) -> str:
    """What people call a document: its title or object, else its flow's list columns, else its date."""
    named = doc.fields.get("title") or doc.fields.get("objet") or doc.fields.get("libelle")
    if named:
        return str(named)
    flow = flows.get(doc.flow_id) if flows else None
    if flow is not None and flow.columns:
        values = [french.field_value(flow.field(c), doc.fields.get(c)) for c in flow.columns]
        shown = [v for v in values if v]
        if shown:
            return f"{flow.label} — " + " · ".join(shown)
    return f"Document du {french.datetime_fr(doc.created_at)}"


COUNT_CAP = 1000  # counts by state stop there: « plus de 1 000 »


async def dashboard(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    who = await console.signed_in(request)
    scope = await document_scope(rt, who)
    q = request.query
    f = document_list.parse(q, rt.flows)
    visible = scope.entity_ids
    async with rt.store.transaction() as tx:
        if visible is None or len(visible) > 200:
            entities = []  # too many to list: the filter takes a name
        else:
            entities = sorted((await repo.entities_by_ids(tx, visible)).values(), key=lambda e: e.name)
        docs = await repo.search_documents(tx, **f.search(scope), limit=PAGE_SIZE + 1, after=_after(q.get("apres")),
                                           newest_first=True)
        counts = await repo.count_documents_by_state(
            tx, document_list.stored_states(rt.flows), scope=scope, entity_ids=[f.entity] if f.entity else None, flow=f.flow,
            since=f.since, until=f.until, cap=COUNT_CAP)
        shown = {d.entity_id for d in docs}
        names = {eid: e.name for eid, e in (await repo.entities_by_ids(tx, shown)).items()}
    more = len(docs) > PAGE_SIZE
    docs = docs[:PAGE_SIZE]
    next_url = "/admin/?" + f.params(apres=_cursor(docs[-1])) if more and docs else None
    flows = sorted(rt.flows.values(), key=lambda fl: fl.label)
    flow = rt.flows.get(f.flow) if f.flow else None
    columns = [flow.field(c) for c in flow.columns] if flow else []
    return await console.page(
        request, "admin_dashboard.html", who=who, docs=docs, entities=entities, names=names, filt=f,
        flows=flows, flow_labels={fl.id: fl.label for fl in flows}, title=lambda d: document_title(d, rt.flows), columns=columns,
        state_label=lambda d: rt.flow(d.flow_id).state_label(d.state) if d.flow_id in rt.flows
        else STATE_LABELS.get(d.state, d.state), states=STATE_LABELS, next_url=next_url,
        counts=[(s, STATE_LABELS[s], counts.get(s, 0)) for s in document_list.STATES], count_cap=COUNT_CAP,
        first_page=not q.get("apres"), can_create=any(access.has(g.role, "editor") for g in who.grants),
        can_act=any(access.has(g.role, "editor") for g in who.grants), batch_actions=batches.ACTION_LABELS)


async def document_for(request: web.Request, role: str) -> tuple[Any, Any, str]:
    """(person, document, their role) — 404 for a document they may not see at all."""
    rt = request.app[RUNTIME]
    who = await console.signed_in(request)
    try:
        doc = await documents.get_document(rt, request.match_info["id"])
    except NotFound:
        raise web.HTTPNotFound(text="Document introuvable.") from None
    async with rt.store.transaction() as tx:
        have = await access.role_on(tx, who, doc.entity_id, doc.flow_id)
    if have is None:
        raise web.HTTPNotFound(text="Document introuvable.")
    if not access.has(have, role):
        raise console.forbid(request, who, "Vos droits ne permettent pas cette action sur ce document.")
    return who, doc, have


def _actions(doc: Any) -> list[str]:
    if doc.state == "draft":
        return ["start", "cancel"]
    if doc.state == "error":
        return ["retry", "skip", "cancel"]
    if doc.state in ("running", "waiting"):
        return ["skip", "cancel"]
    if doc.state not in ("done", "cancelled") or (doc.state == "cancelled" and doc.step):
        return ["resume"] if doc.step else []
    return []


async def document_page(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    who, doc, have = await document_for(request, "reader")
    async with rt.store.transaction() as tx:
        rows = await journal.document_rows(tx, doc.id)
        chain_breaks = await journal.verify_entries(tx, rows)  # these entries only: never the whole chain
        entries = [journal.row_to_entry(r) for r in rows]
        entity = await repo.get_entity(tx, doc.entity_id)
        mailings = await document_mailsec.mailings(tx, doc.id)
        # fields naming another document (the act of a letter or an annulation): shown by its title, as a link
        refs = [str(v) for k, v in doc.fields.items() if k.endswith("document_id") and v]
        others = await repo.documents_by_ids(tx, refs) if refs else {}
        readable = {d.id for d in others.values() if d.entity_id == doc.entity_id}  # same collectivité: same rights
    await rt.ensure_flow_of(doc)
    try:
        flow = rt.flow_of(doc)
    except FlowbusError:  # a flow taken out of service, never started: shown by its id
        flow = None
    allowed = [a for a in _actions(doc) if access.has(have, "editor" if a == "start" else "admin")]
    pes_files = await document_pes.pes_files(rt, flow, doc)  # « Visualiser le PES » next to each PES_Aller
    return await console.page(request, "admin_document.html", who=who, doc=doc, flow=flow, entity=entity,
                              entries=entries, chain_breaks=chain_breaks, title=document_title(doc, rt.flows),
                              state_label=flow.state_label(doc.state) if flow else doc.state,
                              actions=allowed, action_labels=ACTION_LABELS, quote=quote, event_label=journal_labels.label,
                              editable=doc.state in documents.EDITABLE_STATES and access.has(have, "editor"),
                              route=document_route.route(flow, doc, entries) if flow and doc.state != "draft" else [],
                              sentence=journal_labels.document_sentence, actor_words=journal_labels.actor,
                              mailings=mailings, recipient_status=document_mailsec.STATUS_LABELS,
                              can_resend=access.has(have, "editor"), size=french.size,
                              annulation=access.has(have, "editor") and document_annulation.can_request(rt, doc),
                              linked={i: document_title(d, rt.flows) for i, d in others.items() if i in readable}, pes_files=pes_files,
                              field_label=lambda name: french.field_label(flow, name),
                              rgs=_rgs_confirmation(request, doc))


def _rgs_confirmation(request: web.Request, doc: Any) -> dict[str, Any]:
    """An act waiting for an agent's RGS** confirmation on S²LOW: the link, and what S²LOW said on the way back."""
    url = str(doc.fields.get("tdt_confirm_url") or "")
    back = request.query.get("confirmation_tdt")
    return {"url": url if url.startswith(("https://", "http://")) else "",
            "back": None if back not in ("0", "1") else back == "0",
            "message": request.query.get("message_tdt", "")[:300]}


async def document_action(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    action = request.match_info["action"]
    who, doc, _have = await document_for(request, "admin" if action != "start" else "editor")
    form = await request.post()
    comment = str(form.get("comment", "")).strip() or None
    if action == "cancel" and form.get("confirme") != "1":  # a cancel is final: asked once more
        return await console.page(request, "admin_confirm_cancel.html", who=who, doc=doc, title=document_title(doc, rt.flows))
    try:
        await documents.run_action(rt, doc.id, action, actor=who.actor, comment=comment)
    except FlowbusError as exc:
        raise console.failed(f"/admin/documents/{doc.id}", exc.message) from None
    raise console.done(f"/admin/documents/{doc.id}", f"Action « {ACTION_LABELS[action]} » enregistrée.")


async def document_file(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    _who, doc, _have = await document_for(request, "reader")
    files = doc.files_of(request.match_info["field"])
    index = int(request.query.get("index", "0"))
    if len(files) <= index:
        raise web.HTTPNotFound(text="Fichier introuvable.")
    ref = files[index]
    # a PDF may be shown in the page (« Aperçu »); anything else is only downloaded, never rendered here
    inline = request.query.get("apercu") == "1" and ref.media_type == "application/pdf"
    resp = web.StreamResponse(headers={
        "Content-Type": ref.media_type, "Content-Length": str(ref.size), "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f"{'inline' if inline else 'attachment'}; filename*=UTF-8''{quote(ref.filename)}",
        **(headers.FRAMED_PDF if inline else {})})
    await resp.prepare(request)
    async for chunk in rt.blobs.open(ref.blob_key):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def _to_sign_in(request: web.Request) -> web.Response:
    """The old sign-in address (API keys) now leads to people's sign-in."""
    raise web.HTTPMovedPermanently("/connexion")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get("/admin/connexion", _to_sign_in)
    r.add_get("/admin/", dashboard)
    r.add_get("/admin/documents/{id}", document_page)
    r.add_post("/admin/documents/{id}/actions/{action:(start|retry|skip|cancel|resume)}", document_action)
    r.add_get("/admin/documents/{id}/files/{field}", document_file)
    document_annulation.setup(app, document_for=document_for, document_title=document_title)
