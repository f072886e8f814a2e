"""Static files of the pages (style sheet, vendored scripts) served from the package, never from a CDN."""

from __future__ import annotations

import mimetypes
from importlib import resources
from typing import Any

from aiohttp import web

_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".txt": "text/plain"}


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if "/" in name.removeprefix("vendor/") or name.startswith(".") or ".." in name:
        raise web.HTTPNotFound()
    res = resources.files("flowbus.web").joinpath("static", *name.split("/"))
    if not res.is_file():
        raise web.HTTPNotFound()
    suffix = "." + name.rsplit(".", 1)[-1]
    media = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    resp = web.Response(body=res.read_bytes(), content_type=media,
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
    if suffix in (".js", ".css"):
        resp.enable_compression()
    return resp


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get("/static/{name:.+}", static_file)
