"""/api/v1/webhooks: register, list, delete webhooks and read their delivery log."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.api.auth import actor, principal, require_role, visible_entities
from flowbus.api.problems import json_body
from flowbus.connectors import webhooks
from flowbus.errors import NotFound, ValidationError


def _service(request: web.Request) -> webhooks.WebhookService:
    return webhooks.install(request.app[RUNTIME])


async def _visible_webhook(request: web.Request, role: str) -> dict[str, Any]:
    service = _service(request)
    hook = await service.get(request.match_info["id"])
    visible = await visible_entities(request.app[RUNTIME], principal(request))
    if visible is not None and hook["entity"] not in visible:
        raise NotFound(f"webhook {hook['id']} does not exist", field="webhook")
    await require_role(request, hook["entity"], role)
    return hook


async def post_webhook(request: web.Request) -> web.Response:
    body = await json_body(request)
    entity = body.get("entity")
    if not isinstance(entity, str) or not entity:
        raise ValidationError("'entity' (an entity id) is required", field="entity")
    if not isinstance(body.get("url"), str):
        raise ValidationError("'url' is required", field="url")
    await require_role(request, entity, "admin")
    hook, secret = await _service(request).create(
        entity_id=entity, url=body["url"], actor=actor(request), secret=body.get("secret"),
        flows=body.get("flows"), states=body.get("states"), description=str(body.get("description", "")))
    return web.json_response({**hook, "secret": secret}, status=201,
                             headers={"Location": f"/api/v1/webhooks/{hook['id']}"})


async def list_webhooks(request: web.Request) -> web.Response:
    visible = await visible_entities(request.app[RUNTIME], principal(request))
    return web.json_response({"webhooks": await _service(request).list(visible)})


async def get_webhook(request: web.Request) -> web.Response:
    return web.json_response(await _visible_webhook(request, "reader"))


async def delete_webhook(request: web.Request) -> web.Response:
    hook = await _visible_webhook(request, "admin")
    await _service(request).delete(hook["id"], actor=actor(request))
    return web.Response(status=204)


def _int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"query parameter {name!r} must be an integer", field=name) from None


async def get_deliveries(request: web.Request) -> web.Response:
    hook = await _visible_webhook(request, "reader")
    items = await _service(request).deliveries(hook["id"], document_id=request.query.get("document"),
                                               status=request.query.get("status"),
                                               limit=_int(request, "limit", 100), offset=_int(request, "offset", 0))
    return web.json_response({"webhook": hook["id"], "deliveries": items})


def setup(app: web.Application, runtime: Any) -> None:
    service = webhooks.install(runtime)

    async def start(_app: web.Application) -> None:
        await service.start()

    app.on_startup.append(start)
    app.router.add_post("/api/v1/webhooks", post_webhook)
    app.router.add_get("/api/v1/webhooks", list_webhooks)
    app.router.add_get("/api/v1/webhooks/{id}", get_webhook)
    app.router.add_delete("/api/v1/webhooks/{id}", delete_webhook)
    app.router.add_get("/api/v1/webhooks/{id}/deliveries", get_deliveries)


_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_WEBHOOK = {"type": "object", "properties": {
    "id": {"type": "string"}, "entity": {"type": "string"}, "url": {"type": "string", "format": "uri"},
    "flows": {"type": "array", "items": {"type": "string"}}, "states": {"type": "array", "items": {"type": "string"}},
    "description": {"type": "string"}, "created_by": {"type": "string"}, "created_at": {"type": "string"}}}
_PROBLEM = {"$ref": "#/components/responses/Problem"}

OPENAPI_PATHS = {
    "/api/v1/webhooks": {
        "post": {"summary": "Register a webhook: every state change of the entity's documents is POSTed, signed "
                            "with HMAC-SHA256 (header X-Flowbus-Signature: sha256=<hex> over the raw body)",
                 "tags": ["webhooks"],
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["entity", "url"],
                     "properties": {"entity": {"type": "string"}, "url": {"type": "string", "format": "uri"},
                                    "secret": {"type": "string", "minLength": 16},
                                    "flows": {"type": "array", "items": {"type": "string"}},
                                    "states": {"type": "array", "items": {"type": "string"}},
                                    "description": {"type": "string"}}}}}},
                 "responses": {"201": {"description": "Registered; the secret is shown once",
                                       "content": {"application/json": {"schema": _WEBHOOK}}},
                               "422": _PROBLEM, "403": _PROBLEM}},
        "get": {"summary": "List the webhooks of the entities visible to the caller", "tags": ["webhooks"],
                "responses": {"200": {"description": "Webhooks"}}},
    },
    "/api/v1/webhooks/{id}": {
        "get": {"summary": "Read a webhook (never its secret)", "tags": ["webhooks"], "parameters": _ID,
                "responses": {"200": {"description": "The webhook",
                                      "content": {"application/json": {"schema": _WEBHOOK}}}, "404": _PROBLEM}},
        "delete": {"summary": "Delete a webhook; its undelivered events are cancelled", "tags": ["webhooks"],
                   "parameters": _ID, "responses": {"204": {"description": "Deleted"}, "404": _PROBLEM}},
    },
    "/api/v1/webhooks/{id}/deliveries": {
        "get": {"summary": "Delivery log: events (newest first) with every attempt (time, HTTP status, error)",
                "tags": ["webhooks"],
                "parameters": _ID + [
                    {"name": "document", "in": "query", "schema": {"type": "string"}},
                    {"name": "status", "in": "query",
                     "schema": {"type": "string", "enum": ["pending", "delivered", "failed", "cancelled"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "default": 0}}],
                "responses": {"200": {"description": "Deliveries"}, "404": _PROBLEM}},
    },
}
