"""Archivist API: search the built-in archive store, read a package's ArchiveUnit tree, download it (journaled).

``GET /api/v1/archives?entity=&flow=&from=&to=&keyword=&title=&q=&limit=&offset=`` → ``{items, total}``;
``GET /api/v1/archives/{id}`` → the record with its ``tree``; ``GET /api/v1/archives/{id}/package`` → the
sealed package (zip), written to the entity's journal as ``archive.downloaded``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.api.auth import document_scope, principal, require_role, role_for, visible_entities
from flowbus.archive.store import ArchiveRecord, ArchiveStore, unit_tree
from flowbus.errors import NotFound, ValidationError


def archive_store(rt: Any) -> ArchiveStore:
    return ArchiveStore.for_runtime(rt)


async def search_records(rt: Any, key: Any, query: Any) -> tuple[list[ArchiveRecord], int]:
    """Search with the criteria of a query mapping, restricted to the entities ``key`` may read."""
    visible = await visible_entities(rt, key)
    entity_ids = visible
    if query.get("entity"):
        entity_ids = [query["entity"]] if visible is None or query["entity"] in visible else []
    try:
        limit = min(int(query.get("limit", 50)), 500)
        offset = int(query.get("offset", 0))
    except ValueError:
        raise ValidationError("limit and offset are integers", field="limit") from None
    for name in ("from", "to"):
        value = query.get(name) or ""
        if value and not (len(value) >= 10 and value[4] == "-" and value[7] == "-"):
            raise ValidationError(f"{name} is a date YYYY-MM-DD", field=name)
    items, total = await archive_store(rt).search(
        entity_ids=entity_ids, flow=query.get("flow") or None, date_from=query.get("from") or None,
        date_to=query.get("to") or None, keyword=query.get("keyword") or None, title=query.get("title") or None,
        text=query.get("q") or None, limit=limit, offset=offset)
    scope = await document_scope(rt, key)
    if not scope.everything:  # grants restricted to some flows: only those flows' packages
        kept = [r for r in items if scope.allows(r.entity_id, r.flow_id)]
        total -= len(items) - len(kept)
        items = kept
    return items, total


async def readable_record(rt: Any, key: Any, package_id: str) -> ArchiveRecord:
    record = await archive_store(rt).get(package_id)
    if await role_for(rt, key, record.entity_id, record.flow_id) is None:
        raise NotFound(f"archive package {package_id!r} does not exist", field="id")
    return record


async def list_archives(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    items, total = await search_records(rt, principal(request), request.query)
    return web.json_response({"items": [r.to_json() for r in items], "total": total})


async def get_archive(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    record = await readable_record(rt, principal(request), request.match_info["id"])
    await require_role(request, record.entity_id, "reader")
    tree = unit_tree(await archive_store(rt).manifest(record.id))
    return web.json_response({**record.to_json(), "tree": tree})


async def stream_package(request: web.Request, record: ArchiveRecord, actor: str) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    chunks = await archive_store(rt).download(record, actor=actor)
    resp = web.StreamResponse(headers={
        "Content-Type": "application/zip", "Content-Length": str(record.size),
        "Content-Disposition": f'attachment; filename="{record.transfer_id}.zip"',
        "Digest": f"sha-256={record.sha256}"})
    await resp.prepare(request)
    async for chunk in chunks:
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def download_archive(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    key = principal(request)
    record = await readable_record(rt, key, request.match_info["id"])
    await require_role(request, record.entity_id, "reader")
    return await stream_package(request, record, f"api-key:{key.id}")


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get("/api/v1/archives", list_archives)
    app.router.add_get("/api/v1/archives/{id}", get_archive)
    app.router.add_get("/api/v1/archives/{id}/package", download_archive)


_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
OPENAPI_PATHS = {
    "/api/v1/archives": {
        "get": {"summary": "Search the sealed packages of the built-in archive store", "tags": ["archives"],
                "parameters": [{"name": n, "in": "query", "required": False, "schema": {"type": t}}
                               for n, t in (("entity", "string"), ("flow", "string"), ("from", "string"),
                                            ("to", "string"), ("keyword", "string"), ("title", "string"),
                                            ("q", "string"), ("limit", "integer"), ("offset", "integer"))],
                "responses": {"200": {"description": "Matching packages, newest first: {items, total}"},
                              "422": {"$ref": "#/components/responses/Problem"}}},
    },
    "/api/v1/archives/{id}": {
        "get": {"summary": "A package's index record and ArchiveUnit tree", "tags": ["archives"],
                "parameters": _ID,
                "responses": {"200": {"description": "The record with its tree"},
                              "404": {"$ref": "#/components/responses/Problem"}}},
    },
    "/api/v1/archives/{id}/package": {
        "get": {"summary": "Download the sealed package (journaled)", "tags": ["archives"], "parameters": _ID,
                "responses": {"200": {"description": "The package", "content": {"application/zip": {}}},
                              "404": {"$ref": "#/components/responses/Problem"}}},
    },
}
