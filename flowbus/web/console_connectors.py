"""Console: connector instances of a collectivité — its own, inherited and global — with forms built from each kind's declared settings (secrets write-only) and « Tester »."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from flowbus.connectors.checks import test_instance
from flowbus.connectors.settings_spec import SPECS, check, spec_for
from flowbus.errors import FlowbusError, ValidationError
from flowbus.store import repo
from flowbus.web import console

BASE = "/admin/connecteurs"
FAMILIES = {"signature": "Signature", "tdt-actes": "Télétransmission ACTES", "tdt-helios": "Télétransmission PES",
            "mailsec": "Mail sécurisé", "notify": "Notification", "ged": "GED", "sae": "Archivage", "test": "Test"}
KINDS = {"s2low": "S²LOW", "smtp": "serveur SMTP", "iparapheur": "i-Parapheur", "seal": "cachet serveur",
         "local": "parapheur intégré", "filesystem": "répertoire", "webdav": "WebDAV", "s3": "S3",
         "asalae": "As@lae", "store": "magasin d'archives intégré", "http": "appel HTTP"}
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
KEEP = "********"  # what instances.save reads as « keep the stored secret »


def type_label(family: str, kind: str) -> str:
    k = "connecteur de test" if kind.startswith("test") or kind == "instant" else KINDS.get(kind, kind)
    return f"{FAMILIES.get(family, family)} — {k}"


async def _entity(request: web.Request, who: Any, entity_id: str | None) -> Any:
    """The collectivité named by its identifier or its SIREN, which ``who`` administers."""
    if not entity_id:
        raise console.forbid(request, who, "Choisissez d'abord une collectivité.")
    async with console.runtime(request).store.transaction() as tx:
        entity = await repo.find_entity(tx, entity_id.strip()) or await repo.entity_by_siren(
            tx, entity_id.replace(" ", ""))
    if entity is None:
        raise console.failed(BASE, f"Aucune collectivité de SIREN ou d'identifiant « {entity_id} ».")
    await console.require_entity_role(request, who, entity.id, "admin")
    return entity


async def page(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    if not console.is_entity_admin(who):
        raise console.forbid(request, who, "Cette page est réservée aux administrateurs de collectivités.")
    rt = console.runtime(request)
    entity_id = request.query.get("collectivite")
    entity, rows = None, []
    if entity_id:
        entity = await _entity(request, who, entity_id)
        async with rt.store.transaction() as tx:
            instances = await rt.instances.list_for(tx, entity.id)
            names = {i: e.name for i, e in (await repo.entities_by_ids(
                tx, {x.entity_id for x in instances if x.entity_id})).items()}
        for inst in instances:
            from_yaml = rt.instances.declared_in_files(inst.id, inst.entity_id)
            if inst.entity_id == entity.id:
                origin = "propre à cette collectivité"
            elif inst.entity_id:
                origin = f"hérité de « {names.get(inst.entity_id, inst.entity_id)} »"
            else:
                origin = "commun à toutes les collectivités"
            rows.append({"inst": inst, "type": type_label(inst.family, inst.kind), "origin": origin,
                         "yaml": from_yaml, "editable": not from_yaml and inst.entity_id == entity.id,
                         "test_kind": inst.kind.startswith("test") or inst.kind == "instant"})
    types = sorted(((f"{f}/{k}", type_label(f, k)) for f, k in SPECS), key=lambda t: t[1])
    return await console.page(request, "console_connectors.html", who=who, entity=entity, rows=rows, types=types,
                              query=request.query)


async def form_page(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    q = request.query
    entity = await _entity(request, who, q.get("collectivite"))
    return await _form(request, who, entity, instance_id=q.get("id"), type_=q.get("type"))


async def _form(request: web.Request, who: Any, entity: Any, *, instance_id: str | None, type_: str | None,
                status: int = 200, errors: dict[str, str] | None = None,
                values: dict[str, Any] | None = None) -> web.Response:
    """The form of a new instance (``type_`` "family/kind") or of the entity's own ``instance_id``."""
    rt = console.runtime(request)
    existing = None
    if instance_id and not type_:
        async with rt.store.transaction() as tx:
            own = [i for i in await rt.instances.list_for(tx, entity.id) if i.id == instance_id and
                   i.entity_id == entity.id and not rt.instances.declared_in_files(i.id, i.entity_id)]
        if not own:
            raise console.failed(f"{BASE}?collectivite={entity.id}", "Ce connecteur ne se modifie pas ici.")
        existing = own[0]
        family, kind = existing.family, existing.kind
    else:
        family, _, kind = (type_ or "").partition("/")
        if (family, kind) not in SPECS:
            raise console.failed(f"{BASE}?collectivite={entity.id}", "Choisissez un type de connecteur.")
    shown = dict(values if values is not None else (existing.settings if existing else {}))
    fields = []
    for s in spec_for(family, kind):
        stored = existing is not None and existing.settings.get(s.name) not in (None, "")
        fields.append({"s": s, "value": "" if s.secret else shown.get(s.name, ""), "stored": s.secret and stored})
    return await console.page(request, "console_connector_form.html", who=who, status=status, entity=entity,
                              family=family, kind=kind, type=type_label(family, kind), fields=fields,
                              existing=existing, errors=errors or {},
                              instance_id=(existing.id if existing else instance_id or ""))


async def save(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    form = await request.post()
    entity = await _entity(request, who, str(form.get("collectivite", "")))
    family, kind, instance_id = str(form.get("family", "")), str(form.get("kind", "")), str(form.get("id", "")).strip()
    editing = form.get("editing") == "1"
    values = {s.name: str(form.get(s.name, "")) for s in spec_for(family, kind)}
    try:
        if (family, kind) not in SPECS:
            raise ValidationError("Type de connecteur inconnu.", field="kind")
        if not _ID.match(instance_id):
            raise ValidationError("Identifiant invalide : minuscules, chiffres, - et _ (c'est le nom que les flux "
                                  "donnent au connecteur, par exemple « mailsec » ou « tdt-actes »).", field="id")
        secrets = frozenset(s.name for s in spec_for(family, kind) if s.secret)
        settings = check(family, kind, values, keep_secrets=secrets if editing else frozenset())
        if editing:
            for name in secrets:
                settings.setdefault(name, KEEP)
        async with rt.store.transaction() as tx:
            if not editing and any(i.id == instance_id and i.entity_id == entity.id
                                   for i in await rt.instances.list_for(tx, entity.id)):
                raise ValidationError(f"Un connecteur « {instance_id} » existe déjà pour cette collectivité.",
                                      field="id")
            await rt.instances.save(tx, {"id": instance_id, "family": family, "kind": kind, "entity": entity.id,
                                         "settings": settings}, at=rt.clock.now(), actor=who.actor,
                                   demo=rt.settings.demo)
    except FlowbusError as exc:
        return await _form(request, who, entity, instance_id=instance_id,
                           type_=None if editing else f"{family}/{kind}", status=422,
                           errors={exc.field or "id": exc.message}, values=values)
    raise console.done(f"{BASE}?collectivite={entity.id}", f"Connecteur « {instance_id} » enregistré.")


async def test(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    form = await request.post()
    entity = await _entity(request, who, str(form.get("collectivite", "")))
    instance_id = str(form.get("id", ""))
    async with rt.store.transaction() as tx:
        inst = await rt.instances.resolve(tx, instance_id, entity.id)
    result = await test_instance(rt, inst)
    text = f"Test de « {instance_id} » : {result.message}" + (f" ({result.detail})" if result.detail else "")
    back = f"{BASE}?collectivite={entity.id}"
    if result.ok:
        raise console.done(back, text)
    raise console.failed(back, text)


async def delete(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    form = await request.post()
    entity = await _entity(request, who, str(form.get("collectivite", "")))
    instance_id = str(form.get("id", ""))
    try:
        async with rt.store.transaction() as tx:
            await rt.instances.delete(tx, instance_id, entity.id, at=rt.clock.now(), actor=who.actor)
    except FlowbusError:
        raise console.failed(f"{BASE}?collectivite={entity.id}", "Ce connecteur ne se supprime pas ici.") from None
    raise console.done(f"{BASE}?collectivite={entity.id}", f"Connecteur « {instance_id} » supprimé.")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get(BASE, page)
    r.add_get(BASE + "/formulaire", form_page)
    r.add_post(BASE + "/enregistrer", save)
    r.add_post(BASE + "/tester", test)
    r.add_post(BASE + "/supprimer", delete)
