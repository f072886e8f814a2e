"""Counts every HTTP request by method, route pattern (never the raw path: ids would explode the series)
and status, for ``flowbus_http_requests_total``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from flowbus.metrics import HTTP_REQUESTS


def _route(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "(aucune route)"


@web.middleware
async def http_metrics_middleware(request: web.Request,
                                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                  ) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        HTTP_REQUESTS.labels(request.method, _route(request), str(status)).inc()
