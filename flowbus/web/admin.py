"""Administrator console (French): documents by state, a document's fields, files and journal, recovery actions.

Sign-in with an API key (kept in an HttpOnly, SameSite=Strict cookie); every page checks the
key's role on the document's entity exactly as the API does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from flowbus import documents, journal
from flowbus.api import RUNTIME
from flowbus.api.auth import role_for, visible_entities
from flowbus.errors import FlowbusError, NotFound
from flowbus.store import repo
from flowbus.web import render
from flowbus.web.apikey_session import ApiKeySession

COOKIE = "flowbus_admin"
STATE_LABELS = {"draft": "Brouillon", "running": "En cours", "waiting": "En attente", "error": "En erreur",
                "done": "Terminé", "cancelled": "Annulé", "rejected": "Refusé"}
ACTION_LABELS = {"retry": "Relancer l'étape", "skip": "Passer l'étape", "resume": "Reprendre",
                 "cancel": "Annuler le document", "start": "Démarrer"}
_ORDER = {"reader": 1, "editor": 2, "admin": 3}


SESSION = ApiKeySession(COOKIE, "/admin", "admin_login.html")
_key = SESSION.key
login_form, login, logout = SESSION.login_form, SESSION.login, SESSION.logout


async def dashboard(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    key = await _key(request)
    visible = await visible_entities(rt, key)
    q = request.query
    async with rt.store.transaction() as tx:
        entities = [e for e in await repo.list_entities(tx) if visible is None or e.id in visible]
        entity_ids = visible
        if q.get("entity"):
            entity_ids = [q["entity"]] if visible is None or q["entity"] in visible else []
        docs = await repo.search_documents(tx, entity_ids=entity_ids, flow=q.get("flow") or None,
                                           state=q.get("state") or None, since=None, until=None,
                                           q=q.get("q") or None, limit=200, after=None)
        errors = await repo.search_documents(tx, entity_ids=visible, flow=None, state="error", since=None,
                                             until=None, q=None, limit=50, after=None)
    names = {e.id: e.name for e in entities}
    return render("admin_dashboard.html", docs=list(reversed(docs)), errors=errors, entities=entities,
                  names=names, flows=sorted(rt.flows.values(), key=lambda f: f.id), query=q,
                  state_label=lambda d: rt.flow(d.flow_id).state_label(d.state) if d.flow_id in rt.flows
                  else d.state, states=STATE_LABELS, key_name=key.name)


async def _document(request: web.Request, role: str) -> tuple[Any, Any]:
    rt = request.app[RUNTIME]
    key = await _key(request)
    try:
        doc = await documents.get_document(rt, request.match_info["id"])
    except NotFound:
        raise web.HTTPNotFound(text="Document introuvable.") from None
    have = await role_for(rt, key, doc.entity_id)
    if have is None:
        raise web.HTTPNotFound(text="Document introuvable.")
    if _ORDER[have] < _ORDER[role]:
        raise web.HTTPForbidden(text="Vos droits ne permettent pas cette action.")
    return key, doc


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
    key, doc = await _document(request, "reader")
    async with rt.store.transaction() as tx:
        entries = await journal.for_document(tx, doc.id)
        entity = await repo.get_entity(tx, doc.entity_id)
        breaks = await journal.verify(tx, doc.entity_id)
    flow = rt.flows.get(doc.flow_id)
    have = await role_for(rt, key, doc.entity_id)
    return render("admin_document.html", doc=doc, flow=flow, entity=entity, entries=entries,
                  chain_ok=not breaks, state_label=flow.state_label(doc.state) if flow else doc.state,
                  actions=_actions(doc) if _ORDER.get(have or "", 0) >= 2 else [], action_labels=ACTION_LABELS,
                  message=request.query.get("message"), error=request.query.get("error"), quote=quote)


async def document_action(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    action = request.match_info["action"]
    key, doc = await _document(request, "admin" if action != "start" else "editor")
    form = await request.post()
    comment = str(form.get("comment", "")).strip() or None
    try:
        await documents.run_action(rt, doc.id, action, actor=f"api-key:{key.id}", comment=comment)
    except FlowbusError as exc:
        raise web.HTTPSeeOther(f"/admin/documents/{doc.id}?error={quote(exc.message)}") from None
    raise web.HTTPSeeOther(f"/admin/documents/{doc.id}?message={quote('Action « ' + ACTION_LABELS[action] + ' » enregistrée.')}")


async def document_file(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    _key_, doc = await _document(request, "reader")
    files = doc.files_of(request.match_info["field"])
    index = int(request.query.get("index", "0"))
    if len(files) <= index:
        raise web.HTTPNotFound(text="Fichier introuvable.")
    ref = files[index]
    resp = web.StreamResponse(headers={"Content-Type": ref.media_type, "Content-Length": str(ref.size),
                                       "Content-Disposition": f"attachment; filename*=UTF-8''{quote(ref.filename)}"})
    await resp.prepare(request)
    async for chunk in rt.blobs.open(ref.blob_key):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get("/admin/connexion", login_form)
    r.add_post("/admin/connexion", login)
    r.add_post("/admin/deconnexion", logout)
    r.add_get("/admin/", dashboard)
    r.add_get("/admin/documents/{id}", document_page)
    r.add_post("/admin/documents/{id}/actions/{action:(start|retry|skip|cancel|resume)}", document_action)
    r.add_get("/admin/documents/{id}/files/{field}", document_file)
