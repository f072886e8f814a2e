"""Archivist pages (French): search the archive store, see a package's ArchiveUnit tree, download it.

Signed-in people only (``flowbus.web.session``); their grants decide which entities' packages are
visible, exactly as for the API.  Every download is journaled by the archive store.
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
from flowbus.web import console


async def search_page(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    key = await console.signed_in(request)
    visible = await visible_entities(rt, key)
    async with rt.store.transaction() as tx:
        if visible is None:
            entities = await repo.list_entities(tx)
        else:
            entities = sorted((await repo.entities_by_ids(tx, visible[:500])).values(), key=lambda e: e.name)
    error = None
    try:
        items, total = await search_records(rt, key, request.query)
    except ValidationError as exc:
        items, total, error = [], 0, f"Critère invalide ({exc.field}) : utilisez une date au format AAAA-MM-JJ."
    return await console.page(request, "archivist_search.html", who=key, items=items, total=total,
                              query=request.query, error=error, entities=entities,
                              names={e.id: e.name for e in entities},
                              flows=sorted(rt.flows.values(), key=lambda f: f.id))


async def _package(request: web.Request) -> tuple[Any, Any, Any]:
    """(runtime, API key, package record) for a page naming a package the key may read; else 404."""
    rt = request.app[RUNTIME]
    key = await console.signed_in(request)
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
    return await console.page(request, "archivist_package.html", who=key, record=record, tree=tree, entity=entity,
                              flow_label=flow.label if flow else record.flow_id)


async def download(request: web.Request) -> web.StreamResponse:
    _rt, key, record = await _package(request)
    return await stream_package(request, record, f"archiviste:{key.actor}")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get("/archives/", search_page)
    r.add_get("/archives/paquets/{id}", package_page)
    r.add_get("/archives/paquets/{id}/telecharger", download)
