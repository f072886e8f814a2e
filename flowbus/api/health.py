"""/healthz (process alive), /readyz (every backend answers), /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flowbus.api import RUNTIME


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[RUNTIME].checks()
    ok = all(h.ok for h in checks.values())
    body = {"status": "ok" if ok else "unavailable",
            "checks": {k: {"ok": h.ok, "detail": h.detail, **({"fix": h.fix} if h.fix else {})}
                       for k, h in checks.items()}}
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    from flowbus import metrics as series
    await series.refresh(request.app[RUNTIME])
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
