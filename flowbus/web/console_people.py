"""Console: people and their rights — list and search, invite by e-mail, grant and revoke roles per collectivité and flow, deactivate, send a reset link."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from flowbus.errors import BackendError, ConfigError, FlowbusError, ValidationError
from flowbus.people import access, accounts, links, mail
from flowbus.people.access import EVERY_ENTITY, ROLE_LABELS, Grant
from flowbus.store import repo
from flowbus.web import console

BASE = "/admin/personnes"
PAGE = 50


def _entity_admin_or_refuse(request: web.Request, who: Any) -> None:
    if not console.is_entity_admin(who):
        raise console.forbid(request, who, "Cette page est réservée aux administrateurs de collectivités.")


async def _resolve_entity(tx: Any, text: str) -> Any:
    text = text.strip()
    if not text:
        raise ValidationError("Choisissez une collectivité.", field="entity")
    found = await repo.entity_by_siren(tx, text.replace(" ", "")) or await repo.find_entity(tx, text)
    if found is None:
        raise ValidationError(f"Aucune collectivité de SIREN ou d'identifiant « {text} ».", field="entity")
    return found


def grant_label(g: Grant, names: dict[str, str], flow_labels: dict[str, str]) -> str:
    where = "toutes les collectivités" if g.entity_id == EVERY_ENTITY else names.get(g.entity_id, g.entity_id)
    text = f"{g.label()} — {where}" if g.label() != "Administrateur de la plateforme" else g.label()
    if g.flows:
        text += " — flux : " + ", ".join(flow_labels.get(f, f) for f in g.flows)
    return text


async def _names(tx: Any, ids: set[str]) -> dict[str, str]:
    return {i: e.name for i, e in (await repo.entities_by_ids(tx, ids - {EVERY_ENTITY})).items()}


async def _check_grant_allowed(request: web.Request, who: Any, g: Grant) -> None:
    """An entity administrator grants only on entities they administer, never on every entity."""
    if g.entity_id == EVERY_ENTITY:
        console.require_platform_admin(request, who)
    else:
        await console.require_entity_role(request, who, g.entity_id, "admin")


def _grant_from_form(form: Any, entity_id: str, flows_known: set[str]) -> Grant:
    role = str(form.get("role", ""))
    if role not in access.ORDER:
        raise ValidationError("Choisissez un rôle.", field="role")
    flows = tuple(f for f in form.getall("flows", []) if f in flows_known)
    return Grant(entity_id, role, flows or None)


async def list_page(request: web.Request, *, status: int = 200, form: Any = None,
                    errors: dict[str, str] | None = None, invited: Any = None) -> web.Response:
    who = await console.signed_in(request)
    _entity_admin_or_refuse(request, who)
    rt = console.runtime(request)
    q = request.query
    administered = await console.administered_entities(request, who)
    after = (q["apres_nom"], q["apres_id"]) if q.get("apres_nom") and q.get("apres_id") else None
    async with rt.store.transaction() as tx:
        context = await repo.find_entity(tx, q["collectivite"]) if q.get("collectivite") else None
        if context is not None and administered is not None and context.id not in administered:
            context = None
        user_ids = None
        if context is not None:
            user_ids = await accounts.user_ids_with_grants_on(tx, [context.id])
        elif administered is not None:
            user_ids = await accounts.user_ids_with_grants_on(tx, administered)
        people = await accounts.page(tx, q=q.get("q") or None, after=after, limit=PAGE + 1, user_ids=user_ids)
    more = len(people) > PAGE
    people = people[:PAGE]
    next_url = None
    if more:
        params = {k: v for k, v in q.items() if k not in ("apres_nom", "apres_id", "message", "error")}
        params.update(apres_nom=people[-1].name, apres_id=people[-1].id)
        next_url = f"{BASE}?{urlencode(params)}"
    flows = sorted(rt.flows.values(), key=lambda f: f.label)
    return await console.page(request, "console_people.html", who=who, status=status, people=people, query=q,
                              context=context, next_url=next_url, flows=flows, roles=ROLE_LABELS,
                              form=form or {}, errors=errors or {}, invited=invited,
                              mail_ok=mail.configured(rt.settings))


async def invite(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    _entity_admin_or_refuse(request, who)
    rt = console.runtime(request)
    form = await request.post()
    now = rt.clock.now()
    try:
        async with rt.store.transaction() as tx:
            entity = await _resolve_entity(tx, str(form.get("entity", "")))
            g = _grant_from_form(form, entity.id, set(rt.flows))
        await _check_grant_allowed(request, who, g)
        async with rt.store.transaction() as tx:
            user = await accounts.create(tx, login=str(form.get("login", "")), name=str(form.get("name", "")),
                                         email=str(form.get("email", "")), actor=who.actor, now=now,
                                         must_change_password=False)
            await accounts.grant(tx, user, g, actor=who.actor, now=now)
            token = await links.issue(tx, user.id, "invite", now)
    except FlowbusError as exc:
        return await list_page(request, status=422, form=form, errors={exc.field or "login": exc.message})
    url = links.url(rt.settings.base_url, token)
    try:
        await mail.send_link(rt.settings, purpose="invite", to=user.email, name=user.name, login=user.login, url=url,
                             by=who.name)
    except (ConfigError, BackendError) as exc:
        # the account exists; the link is shown once to the administrator, to pass on by other means
        return await list_page(request, invited={"user": user, "url": url, "why": exc.message})
    raise console.done(f"{BASE}/{user.id}", f"Invitation envoyée à {user.email}.")


async def person_page(request: web.Request, *, status: int = 200, errors: dict[str, str] | None = None,
                      shown_link: str | None = None) -> web.Response:
    who = await console.signed_in(request)
    _entity_admin_or_refuse(request, who)
    rt = console.runtime(request)
    administered = await console.administered_entities(request, who)
    async with rt.store.transaction() as tx:
        user = await accounts.get(tx, request.match_info["id"])
        grants = await accounts.grants_of(tx, user.id)
        if administered is not None:
            within = set(administered)
            if not any(g.entity_id in within for g in grants):
                raise console.forbid(request, who, "Cette personne n'a aucun droit sur les collectivités que vous "
                                                   "administrez.")
        names = await _names(tx, {g.entity_id for g in grants})
    flow_labels = {f.id: f.label for f in rt.flows.values()}
    rows = [{"grant": g, "label": grant_label(g, names, flow_labels),
             "mine": administered is None or g.entity_id in administered} for g in grants]
    return await console.page(request, "console_person.html", who=who, status=status, user=user, grants=rows,
                              flows=sorted(rt.flows.values(), key=lambda f: f.label), roles=ROLE_LABELS,
                              errors=errors or {}, shown_link=shown_link, mail_ok=mail.configured(rt.settings),
                              locked=user.locked_until is not None and user.locked_until > rt.clock.now())


async def _target(request: web.Request) -> tuple[Any, Any, Any]:
    who = await console.signed_in(request)
    _entity_admin_or_refuse(request, who)
    rt = console.runtime(request)
    async with rt.store.transaction() as tx:
        user = await accounts.get(tx, request.match_info["id"])
        grants = await accounts.grants_of(tx, user.id)
    administered = await console.administered_entities(request, who)
    if administered is not None and not any(g.entity_id in set(administered) for g in grants):
        raise console.forbid(request, who, "Cette personne n'a aucun droit sur les collectivités que vous administrez.")
    if any(g.entity_id == EVERY_ENTITY and g.role == "admin" for g in grants):
        console.require_platform_admin(request, who)  # only a platform administrator acts on another one
    return who, rt, user


async def add_grant(request: web.Request) -> web.Response:
    who, rt, user = await _target(request)
    form = await request.post()
    try:
        async with rt.store.transaction() as tx:
            entity = await _resolve_entity(tx, str(form.get("entity", "")))
            g = _grant_from_form(form, entity.id, set(rt.flows))
        await _check_grant_allowed(request, who, g)
        async with rt.store.transaction() as tx:
            await accounts.grant(tx, user, g, actor=who.actor, now=rt.clock.now())
    except FlowbusError as exc:
        return await person_page(request, status=422, errors={exc.field or "entity": exc.message})
    raise console.done(f"{BASE}/{user.id}", f"Droit « {ROLE_LABELS[g.role]} » donné sur « {entity.name} ».")


async def revoke_grant(request: web.Request) -> web.Response:
    who, rt, user = await _target(request)
    form = await request.post()
    entity_id = str(form.get("entity", ""))
    await _check_grant_allowed(request, who, Grant(entity_id, "reader"))
    async with rt.store.transaction() as tx:
        await accounts.revoke(tx, user, entity_id, actor=who.actor, now=rt.clock.now())
    raise console.done(f"{BASE}/{user.id}", "Droit retiré.")


async def set_active(request: web.Request) -> web.Response:
    who, rt, user = await _target(request)
    active = request.match_info["what"] == "activer"
    if not active and user.id == who.id:
        raise console.failed(f"{BASE}/{user.id}", "Vous ne pouvez pas désactiver votre propre compte.")
    async with rt.store.transaction() as tx:
        await accounts.set_active(tx, user, active, actor=who.actor, now=rt.clock.now())
    raise console.done(f"{BASE}/{user.id}", "Compte réactivé." if active else
                       "Compte désactivé : ses sessions sont fermées.")


async def send_reset(request: web.Request) -> web.Response:
    who, rt, user = await _target(request)
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        token = await links.issue(tx, user.id, "reset", now)
        await tx.execute("UPDATE users SET failed_sign_ins = 0, locked_until = NULL WHERE id = $1", user.id)
    url = links.url(rt.settings.base_url, token)
    try:
        await mail.send_link(rt.settings, purpose="reset", to=user.email, name=user.name, login=user.login, url=url)
    except (ConfigError, BackendError) as exc:
        return await person_page(request, shown_link=url, errors={"mail": exc.message})
    raise console.done(f"{BASE}/{user.id}", f"Lien de réinitialisation envoyé à {user.email}.")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get(BASE, list_page)
    r.add_post(BASE, invite)
    r.add_get(BASE + "/{id}", person_page)
    r.add_post(BASE + "/{id}/droits", add_grant)
    r.add_post(BASE + "/{id}/droits/retirer", revoke_grant)
    r.add_post(BASE + "/{id}/reinitialiser", send_reset)
    r.add_post(BASE + "/{id}/{what:(activer|desactiver)}", set_active)
