"""/api/v1/entities: collectivités and their hierarchy."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus import entities
from flowbus.entities import siren_ok  # noqa: F401 - imported from here by older callers
from flowbus.api import RUNTIME
from flowbus.api.auth import actor, is_global_admin, principal, require_role, visible_entities
from flowbus.api.problems import json_body
from flowbus.errors import Forbidden, ValidationError
from flowbus.models import Entity
from flowbus.store import repo

async def create_entity(rt: Any, *, name: str, siren: str | None, parent: str | None, actor_name: str) -> Entity:
    return await entities.create(rt, name=name, siren=siren, parent=parent, actor_name=actor_name)


async def post_entity(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await json_body(request)
    parent = body.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise ValidationError("'parent' must be an entity id", field="parent")
    if parent is None:
        if not is_global_admin(principal(request)):
            raise Forbidden("only a platform administrator can create a top-level entity", field="parent")
    else:
        async with rt.store.transaction() as tx:
            await repo.get_entity(tx, parent)
        await require_role(request, parent, "admin")
    entity = await create_entity(rt, name=body.get("name"), siren=body.get("siren"), parent=parent,
                                 actor_name=actor(request))
    return web.json_response(entity.to_json(), status=201,
                             headers={"Location": f"/api/v1/entities/{entity.id}"})


async def get_entity(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    entity_id = request.match_info["id"]
    async with rt.store.transaction() as tx:
        entity = await repo.get_entity(tx, entity_id)
    await require_role(request, entity.id, "reader")
    return web.json_response(entity.to_json())


async def list_entities(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    visible = await visible_entities(rt, principal(request))
    async with rt.store.transaction() as tx:
        entities = await repo.list_entities(tx)
    items = [e.to_json() for e in entities if visible is None or e.id in visible]
    return web.json_response({"items": items})


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_post("/api/v1/entities", post_entity)
    app.router.add_get("/api/v1/entities", list_entities)
    app.router.add_get("/api/v1/entities/{id}", get_entity)


_ENTITY = {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                                            "siren": {"type": ["string", "null"]},
                                            "parent": {"type": ["string", "null"]},
                                            "created_at": {"type": "string", "format": "date-time"}}}
OPENAPI_PATHS = {
    "/api/v1/entities": {
        "post": {"summary": "Create an entity (collectivité)", "tags": ["entities"],
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["name"],
                     "properties": {"name": {"type": "string"}, "siren": {"type": "string", "pattern": "^\\d{9}$"},
                                    "parent": {"type": "string"}}}}}},
                 "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": _ENTITY}}},
                               "422": {"$ref": "#/components/responses/Problem"}}},
        "get": {"summary": "List the entities visible to the caller", "tags": ["entities"],
                "responses": {"200": {"description": "Entities"}}},
    },
    "/api/v1/entities/{id}": {
        "get": {"summary": "Read an entity", "tags": ["entities"],
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The entity", "content": {"application/json": {"schema": _ENTITY}}},
                              "404": {"$ref": "#/components/responses/Problem"}}},
    },
}
