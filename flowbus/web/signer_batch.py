"""Signer inbox, several folders at once and the signer's own certificate (French pages).

« Traiter la sélection »: the ticked folders are visaed or signed one after the other with the same
annotation, each its own decision in its folder's history; the page says whether signatures use
the signer's own certificate (its code asked once for the batch, never kept) or the entity's seal.
« Mon certificat »: the signer gives a PKCS#12 and its code; it is opened once to check it, then kept
locked (``parapheur.set_signer_key``).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.errors import FlowbusError, PermanentError
from flowbus.signature import parapheur
from flowbus.signature.keys import load_pkcs12
from flowbus.signature.parapheur_actions import Actor, decide
from flowbus.web import render
from flowbus.web.signer import _check_csrf, _session

MAX_AT_ONCE = 50
MAX_P12 = 64 * 1024


async def batch_decision(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    signer, csrf = await _session(request)
    form = await request.post()
    _check_csrf(form, csrf)
    task_ids = list(dict.fromkeys(str(v) for v in form.getall("tache", [])))
    if not task_ids:
        raise web.HTTPSeeOther(f"/parapheur/?erreur={quote('Cochez au moins un dossier.')}")
    if len(task_ids) > MAX_AT_ONCE:
        raise web.HTTPSeeOther(f"/parapheur/?erreur={quote(f'Au plus {MAX_AT_ONCE} dossiers à la fois.')}")
    comment = str(form.get("comment", "")).strip() or None
    code = str(form.get("code", "")) or None
    actor = Actor(f"signataire:{signer.login}", signer.name, signer=signer)
    done: list[str] = []
    failed: list[str] = []
    for task_id in task_ids:
        title = task_id
        try:
            async with rt.store.transaction() as tx:
                item = await parapheur.task_for_signer(tx, task_id, signer, rt.clock.now())
            title = item.folder.title
            await decide(rt, task_id, "approve", actor, comment=comment, code=code)
            done.append(title)
        except FlowbusError as exc:
            failed.append(f"« {title} » : {exc.message}")
            if exc.field == "code":
                break  # a wrong code is wrong for every folder: stop at the first
    text = f"{len(done)} dossier{'s' if len(done) > 1 else ''} traité{'s' if len(done) > 1 else ''}."
    params = [f"message={quote(text)}"] if done else []
    if failed:
        params.append(f"erreur={quote(' ; '.join(failed))}")
    target = "/parapheur/?" + "&".join(params)
    raise web.HTTPSeeOther(target)


async def certificate_page(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    signer, csrf = await _session(request)
    async with rt.store.transaction() as tx:
        key = await parapheur.signer_key(tx, signer.id, rt.secrets)
    return render("signer_certificate.html", signer=signer, csrf=csrf, key=key, error=request.query.get("erreur"),
                  message=request.query.get("message"))


async def certificate_save(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    signer, csrf = await _session(request)
    form = await request.post()
    _check_csrf(form, csrf)
    if form.get("retirer") == "1":
        async with rt.store.transaction() as tx:
            await parapheur.remove_signer_key(tx, signer.id)
        raise web.HTTPSeeOther(f"/parapheur/certificat?message={quote('Certificat retiré : vos signatures utiliseront le cachet de la collectivité.')}")
    upload = form.get("fichier")
    data = upload.file.read(MAX_P12 + 1) if hasattr(upload, "file") else b""
    if not data or len(data) > MAX_P12:
        raise web.HTTPSeeOther(f"/parapheur/certificat?erreur={quote('Choisissez votre fichier de certificat (.p12 ou .pfx, 64 Ko au plus).')}")
    try:
        key = await asyncio.to_thread(load_pkcs12, data, str(form.get("code", "")), now=rt.clock.now())
    except PermanentError as exc:
        why = "code incorrect" if exc.field == "pkcs12_password" else exc.message
        raise web.HTTPSeeOther(f"/parapheur/certificat?erreur={quote(f'Certificat refusé : {why}.')}") from None
    subject = key.certificate.subject.rfc4514_string()
    async with rt.store.transaction() as tx:
        await parapheur.set_signer_key(tx, signer.id, data, subject=subject,
                                       not_after=key.certificate.not_valid_after_utc, now=rt.clock.now(),
                                       box=rt.secrets)
    raise web.HTTPSeeOther(f"/parapheur/certificat?message={quote(f'Certificat enregistré : {subject}.')}")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_post("/parapheur/lot", batch_decision)
    r.add_get("/parapheur/certificat", certificate_page)
    r.add_post("/parapheur/certificat", certificate_save)
