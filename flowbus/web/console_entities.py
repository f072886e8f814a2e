"""Console: the entity tree (collectivités) a person administers — browse level by level, search, create, rename, move, deactivate."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus import entities
from flowbus.errors import FlowbusError
from flowbus.store import repo
from flowbus.web import console

BASE = "/admin/collectivites"


async def _roots(tx: Any, who: Any) -> list[Any]:
    """Top of what ``who`` administers: the platform's top level, or their granted entities."""
    if who.is_platform_admin:
        return await repo.children(tx, None)
    ids = sorted({g.entity_id for g in who.grants if g.role == "admin" and g.flows is None})
    return sorted((await repo.entities_by_ids(tx, ids)).values(), key=lambda e: e.name)


async def tree_page(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    if not console.is_entity_admin(who):
        raise console.forbid(request, who, "Cette page est réservée aux administrateurs de collectivités.")
    rt = console.runtime(request)
    parent_id = request.query.get("parent") or None
    q = (request.query.get("q") or "").strip()
    administered = await console.administered_entities(request, who)
    async with rt.store.transaction() as tx:
        parent, path, found = None, [], None
        if parent_id:
            if administered is not None and parent_id not in administered:
                raise console.forbid(request, who, "Vous n'administrez pas cette collectivité.")
            parent = await repo.get_entity(tx, parent_id)
            chain = await repo.ancestors(tx, parent_id)
            known = await repo.entities_by_ids(tx, chain)
            path = [known[i] for i in reversed(chain) if i in known and (administered is None or i in administered)]
            items = await repo.children(tx, parent_id)
        else:
            items = await _roots(tx, who)
        if q:
            found = await repo.find_entities(tx, q, within=administered)
        counts = await repo.child_counts(tx, [e.id for e in items])
    return await console.page(request, "console_entities.html", who=who, parent=parent, path=path, items=items,
                              counts=counts, q=q, found=found, can_create_top=who.is_platform_admin,
                              form=None, errors={})


async def create(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    form = await request.post()
    parent_id = str(form.get("parent") or "") or None
    back = f"{BASE}?parent={parent_id}" if parent_id else BASE
    if parent_id is None:
        console.require_platform_admin(request, who)
    else:
        await console.require_entity_role(request, who, parent_id, "admin")
    rt = console.runtime(request)
    try:
        entity = await entities.create(rt, name=form.get("name"), siren=form.get("siren"), parent=parent_id,
                                       actor_name=who.actor)
    except FlowbusError as exc:
        return await _form_error(request, who, parent_id, form, exc)
    raise console.done(back, f"Collectivité « {entity.name} » créée.")


async def _form_error(request: web.Request, who: Any, parent_id: str | None, form: Any,
                      exc: FlowbusError) -> web.Response:
    """The tree page again, the form filled in, the error next to its field."""
    rt = console.runtime(request)
    async with rt.store.transaction() as tx:
        parent = await repo.get_entity(tx, parent_id) if parent_id else None
        items = await repo.children(tx, parent_id) if parent_id else await _roots(tx, who)
        counts = await repo.child_counts(tx, [e.id for e in items])
    return await console.page(request, "console_entities.html", who=who, status=422, parent=parent, path=[],
                              items=items, counts=counts, q="", found=None, can_create_top=who.is_platform_admin,
                              form={"name": form.get("name", ""), "siren": form.get("siren", "")},
                              errors={exc.field or "name": exc.message})


async def entity_page(request: web.Request, *, errors: dict[str, str] | None = None, form: Any = None,
                      status: int = 200) -> web.Response:
    who = await console.signed_in(request)
    entity_id = request.match_info["id"]
    await console.require_entity_role(request, who, entity_id, "admin")
    rt = console.runtime(request)
    async with rt.store.transaction() as tx:
        entity = await repo.get_entity(tx, entity_id)
        parent = await repo.find_entity(tx, entity.parent_id) if entity.parent_id else None
        kids = await repo.children(tx, entity_id, limit=50)
    return await console.page(request, "console_entity.html", who=who, status=status, entity=entity, parent=parent,
                              children=kids, errors=errors or {}, form=form or {}, base=BASE)


async def edit(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    entity_id = request.match_info["id"]
    await console.require_entity_role(request, who, entity_id, "admin")
    rt = console.runtime(request)
    form = await request.post()
    try:
        await entities.change(rt, entity_id, actor=who.actor, name=form.get("name"), siren=form.get("siren"))
    except FlowbusError as exc:
        return await entity_page(request, errors={exc.field or "name": exc.message}, form=form, status=422)
    raise console.done(f"{BASE}/{entity_id}", "Modifications enregistrées.")


async def move(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    entity_id = request.match_info["id"]
    await console.require_entity_role(request, who, entity_id, "admin")
    rt = console.runtime(request)
    form = await request.post()
    target = str(form.get("parent", "")).strip()
    async with rt.store.transaction() as tx:
        found = (await repo.entity_by_siren(tx, target.replace(" ", ""))) if target else None
        if found is None and target:
            found = await repo.find_entity(tx, target)
    if target and found is None:
        return await entity_page(request, errors={"parent": f"Aucune collectivité de SIREN ou d'identifiant "
                                                            f"« {target} »."}, form=form, status=422)
    if found is None:
        console.require_platform_admin(request, who)  # only a platform administrator makes a top-level entity
    else:
        await console.require_entity_role(request, who, found.id, "admin")
    try:
        await entities.change(rt, entity_id, actor=who.actor, parent=found.id if found else None)
    except FlowbusError as exc:
        return await entity_page(request, errors={"parent": exc.message}, form=form, status=422)
    where = f"sous « {found.name} »" if found else "au premier niveau"
    raise console.done(f"{BASE}/{entity_id}", f"Collectivité déplacée {where}.")


async def set_active(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    entity_id = request.match_info["id"]
    await console.require_entity_role(request, who, entity_id, "admin")
    active = request.match_info["what"] == "activer"
    await entities.change(console.runtime(request), entity_id, actor=who.actor, active=active)
    raise console.done(f"{BASE}/{entity_id}", "Collectivité réactivée." if active else
                       "Collectivité désactivée : elle ne reçoit plus de nouveau document.")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get(BASE, tree_page)
    r.add_post(BASE, create)
    r.add_get(BASE + "/{id}", entity_page)
    r.add_post(BASE + "/{id}", edit)
    r.add_post(BASE + "/{id}/deplacer", move)
    r.add_post(BASE + "/{id}/{what:(activer|desactiver)}", set_active)

