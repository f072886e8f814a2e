"""``/api/v2/entite``: list, read, create, edit and delete entities as Pastell's ``EntiteAPIController`` does.

Pastell's answers and messages word for word (``mb:api/EntiteAPIController.class.php``): 201 and the
entity's detail on creation, ``result: ok`` added on edit and alone on delete, 400 with Pastell's
sentence for a missing name, type or SIREN, 403 ``Acces interdit id_e=…, droit=entite:edition,id_u=…``
without the right.  Rights: ``entite:edition`` on the parent to create (on the root, 0, for a
top-level entity: platform administrators only) and on the entity itself to edit or delete
(``rights``).  Pastell's entity type and centre de gestion, which flowbus does not have, are kept
beside the entity (``pastell_entities``, migration 082); a service's SIREN too — a service often
shares its collectivité's SIREN, which flowbus keeps unique to one collectivité.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus import entities as entity_service
from flowbus.api.auth import visible_entities
from flowbus.connectors.inbound.pastell_v2 import ids
from flowbus.connectors.inbound.pastell_v2.answers import (answer, check, entity, entity_numbers, form, pastell, rt,
                                                           who)
from flowbus.errors import NotFound, ValidationError
from flowbus.models import Entity
from flowbus.store import repo
from flowbus.store.base import Tx

TYPES = ("collectivite", "service", "centre_de_gestion")
COLLECTIVITE = "collectivite"


async def _info(tx: Tx, entity_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not entity_ids:
        return {}
    marks = ", ".join(f"${i}" for i in range(1, len(entity_ids) + 1))
    rows = await tx.fetch(f"SELECT * FROM pastell_entities WHERE entity_id IN ({marks})", *entity_ids)
    return {r["entity_id"]: r for r in rows}


async def _answer(request: web.Request, found: list[Entity], *, children: dict[str, list[str]] | None = None
                  ) -> list[dict[str, Any]]:
    """Pastell's entity rows (``entite_fille`` when ``children`` is given), every id a Pastell number."""
    runtime = rt(request)
    async with runtime.store.transaction() as tx:
        info = await _info(tx, [e.id for e in found])
    named = [e.id for e in found] + [e.parent_id for e in found if e.parent_id]
    named += [i["centre_de_gestion"] for i in info.values() if i["centre_de_gestion"]]
    named += [c for kids in (children or {}).values() for c in kids]
    nums = await entity_numbers(request, named)
    out = []
    for e in found:
        extra = info.get(e.id) or {}
        row = {"id_e": nums[e.id], "denomination": e.name, "siren": e.siren or extra.get("siren") or "",
               "type": extra.get("type") or COLLECTIVITE, "entite_mere": nums[e.parent_id or ids.ROOT],
               "centre_de_gestion": nums.get(extra.get("centre_de_gestion") or ids.ROOT, "0")}
        if children is not None:
            row["entite_fille"] = [{"id_e": nums[c]} for c in children.get(e.id, [])]
        out.append(row)
    return out


async def _detail(request: web.Request, entity_id: str) -> dict[str, Any]:
    runtime = rt(request)
    async with runtime.store.transaction() as tx:
        found = await repo.get_entity(tx, entity_id)
        kids = [r["id"] for r in await tx.fetch("SELECT id FROM entities WHERE parent_id = $1 ORDER BY created_at, id",
                                                entity_id)]
    return (await _answer(request, [found], children={entity_id: kids}))[0]


async def list_entities(request: web.Request) -> web.Response:
    runtime = rt(request)
    visible = await visible_entities(runtime, who(request))
    async with runtime.store.transaction() as tx:
        if visible is None:
            found = await repo.list_entities(tx)
        else:
            found = sorted((await repo.entities_by_ids(tx, visible)).values(), key=lambda e: (e.name, e.id))
    return answer(await _answer(request, found))


async def get_entity(request: web.Request) -> web.Response:
    ref = request.match_info["id_e"]
    id_e = await entity(request, ref, missing="L'entité {ref} n'a pas été trouvée")
    await check(request, id_e, "entite:lecture")
    return answer(await _detail(request, id_e))


def _checked(values: dict[str, Any], mother: str) -> tuple[str, str, str | None]:
    """Pastell's checks of ``EntiteAPIController::edition``, in its order and words: (name, type, SIREN)."""
    name = str(values.get("denomination") or "").strip()
    if not name:
        raise ValidationError("Le nom (denomination) est obligatoire", field="denomination")
    kind = str(values.get("type") or "")
    if kind not in TYPES:
        raise ValidationError("Le type d'entité doit être renseigné. Les valeurs possibles sont collectivite, "
                              "service ou centre_de_gestion.", field="type")
    if kind == "service" and mother == ids.ROOT:
        raise ValidationError("Un service doit être ataché à une entité mère (collectivité, centre de gestion "
                              "ou service)", field="entite_mere")
    siren = str(values.get("siren") or "").replace(" ", "").strip() or None
    if kind != "service":
        if not siren:
            raise ValidationError("Le siren est obligatoire", field="siren")
        if not entity_service.siren_ok(siren):
            raise ValidationError(f"Le siren « {values.get('siren')} » ne semble pas valide", field="siren")
    elif siren and not entity_service.siren_ok(siren):
        raise ValidationError(f"Le siren « {values.get('siren')} » ne semble pas valide", field="siren")
    return name, kind, siren


async def _mother(request: web.Request, ref: Any) -> str:
    if ref in (None, "", False, "0", 0):
        return ids.ROOT
    return await entity(request, ref, missing="L'entité mère {ref} n'existe pas", root=True)


async def _cdg(request: web.Request, ref: Any) -> str | None:
    if ref in (None, "", "0", 0):
        return None
    return await entity(request, ref, missing="Le centre de gestion {ref} n'existe pas")


def _keep(kind: str, cdg: str | None, siren: str | None) -> Any:
    async def write(tx: Tx, e: Entity) -> None:
        await tx.execute("DELETE FROM pastell_entities WHERE entity_id = $1", e.id)
        await tx.execute("INSERT INTO pastell_entities (entity_id, type, centre_de_gestion, siren) "
                         "VALUES ($1, $2, $3, $4)", e.id, kind, cdg, siren if kind == "service" else None)
    return write


async def create_entity(request: web.Request) -> web.Response:
    return answer(await _create(request, await form(request)), status=201)


async def _create(request: web.Request, values: dict[str, Any]) -> dict[str, Any]:
    mother = await _mother(request, values.get("entite_mere"))
    await check(request, mother, "entite:edition")
    name, kind, siren = _checked(values, mother)
    cdg = await _cdg(request, values.get("centre_de_gestion"))
    created = await entity_service.create(rt(request), name=name, siren=None if kind == "service" else siren,
                                          parent=None if mother == ids.ROOT else mother,
                                          actor_name=who(request).actor, also=_keep(kind, cdg, siren))
    return await _detail(request, created.id)


async def _existing(request: web.Request, ref: str) -> str:
    """The entity a PATCH or DELETE names: Pastell answers 400 (not 404) when it does not exist."""
    try:
        found: str | None = await entity(request, ref)
    except NotFound:
        found = None
    if found is None or found == ids.ROOT:
        raise ValidationError(f"L'identifiant de l'entite n'existe pas : {{id_e={ref}}}", field="id_e")
    return found


async def patch_entity(request: web.Request) -> web.Response:
    values = await form(request)
    if values.get("create") not in (None, "", "0", "false"):  # Pastell's upsert: PATCH …?create=true creates
        return answer(await _create(request, values))
    ref = request.match_info["id_e"]
    id_e = await _existing(request, ref)
    current = await _detail(request, id_e)
    merged = {k: values.get(k, current[k]) for k in ("denomination", "siren", "type", "entite_mere",
                                                     "centre_de_gestion")}
    if merged["entite_mere"] in ("", "0"):
        merged["entite_mere"] = current["entite_mere"]  # as Pastell: an empty mother keeps the current one
    mother = await _mother(request, merged["entite_mere"])
    await check(request, mother, "entite:edition")
    await check(request, id_e, "entite:edition")
    name, kind, siren = _checked(merged, mother)
    cdg = await _cdg(request, merged["centre_de_gestion"])
    await entity_service.change(rt(request), id_e, actor=who(request).actor, name=name,
                                siren=None if kind == "service" else siren,
                                parent=None if mother == ids.ROOT else mother, also=_keep(kind, cdg, siren))
    return answer(await _detail(request, id_e) | {"result": "ok"})


async def delete_entity(request: web.Request) -> web.Response:
    ref = request.match_info["id_e"]
    id_e = await _existing(request, ref)
    await check(request, id_e, "entite:edition")
    await entity_service.delete(rt(request), id_e, actor=who(request).actor)
    return answer({"result": "ok"})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v2/entite", pastell(list_entities))
    r.add_post("/api/v2/entite", pastell(create_entity))
    r.add_get("/api/v2/entite/{id_e}", pastell(get_entity))
    r.add_patch("/api/v2/entite/{id_e}", pastell(patch_entity))
    r.add_delete("/api/v2/entite/{id_e}", pastell(delete_entity))
