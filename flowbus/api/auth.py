"""API keys (stored hashed), roles per entity (admin, editor, reader), the auth middleware."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from aiohttp import web

from flowbus.errors import Forbidden, Unauthorized
from flowbus.models import ApiKey
from flowbus.store import repo

PRINCIPAL = web.RequestKey("principal", ApiKey)
ROLES = ("reader", "editor", "admin")
_ORDER = {r: i for i, r in enumerate(ROLES, 1)}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


async def create_api_key(rt: Any, *, name: str, roles: dict[str, str]) -> tuple[ApiKey, str]:
    """Create a key; return it and its secret (shown once, never stored in clear)."""
    for entity, role in roles.items():
        if role not in _ORDER:
            from flowbus.errors import ValidationError
            raise ValidationError(f"unknown role {role!r} for entity {entity!r}; roles: {', '.join(ROLES)}",
                                  field="roles")
    key_id = uuid.uuid4().hex[:16]
    secret = f"fbk_{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(key_id, name, dict(roles), rt.clock.now())
    async with rt.store.transaction() as tx:
        for entity in roles:
            if entity != "*":
                await repo.get_entity(tx, entity)
        await repo.insert_api_key(tx, key, hash_key(secret))
    return key, secret


async def authenticate(rt: Any, secret: str) -> ApiKey:
    async with rt.store.transaction() as tx:
        key = await repo.api_key_by_hash(tx, hash_key(secret))
    if key is None:
        raise Unauthorized("unknown API key", field="Authorization")
    if key.revoked_at is not None:
        raise Unauthorized("this API key has been revoked", field="Authorization")
    return key


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("missing 'Authorization: Bearer <API key>' header", field="Authorization")
    return value.strip()


def principal(request: web.Request) -> ApiKey:
    return request[PRINCIPAL]


async def role_for(rt: Any, key: ApiKey, entity_id: str) -> str | None:
    async with rt.store.transaction() as tx:
        chain = await repo.ancestors(tx, entity_id)
    return key.role_for(chain)


async def require_role(request: web.Request, entity_id: str, role: str) -> ApiKey:
    """Raise Forbidden unless the caller has ``role`` (or better) on the entity or one of its parents."""
    from flowbus.api import RUNTIME
    key = principal(request)
    have = await role_for(request.app[RUNTIME], key, entity_id)
    if have is None or _ORDER[have] < _ORDER[role]:
        raise Forbidden(f"this API key has no {role} right on entity {entity_id}", field="entity")
    return key


def is_global_admin(key: ApiKey) -> bool:
    return key.roles.get("*") == "admin"


async def visible_entities(rt: Any, key: ApiKey) -> list[str] | None:
    """Entity ids a key may read (None: all)."""
    if "*" in key.roles:
        return None
    async with rt.store.transaction() as tx:
        rows = await tx.fetch("SELECT id, parent_id FROM entities")
    children: dict[str | None, list[str]] = {}
    for r in rows:
        children.setdefault(r["parent_id"], []).append(r["id"])
    out: list[str] = []
    stack = list(key.roles)
    while stack:
        eid = stack.pop()
        if eid in out:
            continue
        out.append(eid)
        stack.extend(children.get(eid, []))
    return out


def actor(request: web.Request) -> str:
    return f"api-key:{principal(request).id}"


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/api/v1/") and request.path != "/api/v1/openapi.json":
        from flowbus.api import RUNTIME
        request[PRINCIPAL] = await authenticate(request.app[RUNTIME], bearer(request))
    return await handler(request)
