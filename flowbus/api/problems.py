"""RFC 9457 problem documents: every error leaves as application/problem+json with a French title."""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

from flowbus.errors import BadRequest, FlowbusError

log = structlog.get_logger(__name__)
PROBLEM = "application/problem+json"
_HTTP_TITLES = {400: "Requête invalide", 401: "Authentification requise", 403: "Accès refusé",
                404: "Ressource introuvable", 405: "Méthode non autorisée", 409: "Conflit",
                413: "Fichier trop volumineux", 429: "Trop de tentatives", 415: "Type de contenu non pris en charge",
                422: "Donnée invalide", 500: "Erreur interne", 503: "Service indisponible"}


def problem_response(status: int, title: str, detail: str, *, slug: str = "about:blank", field: str | None = None,
                     hint: str | None = None, instance: str | None = None, retry_after: int | None = None,
                     **extra: Any) -> web.Response:
    body: dict[str, Any] = {"type": slug if slug == "about:blank" else f"https://flowbus.fr/problems/{slug}",
                            "title": title, "status": status, "detail": detail}
    if field:
        body["field"] = field
    if hint:
        body["hint"] = hint
    if instance:
        body["instance"] = instance
    body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="flowbus"'} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.Response(status=status, text=json.dumps(body, ensure_ascii=False), content_type=PROBLEM,
                        headers=headers)


def from_error(exc: FlowbusError, request: web.Request) -> web.Response:
    extra = {}
    if getattr(exc, "expected_version", None) is not None:
        extra["expected_version"] = exc.expected_version  # type: ignore[attr-defined]
    return problem_response(exc.status, exc.title, exc.message, slug=exc.type_slug, field=exc.field,
                            hint=exc.hint, instance=request.path, retry_after=getattr(exc, "retry_after", None),
                            **extra)


@web.middleware
async def problems_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except FlowbusError as exc:
        if exc.status >= 500:
            log.warning("request.failed", path=request.path, error=str(exc))
        return from_error(exc, request)
    except web.HTTPException as exc:
        if exc.status < 400 or not (request.path.startswith("/api/") or exc.status >= 500):
            raise
        return problem_response(exc.status, _HTTP_TITLES.get(exc.status, exc.reason), exc.text or exc.reason,
                                instance=request.path)
    except Exception:  # noqa: BLE001 - never leak a traceback to a client
        log.exception("request.crashed", path=request.path)
        return problem_response(500, "Erreur interne", "an unexpected error occurred; it has been logged",
                                instance=request.path)


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", field="body") from exc
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object", field="body")
    return data
