"""/api/v1/openapi.json: OpenAPI 3.1, assembled from each route module's OPENAPI_PATHS."""

from __future__ import annotations

import importlib
from typing import Any

from aiohttp import web

from flowbus import __version__
from flowbus.api.registry import ROUTE_MODULES

COMPONENTS = {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "flowbus API key"}},
    "responses": {"Problem": {"description": "RFC 9457 problem (French title, offending field)",
                              "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}},
    "schemas": {
        "Problem": {"type": "object", "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "field": {"type": "string"}, "hint": {"type": "string"}}},
        "Document": {"type": "object", "properties": {
            "id": {"type": "string"}, "entity": {"type": "string"}, "flow": {"type": "string"},
            "state": {"type": "string"}, "step": {"type": ["string", "null"]},
            "last_error": {"type": ["string", "null"]}, "fields": {"type": "object"},
            "version": {"type": "integer"}, "flow_version": {"type": ["integer", "null"]},
            "files": {"type": "array", "items": {"type": "object"}},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"}}},
    },
}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name in ROUTE_MODULES:
        for path, ops in getattr(importlib.import_module(name), "OPENAPI_PATHS", {}).items():
            paths.setdefault(path, {}).update(ops)
    return {"openapi": "3.1.0",
            "info": {"title": "flowbus API", "version": __version__,
                     "description": "Routage de documents des collectivités : signature, télétransmission, "
                                    "mail sécurisé, GED, archivage SEDA."},
            "security": [{"bearer": []}], "paths": paths, "components": COMPONENTS}


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get("/api/v1/openapi.json", get_openapi)
