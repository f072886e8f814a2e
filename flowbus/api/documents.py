"""/api/v1/documents: create, read, change fields, upload/download files, search, actions, journal."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from flowbus import documents, journal
from flowbus.api import RUNTIME
from flowbus.api.auth import actor, document_scope, principal, require_role, role_for
from flowbus.api.problems import json_body
from flowbus.clock import isoformat, parse_iso
from flowbus.errors import BadRequest, NotFound, ValidationError
from flowbus.metrics import BYTES_UPLOADED, DOCUMENTS_CREATED
from flowbus.store import repo

CHUNK = 256 * 1024


async def _readable_document(request: web.Request, role: str = "reader") -> Any:
    rt = request.app[RUNTIME]
    doc = await documents.get_document(rt, request.match_info["id"])
    if await role_for(rt, principal(request), doc.entity_id, doc.flow_id) is None:
        # do not tell a caller without any right on it that the document exists
        raise NotFound(f"Le document {doc.id} n'existe pas.", field="id")
    await require_role(request, doc.entity_id, role, doc.flow_id)
    return doc


def _doc_json(request: web.Request, doc: Any) -> dict[str, Any]:
    data = doc.to_json()
    data["links"] = {"self": f"/api/v1/documents/{doc.id}",
                     "journal": f"/api/v1/documents/{doc.id}/journal",
                     "files": {f.field: f"/api/v1/documents/{doc.id}/files/{f.field}" for f in doc.files}}
    return data


async def post_document(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await json_body(request)
    entity, flow, fields = body.get("entity"), body.get("flow"), body.get("fields", {})
    if not isinstance(entity, str) or not entity:
        raise ValidationError("« entity » (l'identifiant d'une collectivité) est obligatoire.", field="entity")
    if not isinstance(flow, str) or not flow:
        raise ValidationError("« flow » (l'identifiant d'un flux) est obligatoire.", field="flow")
    if not isinstance(fields, dict):
        raise ValidationError("« fields » doit être un objet (nom du champ : valeur).", field="fields")
    async with rt.store.transaction() as tx:
        await repo.get_entity(tx, entity)
    rt.flow(flow)
    await require_role(request, entity, "editor", flow)
    doc = await documents.create_document(rt, entity_id=entity, flow_id=flow, fields=fields, actor=actor(request))
    DOCUMENTS_CREATED.labels(flow).inc()
    return web.json_response(_doc_json(request, doc), status=201, headers={"Location": f"/api/v1/documents/{doc.id}"})


async def get_document(request: web.Request) -> web.Response:
    doc = await _readable_document(request)
    return web.json_response(_doc_json(request, doc))


async def patch_document(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    doc = await _readable_document(request, "editor")
    body = await json_body(request)
    fields = body.get("fields", body)
    if not isinstance(fields, dict):
        raise ValidationError("« fields » doit être un objet (nom du champ : valeur).", field="fields")
    version = body.get("version")
    if_match = request.headers.get("If-Match")
    if if_match:
        try:
            version = int(if_match.strip('"W/'))
        except ValueError as exc:
            raise BadRequest("If-Match must carry the document version", field="If-Match") from exc
    new = await documents.update_fields(rt, doc.id, fields, actor=actor(request),
                                        expected_version=int(version) if version is not None else None)
    new = await documents.get_document(rt, new.id)
    return web.json_response(_doc_json(request, new))


async def _upload_chunks(request: web.Request) -> tuple[str, str, AsyncIterator[bytes]]:
    ctype = request.headers.get("Content-Type", "")
    if ctype.startswith("multipart/"):
        reader = await request.multipart()
        part = await reader.next()
        while part is not None and getattr(part, "name", None) not in ("file", None):
            part = await reader.next()
        if part is None or not hasattr(part, "read_chunk"):
            raise ValidationError("Le corps multipart n'a pas de partie « file ».", field="file")
        # clients percent-encode the name in Content-Disposition (aiohttp does): decode before checking it
        filename = unquote(part.filename or "")
        media_type = part.headers.get("Content-Type", "application/octet-stream")

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                chunk = await part.read_chunk(CHUNK)
                if not chunk:
                    break
                BYTES_UPLOADED.inc(len(chunk))
                yield chunk
        return filename, media_type, chunks()
    filename = request.query.get("filename", "")

    async def raw() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(CHUNK):
            BYTES_UPLOADED.inc(len(chunk))
            yield chunk
    return filename, ctype or "application/octet-stream", raw()


async def put_file(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    doc = await _readable_document(request, "editor")
    field = request.match_info["field"]
    filename, media_type, chunks = await _upload_chunks(request)
    if not filename:
        raise ValidationError("L'envoi n'a pas de nom de fichier (filename du multipart, ou ?filename=).", field="filename")
    append = request.query.get("append")
    ref = await documents.attach_file(rt, doc.id, field, filename=filename, media_type=media_type, chunks=chunks,
                                      actor=actor(request), append=None if append is None else append == "true")
    return web.json_response(ref.to_json(), status=201)


async def get_file(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    doc = await _readable_document(request)
    field = request.match_info["field"]
    index = int(request.query.get("index", "0"))
    files = doc.files_of(field)
    if len(files) <= index:
        raise NotFound(f"Aucun fichier dans le champ « {field} »" + (f" à la position {index}" if index else "") + ".", field=field)
    ref = files[index]
    resp = web.StreamResponse(headers={
        "Content-Type": ref.media_type, "Content-Length": str(ref.size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(ref.filename)}",
        "Digest": "sha-256=" + base64.b64encode(bytes.fromhex(ref.sha256)).decode(),
        "ETag": f'"{ref.sha256}"'})
    await resp.prepare(request)
    async for chunk in rt.blobs.open(ref.blob_key):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def _cursor(doc: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([isoformat(doc.created_at), doc.id]).encode()).decode()


async def search(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    q = request.query
    try:
        limit = max(1, min(int(q.get("limit", "50")), 500))
    except ValueError as exc:
        raise ValidationError("« limit » doit être un nombre.", field="limit") from exc
    try:
        since = parse_iso(q["since"]) if q.get("since") else None
        until = parse_iso(q["until"]) if q.get("until") else None
    except ValueError as exc:
        raise ValidationError(f"Date invalide : {exc}", field="since" if "since" in str(exc) else "until") from exc
    after = None
    if q.get("cursor"):
        try:
            after = tuple(json.loads(base64.urlsafe_b64decode(q["cursor"].encode())))
        except (ValueError, TypeError) as exc:
            raise ValidationError("Curseur de pagination invalide.", field="cursor") from exc
    scope = await document_scope(rt, principal(request))
    entity_ids = None
    if q.get("entity"):
        visible = scope.entity_ids
        if visible is not None and q["entity"] not in visible:
            raise NotFound(f"La collectivité {q['entity']} n'existe pas.", field="entity")
        entity_ids = [q["entity"]]
    async with rt.store.transaction() as tx:
        docs = await repo.search_documents(tx, scope=scope, entity_ids=entity_ids, flow=q.get("flow"),
                                           state=q.get("state"),
                                           since=since, until=until, q=q.get("q"), limit=limit + 1,
                                           after=after)  # type: ignore[arg-type]
    more = len(docs) > limit
    docs = docs[:limit]
    return web.json_response({"items": [d.to_json() for d in docs],
                              "next_cursor": _cursor(docs[-1]) if more and docs else None})


async def post_action(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    action = request.match_info["action"]
    doc = await _readable_document(request, "admin" if action in ("skip", "cancel", "resume", "retry") else "editor")
    comment = None
    if request.can_read_body:
        body = await json_body(request)
        comment = body.get("comment")
    new = await documents.run_action(rt, doc.id, action, actor=actor(request), comment=comment)
    new = await documents.get_document(rt, new.id)
    return web.json_response(_doc_json(request, new))


async def get_journal(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    doc = await _readable_document(request)
    async with rt.store.transaction() as tx:
        rows = await journal.document_rows(tx, doc.id)
        # these entries where they sit in the chain (content, links to their neighbours, head), never
        # the entity's whole chain: that is `flowbus journal verify`'s job
        breaks = await journal.verify_entries(tx, rows)
    return web.json_response({"items": [journal.row_to_entry(r).to_json() for r in rows],
                              "chain_ok": not breaks, "chain_scope": "entries",
                              "chain_breaks": [str(b) for b in breaks]})


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_post("/api/v1/documents", post_document)
    r.add_get("/api/v1/documents", search)
    r.add_get("/api/v1/documents/{id}", get_document)
    r.add_patch("/api/v1/documents/{id}", patch_document)
    r.add_put("/api/v1/documents/{id}/files/{field}", put_file)
    r.add_get("/api/v1/documents/{id}/files/{field}", get_file)
    r.add_post("/api/v1/documents/{id}/actions/{action}", post_action)
    r.add_get("/api/v1/documents/{id}/journal", get_journal)


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_FIELD = {"name": "field", "in": "path", "required": True, "schema": {"type": "string"}}
_P = {"$ref": "#/components/responses/Problem"}
_DOC = {"$ref": "#/components/schemas/Document"}
OPENAPI_PATHS = {
    "/api/v1/documents": {
        "post": {"summary": "Create a document of a flow in an entity", "tags": ["documents"],
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["entity", "flow"],
                     "properties": {"entity": {"type": "string"}, "flow": {"type": "string"},
                                    "fields": {"type": "object"}}}}}},
                 "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": _DOC}}},
                               "404": _P, "422": _P}},
        "get": {"summary": "Search documents", "tags": ["documents"],
                "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                               for n in ("entity", "flow", "state", "since", "until", "q", "limit", "cursor")],
                "responses": {"200": {"description": "A page of documents and the next cursor"}}},
    },
    "/api/v1/documents/{id}": {
        "get": {"summary": "Read a document", "tags": ["documents"], "parameters": [_ID],
                "responses": {"200": {"description": "The document", "content": {"application/json": {"schema": _DOC}}},
                              "404": _P}},
        "patch": {"summary": "Change fields (If-Match: version for optimistic concurrency)", "tags": ["documents"],
                  "parameters": [_ID], "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                  "responses": {"200": {"description": "Updated"}, "409": _P, "422": _P}},
    },
    "/api/v1/documents/{id}/files/{field}": {
        "put": {"summary": "Upload a file to a file field (multipart 'file' part, streamed)", "tags": ["documents"],
                "parameters": [_ID, _FIELD],
                "requestBody": {"content": {"multipart/form-data": {"schema": {
                    "type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}}}},
                "responses": {"201": {"description": "Stored"}, "413": _P, "422": _P}},
        "get": {"summary": "Download a file", "tags": ["documents"],
                "parameters": [_ID, _FIELD, {"name": "index", "in": "query", "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "The bytes"}, "404": _P}},
    },
    "/api/v1/documents/{id}/actions/{action}": {
        "post": {"summary": "Run an action: start, retry, skip, cancel, resume", "tags": ["documents"],
                 "parameters": [_ID, {"name": "action", "in": "path", "required": True,
                                      "schema": {"type": "string",
                                                 "enum": ["start", "retry", "skip", "cancel", "resume"]}}],
                 "responses": {"200": {"description": "The document after the action"}, "409": _P}},
    },
    "/api/v1/documents/{id}/journal": {
        "get": {"summary": "The document's journal entries and the chain status of these entries",
                "description": "chain_ok (chain_scope: entries) says that each entry's content matches its hash, "
                               "that it follows the previous entry of the chain and the next one follows it (or it is "
                               "the recorded chain head); the entity's whole chain is verified by `flowbus journal "
                               "verify`.", "tags": ["documents"],
                "parameters": [_ID], "responses": {"200": {"description": "Journal"}}},
    },
}
