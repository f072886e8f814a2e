"""« Mes notifications » (French): what a person follows — a collectivité (and those below it), a flow or
all, an event — and whether by e-mail at once or in the morning digest."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus import notifications
from flowbus.errors import FlowbusError
from flowbus.people import access
from flowbus.people import mail as platform_mail
from flowbus.store import repo
from flowbus.web import console

URL = "/compte/notifications"


async def _readable_entities(rt: Any, who: Any) -> list[Any] | None:
    """The collectivités the person may read, by name (None: too many to list, the form takes a SIREN)."""
    async with rt.store.transaction() as tx:
        ids = (await access.scope(tx, who)).entity_ids
        if ids is None or len(ids) > 300:
            return None
        return sorted((await repo.entities_by_ids(tx, ids)).values(), key=lambda e: e.name)


async def page(request: web.Request) -> web.Response:
    rt = console.runtime(request)
    who = await console.signed_in(request)
    if who.kind != "user":
        raise console.forbid(request, who, "Les notifications sont réservées aux personnes.")
    async with rt.store.transaction() as tx:
        subs = await notifications.subscriptions_of(tx, who.id)
        names = {eid: e.name for eid, e in (await repo.entities_by_ids(tx, {s.entity_id for s in subs})).items()}
    flows = sorted(rt.flows.values(), key=lambda f: f.label)
    return await console.page(request, "console_notifications.html", who=who, subs=subs, names=names,
                              entities=await _readable_entities(rt, who), flows=flows,
                              flow_labels={f.id: f.label for f in flows}, events=notifications.EVENTS,
                              modes=notifications.MODES, mail_ready=platform_mail.configured(rt.settings),
                              digest_hour=notifications.DIGEST_HOUR)


async def add(request: web.Request) -> web.Response:
    rt = console.runtime(request)
    who = await console.signed_in(request)
    form = await request.post()
    entity_ref = str(form.get("entity", "")).strip()
    async with rt.store.transaction() as tx:
        entity = (await repo.find_entity(tx, entity_ref) or await repo.entity_by_siren(tx, entity_ref)) \
            if entity_ref else None
        if entity is None or await access.role_on(tx, who, entity.id) is None:
            raise console.failed(URL, "Collectivité introuvable parmi celles que vous pouvez consulter.")
        flow = str(form.get("flow", "")) or notifications.ALL_FLOWS
        if flow != notifications.ALL_FLOWS and flow not in rt.flows:
            raise console.failed(URL, f"Flux inconnu « {flow} ».")
        try:
            await notifications.subscribe(tx, user_id=who.id, entity_id=entity.id, flow_id=flow,
                                          event=str(form.get("event", "")), mode=str(form.get("mode", "")),
                                          now=rt.clock.now())
        except FlowbusError as exc:
            raise console.failed(URL, exc.message) from None
    raise console.done(URL, f"Abonnement enregistré pour « {entity.name} ».")


async def remove(request: web.Request) -> web.Response:
    rt = console.runtime(request)
    who = await console.signed_in(request)
    async with rt.store.transaction() as tx:
        removed = await notifications.unsubscribe(tx, user_id=who.id, subscription_id=request.match_info["id"])
    if not removed:
        raise console.failed(URL, "Cet abonnement n'existe plus.")
    raise console.done(URL, "Abonnement supprimé.")


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get(URL, page)
    app.router.add_post(URL, add)
    app.router.add_post(URL + "/{id}/supprimer", remove)
