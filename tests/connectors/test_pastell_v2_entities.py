"""Pastell API v2 entities and integer ids, driven as a provisioning script drives Pastell (aiohttp against a real server)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp

from flowbus.people.access import EVERY_ENTITY, Grant
from flowbus.store import repo
from tests.conftest import DEFAULT_PASSWORD, make_user

SIREN = "213400013"  # valid (Luhn)
OTHER_SIREN = "000000000"  # Pastell's test SIREN: valid too


def basic(login: str, password: str = DEFAULT_PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


async def _json(r: aiohttp.ClientResponse) -> Any:
    return await r.json(content_type=None)


async def test_provisioning_script_creates_edits_and_deletes_entities(backend, runtime_factory,
                                                                     server_factory) -> None:
    rt = await runtime_factory(backend)
    srv = await server_factory(rt)
    await make_user(rt, "plateforme", grants=(Grant(EVERY_ENTITY, "admin"),))
    async with aiohttp.ClientSession(base_url=srv.url, headers=basic("plateforme")) as api:
        # a collectivité at the top: 201, Pastell's detail, its id a Pastell number (digits, as a string)
        r = await api.post("/api/v2/entite", data={"denomination": "Ville de Test", "type": "collectivite",
                                                   "siren": SIREN})
        assert r.status == 201, await r.text()
        town = await r.json()
        assert town == {"id_e": town["id_e"], "denomination": "Ville de Test", "siren": SIREN,
                        "type": "collectivite", "entite_mere": "0", "entite_fille": [], "centre_de_gestion": "0"}
        id_town = town["id_e"]
        assert id_town.isdigit() and id_town != "0"

        # a service below it, sharing its SIREN (Pastell allows it; flowbus keeps SIRENs unique to collectivités)
        r = await api.post("/api/v2/entite", data={"denomination": "CCAS", "type": "service", "siren": SIREN,
                                                   "entite_mere": id_town})
        assert r.status == 201, await r.text()
        service = await r.json()
        id_service = service["id_e"]
        assert int(id_service) > int(id_town)
        assert (service["type"], service["entite_mere"], service["siren"]) == ("service", id_town, SIREN)
        detail = await (await api.get(f"/api/v2/entite/{id_town}")).json()
        assert detail["entite_fille"] == [{"id_e": id_service}]
        listed = await (await api.get("/api/v2/entite")).json()
        assert {e["id_e"]: e["denomination"] for e in listed} == {id_town: "Ville de Test", id_service: "CCAS"}

        # Pastell's refusals, word for word
        for form, message in [
            ({"type": "collectivite", "siren": SIREN}, "Le nom (denomination) est obligatoire"),
            ({"denomination": "X"}, "Le type d'entité doit être renseigné. Les valeurs possibles sont collectivite, "
                                    "service ou centre_de_gestion."),
            ({"denomination": "X", "type": "collectivite"}, "Le siren est obligatoire"),
            ({"denomination": "X", "type": "collectivite", "siren": "123456789"},
             "Le siren « 123456789 » ne semble pas valide"),
            ({"denomination": "X", "type": "service"}, "Un service doit être ataché à une entité mère (collectivité, "
                                                       "centre de gestion ou service)"),
        ]:
            r = await api.post("/api/v2/entite", data=form)
            assert r.status == 400, form
            assert await r.json() == {"status": "error", "error-message": message}

        # edit: PATCH form-encoded, the detail plus result ok
        r = await api.patch(f"/api/v2/entite/{id_service}", data={"denomination": "CCAS de Test"})
        assert r.status == 200, await r.text()
        edited = await r.json()
        assert (edited["result"], edited["denomination"], edited["type"], edited["entite_mere"]) == \
            ("ok", "CCAS de Test", "service", id_town)
        async with rt.store.transaction() as tx:
            names = {e.name for e in await repo.list_entities(tx)}
        assert "CCAS de Test" in names  # the change is ours, not only the layer's

        # an entity administrator (of the town only): creates below it, never at the top nor elsewhere
        async with rt.store.transaction() as tx:
            ours_town = next(e.id for e in await repo.list_entities(tx) if e.name == "Ville de Test")
        await make_user(rt, "admin-ville", grants=(Grant(ours_town, "admin"),))
        await make_user(rt, "agent-ville", grants=(Grant(ours_town, "editor"),))
    async with aiohttp.ClientSession(base_url=srv.url, headers=basic("admin-ville")) as local:
        r = await local.post("/api/v2/entite", data={"denomination": "Service urbanisme", "type": "service",
                                                     "entite_mere": id_town})
        assert r.status == 201, await r.text()
        id_urba = (await r.json())["id_e"]
        r = await local.get("/api/v2/role")  # an administrator (of one collectivité) may give roles: it lists them
        assert r.status == 200 and await r.json() == [{"role": "admin", "libelle": "Administrateur"},
                                                      {"role": "editor", "libelle": "Agent"},
                                                      {"role": "reader", "libelle": "Lecteur"}]
        r = await local.post("/api/v2/entite", data={"denomination": "Autre", "type": "collectivite",
                                                     "siren": OTHER_SIREN})
        assert r.status == 403
        message = (await r.json())["error-message"]
        assert message.startswith("Acces interdit id_e=0, droit=entite:edition,id_u=")
        id_u_admin = message.rsplit("=", 1)[1]
        assert id_u_admin.isdigit()
    async with aiohttp.ClientSession(base_url=srv.url, headers=basic("agent-ville")) as agent:
        r = await agent.delete(f"/api/v2/entite/{id_urba}")
        assert r.status == 403
        message = (await r.json())["error-message"]
        assert message.startswith(f"Acces interdit id_e={id_urba}, droit=entite:edition,id_u=")
        assert message.rsplit("=", 1)[1] not in (id_u_admin, "0")  # each person has their own id_u
        r = await agent.get(f"/api/v2/entite/{id_urba}")  # reading needs entite:lecture: an agent has it
        assert r.status == 200 and (await r.json())["denomination"] == "Service urbanisme"

    async with aiohttp.ClientSession(base_url=srv.url, headers=basic("plateforme")) as api:
        # a parent with children is kept; a leaf goes, its number never named anything else again
        r = await api.delete(f"/api/v2/entite/{id_town}")
        assert r.status == 400 and "Suppression impossible" in (await r.json())["error-message"]
        r = await api.delete(f"/api/v2/entite/{id_urba}")
        assert r.status == 200 and await r.json() == {"result": "ok"}
        r = await api.get(f"/api/v2/entite/{id_urba}")
        assert r.status == 404
        assert await r.json() == {"status": "error", "error-message": f"L'entité {id_urba} n'a pas été trouvée"}
        r = await api.patch(f"/api/v2/entite/{id_urba}", data={"denomination": "Revenant"})
        assert r.status == 400
        assert (await r.json())["error-message"] == f"L'identifiant de l'entite n'existe pas : {{id_e={id_urba}}}"
        r = await api.post("/api/v2/entite", data={"denomination": "Nouvelle", "type": "collectivite",
                                                   "siren": OTHER_SIREN})
        assert int((await r.json())["id_e"]) > int(id_urba)

        # every number is the same for another process on the same store (a restart)
        before = {e["id_e"]: e["denomination"] for e in await (await api.get("/api/v2/entite")).json()}
    rt2 = await runtime_factory(backend, workers=False)
    srv2 = await server_factory(rt2)
    async with aiohttp.ClientSession(base_url=srv2.url, headers=basic("plateforme")) as api:
        after = {e["id_e"]: e["denomination"] for e in await (await api.get("/api/v2/entite")).json()}
        assert after == before
        r = await api.get(f"/api/v2/entite/{id_service}")
        assert r.status == 200 and (await r.json())["denomination"] == "CCAS de Test"


async def test_numbers_survive_a_backup_and_restore(runtime_factory, server_factory, tmp_path: Path) -> None:
    from flowbus.backup import backup, restore
    rt = await runtime_factory("embedded")
    srv = await server_factory(rt)
    await make_user(rt, "plateforme", grants=(Grant(EVERY_ENTITY, "admin"),))
    async with aiohttp.ClientSession(base_url=srv.url, headers=basic("plateforme")) as api:
        for name, siren in (("Ville A", SIREN), ("Ville B", OTHER_SIREN)):
            r = await api.post("/api/v2/entite", data={"denomination": name, "type": "collectivite", "siren": siren})
            assert r.status == 201
        before = {e["id_e"]: e["denomination"] for e in await (await api.get("/api/v2/entite")).json()}
    backup(rt.settings, tmp_path / "sauvegarde")
    fresh = tmp_path / "neuve"  # an empty data directory, as restore wants
    restore(rt.settings.model_copy(update={"data_dir": fresh}), tmp_path / "sauvegarde")
    rt2 = await runtime_factory("embedded", workers=False, data_dir=fresh)
    srv2 = await server_factory(rt2)
    async with aiohttp.ClientSession(base_url=srv2.url, headers=basic("plateforme")) as api:
        after = {e["id_e"]: e["denomination"] for e in await (await api.get("/api/v2/entite")).json()}
        assert after == before
        r = await api.post("/api/v2/entite", data={"denomination": "Ville C", "type": "service",
                                                   "entite_mere": next(iter(before))})
        assert int((await r.json())["id_e"]) > max(int(n) for n in before)  # the counter came back too
