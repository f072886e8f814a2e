"""Console: the flows — their fields, steps, states, diagram (Mermaid, drawn in the page by the vendored script) and versions — which flows each collectivité uses, whether each step has its connector there, and the reload of config/flows without restart."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from flowbus.clock import parse_iso
from flowbus.errors import ConfigError, FlowbusError
from flowbus.flows import associations, catalog
from flowbus.flows.graph import to_mermaid
from flowbus.people import audit
from flowbus.store import repo
from flowbus.web import console, french, headers
from flowbus.web.console_connectors import FAMILIES, type_label

BASE = "/admin/flux"
FIELD_TYPES = {"text": "texte", "date": "date", "number": "nombre", "boolean": "oui / non", "choice": "choix",
               "email": "adresse électronique", "file": "fichier", "files": "fichiers"}


def _when(iso: str) -> str:
    return french.datetime_fr(parse_iso(iso))


def duration(d: timedelta | None) -> str:
    if d is None:
        return "—"
    s = int(d.total_seconds())
    for unit, size in (("j", 86400), ("h", 3600), ("min", 60)):
        if s >= size and s % size == 0:
            return f"{s // size} {unit}"
    return f"{s} s"


async def _entity_for(request: web.Request, who: Any) -> Any:
    """The collectivité chosen with ?collectivite= (id or SIREN) that the person may see, or None."""
    value = (request.query.get("collectivite") or "").strip()
    if not value:
        return None
    rt = console.runtime(request)
    async with rt.store.transaction() as tx:
        entity = await repo.entity_by_siren(tx, value.replace(" ", "")) or await repo.find_entity(tx, value)
        if entity is None:
            raise console.failed(BASE, f"Aucune collectivité de SIREN ou d'identifiant « {value} ».")
        chain = await repo.ancestors(tx, entity.id)
    if not (who.is_platform_admin or who.sees_something_of(chain)):
        raise console.forbid(request, who, "Vous n'avez aucun droit sur cette collectivité.")
    return entity


async def list_page(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    entity = await _entity_for(request, who)
    flows = sorted(rt.flows.values(), key=lambda f: f.label)
    use, names, can_change = {}, {}, False
    if entity is not None:
        async with rt.store.transaction() as tx:
            use = await associations.uses(tx, entity.id, [f.id for f in flows])
            names = {i: e.name for i, e in (await repo.entities_by_ids(
                tx, {u.decided_by for u in use.values() if u.decided_by})).items()}
        try:
            await console.require_entity_role(request, who, entity.id, "admin")
            can_change = True
        except web.HTTPForbidden:
            can_change = False
    reloads: list[dict[str, Any]] = []
    if who.is_platform_admin:
        async with rt.store.transaction() as tx:
            reloads = await catalog.reloads(tx, 5)
    return await console.page(request, "console_flows.html", who=who, flows=flows, entity=entity, use=use,
                              names=names, can_change=can_change, query=request.query, problems=rt.flow_problems,
                              reloads=reloads, when=_when)


async def reload(request: web.Request) -> web.Response:
    """Read config/flows again (platform administrators): valid files replace their flows, each invalid one is
    refused alone; the other processes follow within a heartbeat."""
    who = await console.signed_in(request)
    console.require_platform_admin(request, who)
    rt = console.runtime(request)
    loaded = await rt.reload_flows(actor=who.actor)
    async with rt.store.transaction() as tx:
        await audit.record(tx, actor=who.actor, at=rt.clock.now(), kind="admin.flows.reloaded",
                           new_versions=[f"{f} v{v}" for f, v in loaded.new_versions],
                           refused=[p.file for p in loaded.problems])
    news = ", ".join(f"« {rt.flows[f].label} » version {v}" for f, v in loaded.new_versions)
    message = f"Flux rechargés : {len(loaded.flows)} en service" + (f" ; nouvelles versions : {news}" if news else
                                                                   " ; aucune nouvelle version")
    if loaded.problems:
        raise console.done(BASE, message + ".", error=f"{len(loaded.problems)} fichier(s) refusé(s) : "
                           + " ; ".join(p.summary() for p in loaded.problems) + ".")
    raise console.done(BASE, message + ".")


async def toggle(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    form = await request.post()
    entity_id, flow_id = str(form.get("collectivite", "")), str(form.get("flow", ""))
    await console.require_entity_role(request, who, entity_id, "admin")
    flow = rt.flows.get(flow_id)
    if flow is None:
        raise console.failed(BASE, "Flux inconnu.")
    enabled = form.get("used") == "1"
    async with rt.store.transaction() as tx:
        entity = await repo.get_entity(tx, entity_id)
        await associations.set_used(tx, entity_id, flow_id, enabled, actor=who.actor, at=rt.clock.now())
    word = "utilise désormais" if enabled else "n'utilise plus"
    raise console.done(f"{BASE}?collectivite={entity_id}", f"« {entity.name} » {word} le flux « {flow.label} ».")


async def flow_page(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    flow = rt.flows.get(request.match_info["id"])
    if flow is None:
        raise web.HTTPNotFound(text="Flux inconnu.")
    entity = await _entity_for(request, who)
    connectors: dict[str, dict[str, Any]] = {}
    if entity is not None:
        async with rt.store.transaction() as tx:
            for step in flow.steps:
                try:
                    inst = await rt.instances.resolve(tx, step.connector, entity.id)
                except (ConfigError, FlowbusError):
                    connectors[step.id] = {"ok": False, "text": f"« {step.connector} » non configuré"}
                    continue
                origin = ""
                if inst.entity_id and inst.entity_id != entity.id:
                    parent = await repo.find_entity(tx, inst.entity_id)
                    origin = f", hérité de « {parent.name if parent else inst.entity_id} »"
                test = inst.kind.startswith("test") or inst.kind == "instant"
                connectors[step.id] = {"ok": not test, "test": test,
                                       "text": f"« {inst.id} » : {type_label(inst.family, inst.kind)}{origin}"}
    async with rt.store.transaction() as tx:
        versions = await catalog.versions(tx, flow.id, 20)
    response = await console.page(request, "console_flow.html", who=who, flow=flow, mermaid=to_mermaid(flow),
                              field_types=FIELD_TYPES, families=FAMILIES, duration=duration, entity=entity,
                              connectors=connectors, query=request.query, versions=versions, when=_when,
                              problems=[p for p in rt.flow_problems if p.flow_id == flow.id])
    response.headers["Content-Security-Policy"] = headers.DIAGRAM_POLICY  # Mermaid styles the diagram it draws
    return response


async def version_page(request: web.Request) -> web.Response:
    """The YAML text of one version of a flow, as it was loaded."""
    who = await console.signed_in(request)
    rt = console.runtime(request)
    flow_id = request.match_info["id"]
    try:
        number = int(request.match_info["version"])
    except ValueError:
        raise web.HTTPNotFound(text="Version inconnue.") from None
    async with rt.store.transaction() as tx:
        row = await catalog.version(tx, flow_id, number)
    if row is None:
        raise web.HTTPNotFound(text="Version inconnue.")
    flow = rt.flows.get(flow_id)
    return await console.page(request, "console_flow_version.html", who=who, flow_id=flow_id,
                              label=flow.label if flow else flow_id, version=row,
                              current=flow is not None and flow.version == number, when=_when)


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get(BASE, list_page)
    app.router.add_post(BASE + "/utilisation", toggle)
    app.router.add_post(BASE + "/recharger", reload)
    app.router.add_get(BASE + "/{id}", flow_page)
    app.router.add_get(BASE + "/{id}/versions/{version}", version_page)
