"""The OpenAPI document matches the real /api/v1 routes: an undocumented route fails this test."""

from __future__ import annotations

import re

import pytest

from flowbus.api import create_app


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_every_api_v1_route_is_documented(runtime, server):
    app = create_app(runtime)
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/v1/") and route.method != "HEAD":
            routes.add((re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path), route.method.lower()))
    async with server.client() as c:
        doc = await (await c.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    documented.add(("/api/v1/openapi.json", "get"))
    missing = routes - documented
    assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"
    extra = documented - routes
    assert not extra, f"documented routes that do not exist: {sorted(extra)}"
