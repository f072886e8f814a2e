"""/api/v1 administration: API keys, connector instances (secrets redacted), flows and their graphs."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.api.auth import create_api_key, is_global_admin, principal, require_role
from flowbus.api.problems import json_body
from flowbus.errors import Forbidden, ValidationError
from flowbus.people import audit
from flowbus.store import repo


async def post_key(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await json_body(request)
    name, roles = body.get("name"), body.get("roles")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("the key needs a name", field="name")
    if not isinstance(roles, dict) or not roles:
        raise ValidationError("'roles' maps entity ids (or '*') to reader, editor or admin", field="roles")
    for entity in roles:
        if entity == "*":
            if not is_global_admin(principal(request)):
                raise Forbidden("only a platform administrator can grant rights on every entity", field="roles")
        else:
            await require_role(request, entity, "admin")
    key, secret = await create_api_key(rt, name=name.strip(), roles=roles, actor=principal(request).actor)
    return web.json_response({"id": key.id, "name": key.name, "roles": key.roles, "key": secret}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not is_global_admin(principal(request)):
        raise Forbidden("only a platform administrator can list API keys")
    async with rt.store.transaction() as tx:
        keys = await repo.list_api_keys(tx)
    return web.json_response({"items": [{"id": k.id, "name": k.name, "roles": k.roles,
                                         "revoked": k.revoked_at is not None} for k in keys]})


async def revoke_key(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not is_global_admin(principal(request)):
        raise Forbidden("only a platform administrator can revoke API keys")
    async with rt.store.transaction() as tx:
        key = await repo.get_api_key(tx, request.match_info["id"])
        await repo.revoke_api_key(tx, key.id, rt.clock.now())
        await audit.record(tx, actor=principal(request).actor, kind="admin.key.revoked", at=rt.clock.now(),
                           key=key.id, name=key.name, before={"roles": key.roles})
    return web.Response(status=204)


async def list_flows(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    items = []
    for flow in sorted(rt.flows.values(), key=lambda f: f.id):
        items.append({"id": flow.id, "label": flow.label, "description": flow.description,
                      "fields": [{"name": f.name, "type": f.type, "label": f.label, "required": f.required}
                                 for f in flow.fields],
                      "steps": [{"id": s.id, "label": s.label, "family": s.family, "connector": s.connector}
                                for s in flow.steps]})
    return web.json_response({"items": items})


async def flow_graph(request: web.Request) -> web.Response:
    from flowbus.flows.graph import to_mermaid
    flow = request.app[RUNTIME].flow(request.match_info["id"])
    return web.Response(text=to_mermaid(flow), content_type="text/plain")


def _instance_json(inst: Any) -> dict[str, Any]:
    return {"id": inst.id, "family": inst.family, "kind": inst.kind, "entity": inst.entity_id,
            "settings": inst.redacted()}


async def list_connectors(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    entity = request.query.get("entity")
    if entity:
        await require_role(request, entity, "reader")
    elif not is_global_admin(principal(request)):
        raise Forbidden("name an entity (?entity=) or use a platform administrator key", field="entity")
    async with rt.store.transaction() as tx:
        instances = await rt.instances.list_for(tx, entity)
    return web.json_response({"items": [_instance_json(i) for i in instances]})


async def put_connector(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await json_body(request)
    body["id"] = request.match_info["id"]
    entity = body.get("entity")
    if entity:
        await require_role(request, entity, "admin")
    elif not is_global_admin(principal(request)):
        raise Forbidden("only a platform administrator can configure a global connector", field="entity")
    async with rt.store.transaction() as tx:
        inst = await rt.instances.save(tx, body, at=rt.clock.now(), actor=principal(request).actor,
                                       demo=rt.settings.demo)
    return web.json_response(_instance_json(inst), status=200)


async def delete_connector(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    entity = request.query.get("entity")
    if entity:
        await require_role(request, entity, "admin")
    elif not is_global_admin(principal(request)):
        raise Forbidden("only a platform administrator can remove a global connector", field="entity")
    async with rt.store.transaction() as tx:
        await rt.instances.delete(tx, request.match_info["id"], entity, at=rt.clock.now(),
                                  actor=principal(request).actor)
    return web.Response(status=204)


async def dead_letters(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not is_global_admin(principal(request)):
        raise Forbidden("only a platform administrator can read the dead-letter store")
    queue = request.query.get("queue", "steps")
    items = await rt.bus.dead_letters(queue)
    return web.json_response({"items": [{"id": d.message.id, "queue": queue, "key": d.message.key,
                                         "body": dict(d.message.body), "error": d.error, "attempts": d.attempts,
                                         "failed_at": d.failed_at.isoformat()} for d in items]})


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_post("/api/v1/keys", post_key)
    r.add_get("/api/v1/keys", list_keys)
    r.add_delete("/api/v1/keys/{id}", revoke_key)
    r.add_get("/api/v1/flows", list_flows)
    r.add_get("/api/v1/flows/{id}/graph", flow_graph)
    r.add_get("/api/v1/connectors", list_connectors)
    r.add_put("/api/v1/connectors/{id}", put_connector)
    r.add_delete("/api/v1/connectors/{id}", delete_connector)
    r.add_get("/api/v1/dead-letters", dead_letters)


_P = {"$ref": "#/components/responses/Problem"}
_IDP = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
OPENAPI_PATHS = {
    "/api/v1/keys": {
        "post": {"summary": "Create an API key (the secret is returned once)", "tags": ["admin"],
                 "requestBody": {"content": {"application/json": {"schema": {
                     "type": "object", "required": ["name", "roles"],
                     "properties": {"name": {"type": "string"},
                                    "roles": {"type": "object", "additionalProperties": {
                                        "type": "string", "enum": ["reader", "editor", "admin"]}}}}}}},
                 "responses": {"201": {"description": "The key and its secret"}, "403": _P, "422": _P}},
        "get": {"summary": "List API keys (platform administrators)", "tags": ["admin"],
                "responses": {"200": {"description": "Keys, without secrets"}}},
    },
    "/api/v1/keys/{id}": {"delete": {"summary": "Revoke an API key", "tags": ["admin"], "parameters": [_IDP],
                                     "responses": {"204": {"description": "Revoked"}, "404": _P}}},
    "/api/v1/flows": {"get": {"summary": "List flows with their fields and steps", "tags": ["flows"],
                              "responses": {"200": {"description": "Flows"}}}},
    "/api/v1/flows/{id}/graph": {"get": {"summary": "The flow as a Mermaid diagram", "tags": ["flows"],
                                         "parameters": [_IDP],
                                         "responses": {"200": {"description": "Mermaid text"}, "404": _P}}},
    "/api/v1/connectors": {"get": {"summary": "Connector instances visible to an entity (secrets redacted)",
                                   "tags": ["connectors"],
                                   "parameters": [{"name": "entity", "in": "query", "schema": {"type": "string"}}],
                                   "responses": {"200": {"description": "Instances"}}}},
    "/api/v1/connectors/{id}": {
        "put": {"summary": "Configure a connector instance (global or for an entity)", "tags": ["connectors"],
                "parameters": [_IDP], "requestBody": {"content": {"application/json": {"schema": {
                    "type": "object", "required": ["family", "kind"],
                    "properties": {"family": {"type": "string"}, "kind": {"type": "string"},
                                   "entity": {"type": ["string", "null"]}, "settings": {"type": "object"}}}}}},
                "responses": {"200": {"description": "Saved (secrets redacted)"}, "422": _P}},
        "delete": {"summary": "Remove an API-configured connector instance", "tags": ["connectors"],
                   "parameters": [_IDP, {"name": "entity", "in": "query", "schema": {"type": "string"}}],
                   "responses": {"204": {"description": "Removed"}, "404": _P}},
    },
    "/api/v1/dead-letters": {"get": {"summary": "Messages that exhausted their deliveries", "tags": ["admin"],
                                     "parameters": [{"name": "queue", "in": "query", "schema": {"type": "string"}}],
                                     "responses": {"200": {"description": "Dead letters"}}}},
}
