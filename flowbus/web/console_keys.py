"""Console: API keys of the business applications — list, create (the secret shown once), revoke."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus.api.auth import create_api_key
from flowbus.errors import FlowbusError, ValidationError
from flowbus.people import access, audit
from flowbus.people.access import ROLE_LABELS, grants_from_roles
from flowbus.store import repo
from flowbus.web import console
from flowbus.web.console_people import _resolve_entity, grant_label

BASE = "/admin/cles"


async def _visible_keys(request: web.Request, who: Any) -> list[Any]:
    """Platform administrators see every key; an entity administrator the keys whose rights lie within their entities."""
    rt = console.runtime(request)
    administered = await console.administered_entities(request, who)
    async with rt.store.transaction() as tx:
        keys = await repo.list_api_keys(tx)
    if administered is None:
        return keys
    mine = set(administered)
    return [k for k in keys if k.roles and all(e in mine for e in k.roles)]


async def keys_page(request: web.Request, *, status: int = 200, errors: dict[str, str] | None = None,
                    form: Any = None, created: Any = None) -> web.Response:
    who = await console.signed_in(request)
    if not console.is_entity_admin(who):
        raise console.forbid(request, who, "Cette page est réservée aux administrateurs de collectivités.")
    rt = console.runtime(request)
    keys = await _visible_keys(request, who)
    flow_labels = {f.id: f.label for f in rt.flows.values()}
    async with rt.store.transaction() as tx:
        wanted = {e for k in keys for e in k.roles} - {access.EVERY_ENTITY}
        names = {i: e.name for i, e in (await repo.entities_by_ids(tx, wanted)).items()}
    rows = [{"key": k, "rights": [grant_label(g, names, flow_labels) for g in grants_from_roles(k.roles)]}
            for k in sorted(keys, key=lambda k: (k.revoked_at is not None, k.name))]
    return await console.page(request, "console_keys.html", who=who, status=status, rows=rows, errors=errors or {},
                              form=form or {}, created=created, flows=sorted(rt.flows.values(), key=lambda f: f.label),
                              roles=ROLE_LABELS)


async def create(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    form = await request.post()
    try:
        name = str(form.get("name", "")).strip()
        if not name:
            raise ValidationError("Donnez un nom à la clé (le logiciel qui l'utilisera).", field="name")
        async with rt.store.transaction() as tx:
            entity = await _resolve_entity(tx, str(form.get("entity", "")))
        await console.require_entity_role(request, who, entity.id, "admin")
        role = str(form.get("role", ""))
        if role not in access.ORDER:
            raise ValidationError("Choisissez un rôle.", field="role")
        flows = [f for f in form.getall("flows", []) if f in rt.flows]
        roles: dict[str, Any] = {entity.id: {"role": role, "flows": flows} if flows else role}
        key, secret = await create_api_key(rt, name=name, roles=roles, actor=who.actor)
    except FlowbusError as exc:
        return await keys_page(request, status=422, errors={exc.field or "name": exc.message}, form=form)
    return await keys_page(request, created={"key": key, "secret": secret, "entity": entity.name})


async def revoke(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    key_id = request.match_info["id"]
    if key_id not in {k.id for k in await _visible_keys(request, who)}:
        raise console.forbid(request, who, "Cette clé ne relève pas des collectivités que vous administrez.")
    async with rt.store.transaction() as tx:
        key = await repo.get_api_key(tx, key_id)
        if key.revoked_at is not None:
            raise console.failed(BASE, f"La clé « {key.name} » est déjà révoquée.")
        await repo.revoke_api_key(tx, key.id, rt.clock.now())
        await audit.record(tx, actor=who.actor, kind="admin.key.revoked", at=rt.clock.now(), key=key.id,
                           name=key.name, before={"roles": key.roles})
    raise console.done(BASE, f"Clé « {key.name} » révoquée : elle ne donne plus accès à rien.")


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get(BASE, keys_page)
    app.router.add_post(BASE, create)
    app.router.add_post(BASE + "/{id}/revoquer", revoke)
