"""Secure-mail address book of a collectivité (French): contacts and groups, added one by one or imported
from a CSV file; readers see it, agents and administrators change it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from flowbus import addressbook
from flowbus.errors import FlowbusError
from flowbus.people import access
from flowbus.store import repo
from flowbus.web import console

BASE = "/admin/carnet"
MAX_CSV = 2 * 1024 * 1024


async def _entity(request: web.Request, who: Any, ref: str | None, role: str) -> Any:
    if not ref:
        return None
    async with console.runtime(request).store.transaction() as tx:
        entity = await repo.find_entity(tx, ref.strip()) or await repo.entity_by_siren(tx, ref.replace(" ", ""))
    if entity is None:
        raise console.failed(BASE, f"Aucune collectivité de SIREN ou d'identifiant « {ref} ».")
    await console.require_entity_role(request, who, entity.id, role)
    return entity


async def _posted(request: web.Request) -> tuple[Any, Any]:
    """(form, collectivité) of a POST changing the book: an agent or administrator of that collectivité."""
    who = await console.signed_in(request)
    form = await request.post()
    entity = await _entity(request, who, str(form.get("collectivite", "")), "editor")
    if entity is None:
        raise console.failed(BASE, "Choisissez d'abord une collectivité.")
    return form, entity


def _here(entity: Any) -> str:
    return f"{BASE}?collectivite={quote(entity.id)}"


async def page(request: web.Request) -> web.Response:
    rt = console.runtime(request)
    who = await console.signed_in(request)
    entity = await _entity(request, who, request.query.get("collectivite"), "reader")
    choices, contacts, groups, can_edit = None, [], [], False
    async with rt.store.transaction() as tx:
        ids = (await access.scope(tx, who)).entity_ids
        if ids is not None and len(ids) <= 300:
            choices = sorted((await repo.entities_by_ids(tx, ids)).values(), key=lambda e: e.name)
        if entity is not None:
            contacts = await addressbook.contacts(tx, entity.id, q=request.query.get("q") or None)
            groups = await addressbook.groups(tx, entity.id)
            can_edit = access.has(await access.role_on(tx, who, entity.id), "editor")
    return await console.page(request, "console_addressbook.html", who=who, entity=entity, choices=choices,
                              contacts=contacts, groups=groups, can_edit=can_edit, q=request.query.get("q", ""),
                              report=request.query.get("rapport"))


async def add(request: web.Request) -> web.Response:
    rt = console.runtime(request)
    form, entity = await _posted(request)
    try:
        async with rt.store.transaction() as tx:
            added = await addressbook.save_contact(
                tx, entity.id, name=str(form.get("nom", "")), email=str(form.get("courriel", "")),
                groups=str(form.get("groupes", "")).split(","), now=rt.clock.now())
    except FlowbusError as exc:
        raise console.failed(_here(entity), exc.message) from None
    raise console.done(_here(entity), "Contact ajouté." if added else "Contact mis à jour.")


async def import_file(request: web.Request) -> web.Response:
    rt = console.runtime(request)
    form, entity = await _posted(request)
    upload = form.get("fichier")
    data = upload.file.read(MAX_CSV + 1) if hasattr(upload, "file") else b""
    if not data or len(data) > MAX_CSV:
        raise console.failed(_here(entity), "Choisissez un fichier CSV (2 Mo au plus).")
    try:
        async with rt.store.transaction() as tx:
            report = await addressbook.import_csv(tx, entity.id, data, now=rt.clock.now())
    except FlowbusError as exc:
        raise console.failed(_here(entity), exc.message) from None
    text = f"Import : {report.added} contact(s) ajouté(s), {report.updated} mis à jour"
    if report.errors:
        text += f", {len(report.errors)} ligne(s) refusée(s) — " + " ; ".join(report.errors[:20])
        if len(report.errors) > 20:
            text += " ; …"
        raise console.failed(_here(entity), text + ".")
    raise console.done(_here(entity), text + ".")


async def delete(request: web.Request) -> web.Response:
    rt = console.runtime(request)
    form, entity = await _posted(request)
    async with rt.store.transaction() as tx:
        removed = await addressbook.delete_contact(tx, entity.id, request.match_info["id"])
    raise console.done(_here(entity), "Contact supprimé." if removed else None,
                       error=None if removed else "Ce contact n'existe plus.")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get(BASE, page)
    r.add_post(BASE + "/contacts", add)
    r.add_post(BASE + "/import", import_file)
    r.add_post(BASE + "/contacts/{id}/supprimer", delete)
