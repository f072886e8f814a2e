"""HTTP API: ``create_app(runtime)`` assembles middlewares and the route modules of registry.py."""

from __future__ import annotations

import importlib
from typing import Any

from aiohttp import web

from flowbus.api.registry import ROUTE_MODULES

RUNTIME = web.AppKey("runtime", object)


def create_app(runtime: Any) -> web.Application:
    from flowbus.api.auth import auth_middleware
    from flowbus.api.http_metrics import http_metrics_middleware
    from flowbus.api.problems import problems_middleware
    from flowbus.web.session import web_session_middleware

    app = web.Application(middlewares=[http_metrics_middleware, problems_middleware, auth_middleware,
                                       web_session_middleware],
                          client_max_size=runtime.settings.max_upload_size + 1024 * 1024)
    app[RUNTIME] = runtime
    from flowbus import forwarded
    app[forwarded.TRUSTED] = forwarded.parse(runtime.settings.trusted_proxies)
    from flowbus.web import headers
    headers.setup(app)  # security headers on every response, streamed downloads included
    for name in ROUTE_MODULES:
        importlib.import_module(name).setup(app, runtime)
    from flowbus.api import openapi
    openapi.setup(app, runtime)
    return app


def runtime_of(request: web.Request) -> Any:
    return request.app[RUNTIME]
