"""Who calls the API: an API key or a person's token (Bearer, stored hashed) or web session; rights asked of flowbus.people.access.

API keys hold roles per entity — ``{"<entity id>|*": "reader|editor|admin"}``, or
``{"<entity id>": {"role": "editor", "flows": ["rh-contrat"]}}`` to restrict a key to some flows —
and become a ``Principal`` like a person does, so both are checked by the same code.  A person's
personal token (``fbt_…``, ``flowbus.people.tokens``) acts as that person.  A call
without ``Authorization`` but with the web session cookie acts as that person; a state-changing
call made that way must carry the session's CSRF token in ``X-CSRF-Token``.  A wrong key counts
against its source address and the key id it names (flowbus.people.limits): past the limit it is
answered 429 with ``Retry-After``; a right key is never slowed down.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import Any

from aiohttp import web

from flowbus.errors import Forbidden, Unauthorized, ValidationError
from flowbus.models import ApiKey
from flowbus.people import access, audit, limits, sessions, tokens
from flowbus.people.access import Principal, grants_from_roles
from flowbus.people.accounts import principal as user_principal
from flowbus.store import repo

PRINCIPAL = web.RequestKey("principal", Principal)
ROLES = access.ROLES
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _check_roles(roles: dict[str, Any]) -> None:
    for entity, value in roles.items():
        role = value.get("role") if isinstance(value, dict) else value
        flows = value.get("flows") if isinstance(value, dict) else None
        if role not in access.ORDER:
            raise ValidationError(f"unknown role {role!r} for entity {entity!r}; roles: {', '.join(ROLES)}",
                                  field="roles")
        if flows is not None and (not isinstance(flows, list) or not all(isinstance(f, str) for f in flows)):
            raise ValidationError(f"'flows' for entity {entity!r} must be a list of flow ids", field="roles")


async def create_api_key(rt: Any, *, name: str, roles: dict[str, Any], actor: str = "system") -> tuple[ApiKey, str]:
    """Create a key; return it and its secret (shown once, never stored in clear, never journaled)."""
    _check_roles(roles)
    key_id = uuid.uuid4().hex[:16]
    secret = f"fbk_{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(key_id, name, dict(roles), rt.clock.now())
    async with rt.store.transaction() as tx:
        for entity in roles:
            if entity != access.EVERY_ENTITY:
                await repo.get_entity(tx, entity)
        await repo.insert_api_key(tx, key, hash_key(secret))
        await audit.record(tx, actor=actor, kind="admin.key.created", at=key.created_at, key=key.id, name=name,
                           after={"roles": key.roles})
    return key, secret


def key_principal(key: ApiKey) -> Principal:
    return Principal("key", key.id, key.name, grants_from_roles(key.roles))


async def authenticate_key(rt: Any, secret: str) -> ApiKey:
    async with rt.store.transaction() as tx:
        key = await repo.api_key_by_hash(tx, hash_key(secret))
    if key is None:
        raise Unauthorized("unknown API key", field="Authorization")
    if key.revoked_at is not None:
        raise Unauthorized("this API key has been revoked", field="Authorization")
    return key


def key_identity(secret: str) -> str | None:
    """The key id a presented secret names (``fbk_<id>_…``), counted as the identity tried; None otherwise."""
    parts = secret.split("_", 2)
    return parts[1][:32] if len(parts) == 3 and parts[0] == "fbk" and parts[1] else None


async def authenticate_key_limited(rt: Any, secret: str, address: str, *, door: str = "api") -> ApiKey:
    """``authenticate_key``, a failure counted (and journaled) against ``address`` and the key id tried.

    Raises:
        Unauthorized: wrong or revoked key.
        TooManyAttempts: wrong key, and the address (or key id) is past its limit.
    """
    return await limits.counted(rt, door, address, key_identity(secret), authenticate_key(rt, secret))


async def authenticate(rt: Any, secret: str) -> Principal:
    """The principal of an API key secret."""
    return key_principal(await authenticate_key(rt, secret))


async def session_principal(rt: Any, token: str | None) -> Principal | None:
    """The person behind a web session cookie (None: no live session)."""
    if not token:
        return None
    async with rt.store.transaction() as tx:
        session = await sessions.load(tx, token, rt.clock.now())
        if session is None:
            return None
        return await user_principal(tx, session.user, session_csrf=session.csrf)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("missing 'Authorization: Bearer <API key>' header", field="Authorization")
    return value.strip()


async def request_principal(request: web.Request) -> Principal:
    """Bearer API key, or else the web session cookie (CSRF header required to change anything)."""
    from flowbus.api import RUNTIME
    rt = request.app[RUNTIME]
    if "Authorization" not in request.headers:
        who = await session_principal(rt, request.cookies.get(sessions.COOKIE))
        if who is not None:
            if who.must_change_password:
                raise Forbidden("choose your own password first (/mot-de-passe/changer): the one given to you "
                                "serves only once", field="password")
            if request.method not in _SAFE and not csrf_matches(who.session_csrf,
                                                                 request.headers.get("X-CSRF-Token")):
                raise Forbidden("a call made with a web session must carry its CSRF token in X-CSRF-Token",
                                field="X-CSRF-Token")
            return who
    secret = bearer(request)
    if secret.startswith(tokens.PREFIX):  # a person's personal token: acts as that person
        return await tokens.authenticate_limited(rt, secret, limits.source_address(request), door="api")
    key = await authenticate_key_limited(rt, secret, limits.source_address(request))
    return key_principal(key)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def role_for(rt: Any, who: Principal, entity_id: str, flow_id: str | None = None) -> str | None:
    async with rt.store.transaction() as tx:
        return await access.role_on(tx, who, entity_id, flow_id)


async def require_role(request: web.Request, entity_id: str, role: str, flow_id: str | None = None) -> Principal:
    """Raise Forbidden unless the caller has ``role`` (or better) on the entity, for ``flow_id``'s documents."""
    from flowbus.api import RUNTIME
    who = principal(request)
    have = await role_for(request.app[RUNTIME], who, entity_id, flow_id)
    if not access.has(have, role):
        what = f" for flow {flow_id}" if flow_id else ""
        raise Forbidden(f"no {role} right on entity {entity_id}{what}", field="entity")
    return who


def is_global_admin(who: Principal) -> bool:
    return who.is_platform_admin


async def visible_entities(rt: Any, who: Principal) -> list[str] | None:
    """Entity ids where the caller may read something (None: all)."""
    async with rt.store.transaction() as tx:
        return (await access.scope(tx, who)).entity_ids


async def document_scope(rt: Any, who: Principal, role: str = "reader") -> access.Scope:
    async with rt.store.transaction() as tx:
        return await access.scope(tx, who, role)


def actor(request: web.Request) -> str:
    return principal(request).actor


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/api/v1/") and request.path != "/api/v1/openapi.json":
        request[PRINCIPAL] = await request_principal(request)
    return await handler(request)
