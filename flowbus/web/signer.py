"""Signer inbox (French): folders waiting on my desks, read the PDF, approve (the server seals) or reject.

Signers sign in with their login and password (``flowbus parapheur signer-add``); the session
cookie is HttpOnly, SameSite=Strict, scoped to ``/parapheur``, and every form carries the
session's CSRF token.  Outside signers reach one task through their personal link
(``/parapheur/externe/<token>``), without an account.
"""

from __future__ import annotations

import hmac
from datetime import datetime, time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.errors import FlowbusError, NotFound, Unauthorized
from flowbus.people import limits
from flowbus.signature import parapheur
from flowbus.signature.parapheur_actions import Actor, decide, external_url, regenerate_link
from flowbus.web import headers as security
from flowbus.web import render

COOKIE = "flowbus_parapheur"
STATUS_LABELS = {"waiting": "À venir", "active": "En cours", "approved": "Approuvé", "rejected": "Refusé",
                 "cancelled": "Annulé"}
FOLDER_LABELS = {"pending": "En cours", "approved": "Approuvé", "rejected": "Refusé"}


async def _session(request: web.Request) -> tuple[parapheur.Signer, str]:
    rt = request.app[RUNTIME]
    token = request.cookies.get(COOKIE)
    found = None
    if token:
        async with rt.store.transaction() as tx:
            found = await parapheur.session(tx, token, rt.clock.now())
    if found is None:
        raise web.HTTPFound("/parapheur/connexion")
    return found


def _check_csrf(form: Any, csrf: str) -> None:
    if not hmac.compare_digest(str(form.get("csrf", "")), csrf):
        raise web.HTTPForbidden(text="Formulaire expiré : rechargez la page et recommencez.")


async def login_form(request: web.Request) -> web.Response:
    return render("signer_login.html", error=None)


def _too_many(wait: int) -> web.Response:
    resp = render("signer_login.html", status=429, error=limits.TooManyAttempts(wait).message)
    resp.headers["Retry-After"] = str(wait)
    return resp


async def login(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    form = await request.post()
    login_name = str(form.get("login", "")).strip()
    address = limits.source_address(request)
    wait = await limits.retry_after(rt, "parapheur", address, login_name)
    if wait:
        return _too_many(wait)
    try:
        async with rt.store.transaction() as tx:
            signer = await parapheur.authenticate(tx, login_name, str(form.get("password", "")))
            token, _csrf = await parapheur.open_session(tx, signer, rt.clock.now())
    except Unauthorized:
        wait = await limits.failed(rt, "parapheur", address, login_name, reason="mot de passe incorrect")
        if wait:
            return _too_many(wait)
        return render("signer_login.html", status=401, error="Identifiant ou mot de passe incorrect.")
    resp = web.HTTPFound("/parapheur/")
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/parapheur",
                    secure=rt.settings.base_url.startswith("https"))
    raise resp


async def logout(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    token = request.cookies.get(COOKIE)
    if token:
        async with rt.store.transaction() as tx:
            await parapheur.close_session(tx, token)
    resp = web.HTTPFound("/parapheur/connexion")
    resp.del_cookie(COOKIE, path="/parapheur")
    raise resp


async def inbox(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    signer, csrf = await _session(request)
    async with rt.store.transaction() as tx:
        items = await parapheur.inbox(tx, signer, rt.clock.now())
        external = await parapheur.external_pending(tx, signer, rt.clock.now())
        key = await parapheur.signer_key(tx, signer.id, rt.secrets)
    return render("signer_inbox.html", signer=signer, csrf=csrf, items=items, external=external, key=key,
                  message=request.query.get("message"), link=request.query.get("lien"),
                  error=request.query.get("erreur"))


async def task_page(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    signer, csrf = await _session(request)
    async with rt.store.transaction() as tx:
        try:
            item = await parapheur.task_for_signer(tx, request.match_info["id"], signer, rt.clock.now())
        except FlowbusError as exc:
            return render("signer_error.html", status=403 if exc.status == 403 else 404, signer=signer,
                          csrf=csrf, message="Ce dossier n'est pas dans votre parapheur.")
        tasks = await parapheur.tasks_of(tx, item.folder.id)
        decisions = await parapheur.decisions_of(tx, item.folder.id)
        key = await parapheur.signer_key(tx, signer.id, rt.secrets)
    return render("signer_task.html", signer=signer, csrf=csrf, item=item, tasks=tasks, decisions=decisions, key=key,
                  labels=STATUS_LABELS, folder_labels=FOLDER_LABELS, error=request.query.get("error"),
                  document_url=f"/parapheur/taches/{item.task.id}/document")


async def _send_file(request: web.Request, blob_key: str, filename: str, media_type: str) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    headers = {"Content-Type": media_type, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if media_type == "application/pdf":  # shown in the page's viewer
        headers["Content-Disposition"] = f"inline; filename*=UTF-8''{quote(filename)}"
        headers.update(security.FRAMED_PDF)
    else:  # never rendered from our origin (an HTML or SVG "document" could run script here)
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
        headers["Content-Security-Policy"] = "sandbox"
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)
    async for chunk in rt.blobs.open(blob_key):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def task_document(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    signer, _csrf = await _session(request)
    async with rt.store.transaction() as tx:
        try:
            item = await parapheur.task_for_signer(tx, request.match_info["id"], signer, rt.clock.now())
        except FlowbusError:
            raise web.HTTPForbidden(text="Ce dossier n'est pas dans votre parapheur.") from None
    folder = item.folder
    index = request.query.get("annexe")
    if index is not None:
        try:
            annex = folder.annexes[int(index)]
        except (ValueError, IndexError):
            raise web.HTTPNotFound(text="Annexe introuvable.") from None
        return await _send_file(request, annex["blob"], annex["filename"], annex["media_type"])
    return await _send_file(request, folder.current_blob, folder.filename, folder.media_type)


async def task_decision(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    signer, csrf = await _session(request)
    form = await request.post()
    _check_csrf(form, csrf)
    task_id = request.match_info["id"]
    decision = str(form.get("decision", ""))
    try:
        result = await decide(rt, task_id, decision, Actor(f"signataire:{signer.login}", signer.name, signer=signer),
                              comment=str(form.get("comment", "")), code=str(form.get("code", "")) or None)
    except FlowbusError as exc:
        raise web.HTTPSeeOther(f"/parapheur/taches/{task_id}?error={quote(exc.message)}") from None
    text = {"visa": "Dossier visé.", "signature": f"Dossier signé ({result.signed_with}).",
            "reject": "Dossier refusé."}[result.decision]
    if result.link_mailed and result.next_task is not None:
        text += f" Le lien de signature a été envoyé à {result.next_task.external_email}."
    target = f"/parapheur/?message={quote(text)}"
    if result.external_link_token:
        target += f"&lien={quote(external_url(rt, result.external_link_token))}"
    raise web.HTTPSeeOther(target)


async def task_link(request: web.Request) -> web.Response:
    """A member of the previous step's desk asks a new link for the outside signer."""
    rt = request.app[RUNTIME]
    signer, csrf = await _session(request)
    form = await request.post()
    _check_csrf(form, csrf)
    try:
        token = await regenerate_link(rt, request.match_info["id"], signer)
    except FlowbusError as exc:
        raise web.HTTPSeeOther(f"/parapheur/?message={quote(exc.message)}") from None
    link = external_url(rt, token)
    raise web.HTTPSeeOther(f"/parapheur/?message={quote('Nouveau lien créé.')}&lien={quote(link)}")


# ---- outside signer -----------------------------------------------------------------------------


async def _external(request: web.Request) -> tuple[parapheur.Task, parapheur.Folder]:
    rt = request.app[RUNTIME]
    async with rt.store.transaction() as tx:
        try:
            return await parapheur.task_for_link(tx, request.match_info["token"])
        except NotFound:
            raise web.HTTPNotFound(text="Ce lien de signature est inconnu, expiré ou déjà utilisé.") from None


async def external_page(request: web.Request) -> web.Response:
    task, folder = await _external(request)
    token = request.match_info["token"]
    return render("signer_external.html", task=task, folder=folder, error=request.query.get("error"),
                  document_url=f"/parapheur/externe/{token}/document", action=f"/parapheur/externe/{token}/decision")


async def external_document(request: web.Request) -> web.StreamResponse:
    _task, folder = await _external(request)
    return await _send_file(request, folder.current_blob, folder.filename, folder.media_type)


async def external_decision(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    task, _folder = await _external(request)
    token = request.match_info["token"]
    form = await request.post()
    try:
        result = await decide(rt, task.id, str(form.get("decision", "")),
                              Actor(f"externe:{task.id}", task.external_name or "Signataire extérieur",
                                    link_token=token), comment=str(form.get("comment", "")))
    except FlowbusError as exc:
        raise web.HTTPSeeOther(f"/parapheur/externe/{token}?error={quote(exc.message)}") from None
    text = "Merci : votre signature a été enregistrée." if result.decision != "reject" else \
        "Votre refus a été enregistré."
    return render("signer_thanks.html", message=text)


# ---- delegations --------------------------------------------------------------------------------


async def delegations_page(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    signer, csrf = await _session(request)
    async with rt.store.transaction() as tx:
        desks = await parapheur.desks_of(tx, signer, rt.clock.now())
        own = [d for d, delegated in desks.values() if not delegated]
        targets = [d for d in await parapheur.list_desks(tx, signer.entity_id) if d.id not in {o.id for o in own}]
        current = [g for d in own for g in await parapheur.delegations_from(tx, d.id)]
    names = {d.id: d.name for d in [*own, *targets]}
    return render("signer_delegations.html", signer=signer, csrf=csrf, own=own, targets=targets, current=current,
                  names=names, error=request.query.get("error"), message=request.query.get("message"))


async def delegations_create(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    signer, csrf = await _session(request)
    form = await request.post()
    _check_csrf(form, csrf)
    try:
        starts = datetime.combine(datetime.fromisoformat(str(form.get("debut"))).date(), time.min,
                                  tzinfo=rt.clock.now().tzinfo)
        ends = datetime.combine(datetime.fromisoformat(str(form.get("fin"))).date(), time.max,
                                tzinfo=rt.clock.now().tzinfo)
    except ValueError:
        raise web.HTTPSeeOther(f"/parapheur/delegations?error={quote('Dates invalides (format AAAA-MM-JJ).')}") \
            from None
    try:
        async with rt.store.transaction() as tx:
            desks = await parapheur.desks_of(tx, signer, rt.clock.now())
            src = str(form.get("bureau", ""))
            if src not in desks or desks[src][1]:
                raise web.HTTPSeeOther(f"/parapheur/delegations?error={quote('Vous ne pouvez déléguer que vos bureaux.')}")
            await parapheur.add_delegation(tx, from_desk=src, to_desk=str(form.get("vers", "")), starts_at=starts,
                                           ends_at=ends, created_by=f"signataire:{signer.login}", now=rt.clock.now())
    except FlowbusError as exc:
        raise web.HTTPSeeOther(f"/parapheur/delegations?error={quote(exc.message)}") from None
    raise web.HTTPSeeOther(f"/parapheur/delegations?message={quote('Délégation enregistrée.')}")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get("/parapheur/connexion", login_form)
    r.add_post("/parapheur/connexion", login)
    r.add_post("/parapheur/deconnexion", logout)
    r.add_get("/parapheur/", inbox)
    r.add_get("/parapheur/taches/{id}", task_page)
    r.add_get("/parapheur/taches/{id}/document", task_document)
    r.add_post("/parapheur/taches/{id}/decision", task_decision)
    r.add_post("/parapheur/taches/{id}/lien", task_link)
    r.add_get("/parapheur/externe/{token}", external_page)
    r.add_get("/parapheur/externe/{token}/document", external_document)
    r.add_post("/parapheur/externe/{token}/decision", external_decision)
    r.add_get("/parapheur/delegations", delegations_page)
    r.add_post("/parapheur/delegations", delegations_create)
