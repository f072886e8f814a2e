"""/api/v1/users/{login}/tokens: personal API tokens (Pastell 4's « jetons »), created by the person or an administrator."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.api.auth import principal
from flowbus.api.problems import json_body
from flowbus.errors import Forbidden, NotFound, ValidationError
from flowbus.people import accounts, tokens
from flowbus.people.accounts import User


async def _owner(request: web.Request, tx: Any) -> User:
    """The account of the path, once the caller may manage its tokens (``tokens.may_manage``)."""
    user = await accounts.by_login(tx, request.match_info["login"])
    if user is None:
        raise NotFound(f"Aucun compte « {request.match_info['login']} ».", field="login")
    if not await tokens.may_manage(tx, principal(request), user):
        raise Forbidden("Seuls la personne elle-même et un administrateur de toutes les collectivités où elle a des "
                        "droits gèrent ses jetons.", field="login")
    return user


async def post_token(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await json_body(request)
    days = body.get("expires_in_days")
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650):
        raise ValidationError("expires_in_days : un nombre de jours entre 1 et 3650 (ou absent : sans expiration).",
                              field="expires_in_days")
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        user = await _owner(request, tx)
        token, secret = await tokens.create(tx, user, name=body.get("name"), actor=principal(request).actor, now=now,
                                            expires_at=now + timedelta(days=days) if days else None)
    return web.json_response({**token.to_json(), "login": user.login, "token": secret}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    async with rt.store.transaction() as tx:
        user = await _owner(request, tx)
        items = await tokens.list_for(tx, user.id)
    return web.json_response({"items": [t.to_json() for t in items]})


async def revoke_token(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    async with rt.store.transaction() as tx:
        user = await _owner(request, tx)
        await tokens.revoke(tx, user, request.match_info["id"], actor=principal(request).actor, now=rt.clock.now())
    return web.Response(status=204)


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_post("/api/v1/users/{login}/tokens", post_token)
    app.router.add_get("/api/v1/users/{login}/tokens", list_tokens)
    app.router.add_delete("/api/v1/users/{login}/tokens/{id}", revoke_token)


_P = {"$ref": "#/components/responses/Problem"}
_LOGIN = {"name": "login", "in": "path", "required": True, "schema": {"type": "string"}}
OPENAPI_PATHS = {
    "/api/v1/users/{login}/tokens": {
        "post": {"summary": "Create a personal API token (Bearer, acts as the person; the secret is returned once)",
                 "tags": ["people"], "parameters": [_LOGIN],
                 "requestBody": {"content": {"application/json": {"schema": {
                     "type": "object", "required": ["name"],
                     "properties": {"name": {"type": "string"},
                                    "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 3650}}}}}},
                 "responses": {"201": {"description": "The token and its secret"}, "403": _P, "404": _P,
                               "422": _P}},
        "get": {"summary": "List a person's tokens (without secrets)", "tags": ["people"], "parameters": [_LOGIN],
                "responses": {"200": {"description": "Tokens"}, "403": _P, "404": _P}},
    },
    "/api/v1/users/{login}/tokens/{id}": {
        "delete": {"summary": "Revoke a personal API token", "tags": ["people"],
                   "parameters": [_LOGIN, {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                   "responses": {"204": {"description": "Revoked"}, "403": _P, "404": _P}},
    },
}
