"""Archivist pages (French): search the archive store, see a package's ArchiveUnit tree, download it.

Sign-in with an API key (HttpOnly, SameSite=Strict cookie on ``/archives``); the key's roles
decide which entities' packages are visible, exactly as for the API.  Every download is
journaled by the archive store.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.api.archives import readable_record, search_records, stream_package, archive_store
from flowbus.api.auth import visible_entities
from flowbus.archive.store import unit_tree
from flowbus.errors import NotFound, ValidationError
from flowbus.store import repo
from flowbus.web import render
from flowbus.web.apikey_session import ApiKeySession

COOKIE = "flowbus_archives"


SESSION = ApiKeySession(COOKIE, "/archives", "archivist_login.html")
_key = SESSION.key
login_form, login, logout = SESSION.login_form, SESSION.login, SESSION.logout


async def search_page(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    key = await _key(request)
    visible = await visible_entities(rt, key)
    async with rt.store.transaction() as tx:
        entities = [e for e in await repo.list_entities(tx) if visible is None or e.id in visible]
    error = None
    try:
        items, total = await search_records(rt, key, request.query)
    except ValidationError as exc:
        items, total, error = [], 0, f"Critère invalide ({exc.field}) : utilisez une date au format AAAA-MM-JJ."
    return render("archivist_search.html", items=items, total=total, query=request.query, error=error,
                  entities=entities, names={e.id: e.name for e in entities},
                  flows=sorted(rt.flows.values(), key=lambda f: f.id), key_name=key.name)


async def _package(request: web.Request) -> tuple[Any, Any, Any]:
    """(runtime, API key, package record) for a page naming a package the key may read; else 404."""
    rt = request.app[RUNTIME]
    key = await _key(request)
    try:
        return rt, key, await readable_record(rt, key, request.match_info["id"])
    except NotFound:
        raise web.HTTPNotFound(text="Paquet d'archives introuvable.") from None


async def package_page(request: web.Request) -> web.Response:
    rt, key, record = await _package(request)
    tree = unit_tree(await archive_store(rt).manifest(record.id))
    async with rt.store.transaction() as tx:
        entity = await repo.find_entity(tx, record.entity_id)
    flow = rt.flows.get(record.flow_id)
    return render("archivist_package.html", record=record, tree=tree, entity=entity,
                  flow_label=flow.label if flow else record.flow_id, key_name=key.name)


async def download(request: web.Request) -> web.StreamResponse:
    _rt, key, record = await _package(request)
    return await stream_package(request, record, f"archiviste:api-key:{key.id}")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get("/archives/connexion", login_form)
    r.add_post("/archives/connexion", login)
    r.add_post("/archives/deconnexion", logout)
    r.add_get("/archives/", search_page)
    r.add_get("/archives/paquets/{id}", package_page)
    r.add_get("/archives/paquets/{id}/telecharger", download)
