"""The Pastell API v2 layer, driven as a business application (Webdelib-like) drives Pastell."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path
from typing import Any

from datetime import timedelta

import aiohttp
import pytest

from flowbus.api.auth import create_api_key
from flowbus.connectors.tdt.actes_messages import parse_message
from flowbus.connectors.tdt.s2low_sim import S2lowSimulator, _tiny_pdf
from flowbus.models import Entity
from flowbus.store import repo

ROOT = Path(__file__).resolve().parents[2]
SIGNED = _tiny_pdf("Acte DEL2026_012 signe (PAdES)")  # ASCII: it travels in the connector's YAML
ACT_PDF = _tiny_pdf("Délibération DEL2026_012")

CONNECTORS = f"""
instances:
  - id: parapheur
    family: signature
    kind: test-wait
    entity: null
    settings:
      checks: 2
      check_in: 0.05
      files:
        - {{field: arrete, filename: acte-signe.pdf, media_type: application/pdf, content: {json.dumps(SIGNED.decode())}}}
        - {{field: bordereau_signature, filename: bordereau.pdf, media_type: application/pdf, content: "%PDF-1.4 b"}}
  - id: tdt-actes
    family: tdt-actes
    kind: s2low
    entity: null
    settings: {{url: "{{s2low_url}}", departement: "034", siren: "213400013", classification_ttl: 1d}}
  - {{id: publication, family: notify, kind: test, entity: null, settings: {{}}}}
  - {{id: sae, family: sae, kind: test, entity: null, settings: {{}}}}
"""


@pytest.fixture
async def s2low() -> Any:
    sim = S2lowSimulator(delays={"transmit": timedelta(milliseconds=200), "ar": timedelta(milliseconds=600)})
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def pastell_config(tmp_path: Path, s2low: Any) -> Path:
    config = tmp_path / "config"
    (config / "flows").mkdir(parents=True)
    (config / "connectors").mkdir()
    for name in ("deliberation.yml", "pes.yml"):
        shutil.copy(ROOT / "config" / "flows" / name, config / "flows" / name)
    # the shipped flow asks the préfecture every 15 minutes; the simulator answers within a second
    delib = config / "flows" / "deliberation.yml"
    text = delib.read_text(encoding="utf-8")
    assert "wait: {check_every: 15m, deadline: 10d}" in text
    delib.write_text(text.replace("wait: {check_every: 15m, deadline: 10d}", "wait: {check_every: 1s, deadline: 10d}"),
                     encoding="utf-8")
    (config / "connectors" / "test.yml").write_text(CONNECTORS.replace("{s2low_url}", s2low.url).replace(
        "  - {id: sae", "  - {id: tdt-helios, family: tdt-helios, kind: test, entity: null, settings: {}}\n"
                       "  - {id: sae"), encoding="utf-8")
    return config


def _basic(login: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


async def _setup(runtime_factory: Any, server_factory: Any, config: Path,
                 backend: str = "embedded") -> tuple[Any, str, dict[str, str]]:
    rt = await runtime_factory(backend, config_dir=config)
    srv = await server_factory(rt)
    async with rt.store.transaction() as tx:
        await repo.insert_entity(tx, Entity("ville-test", "Ville de Test", "213400013", None, rt.clock.now()))
    key, secret = await create_api_key(rt, name="webdelib", roles={"ville-test": "editor"})
    return rt, srv.url, _basic("webdelib", secret) | {"X-Secret": secret}


def _only_auth(headers: dict[str, str]) -> dict[str, str]:
    return {"Authorization": headers["Authorization"]}


async def test_pastell_client_sequence_through_the_deliberation_flow(backend, runtime_factory, server_factory,
                                                                     pastell_config: Path, s2low: Any) -> None:
    rt, url, auth = await _setup(runtime_factory, server_factory, pastell_config, backend)
    async with aiohttp.ClientSession(base_url=url, headers=_only_auth(auth)) as api:
        r = await api.get("/api/v2/version")
        assert r.status == 200 and (await r.json())["version"].startswith("2.")
        entities = await (await api.get("/api/v2/entite")).json()
        assert [e["denomination"] for e in entities] == ["Ville de Test"] and entities[0]["siren"] == "213400013"
        id_e = entities[0]["id_e"]  # a Pastell number, as a string of digits (as Pastell 2.0 sends MySQL's)
        assert isinstance(id_e, str) and id_e.isdigit() and id_e != "0"
        flux = await (await api.get("/api/v2/flux")).json()
        assert flux["actes-generique"]["nom"] == "Actes (générique)" and "helios-generique" in flux
        fields = await (await api.get("/api/v2/flux/actes-generique")).json()
        assert fields["arrete"]["type"] == "file" and fields["acte_nature"]["requis"]

        # 1. create the document
        r = await api.post(f"/api/v2/entite/{id_e}/document", data={"type": "actes-generique"})
        assert r.status == 201, await r.text()
        created = await r.json()
        id_d = created["id_d"]
        assert created["last_action"]["action"] == "creation" and created["info"]["type"] == "actes-generique"
        doc_url = f"/api/v2/entite/{id_e}/document/{id_d}"

        # 2. set its fields with Pastell's names (form-encoded PATCH, as Pastell reads it)
        r = await api.patch(doc_url, data={
            "acte_nature": "1", "numero_de_lacte": "DEL2026_012", "objet": "Vote du budget primitif 2026",
            "date_de_lacte": "2026-03-02", "classification": "7.1", "envoi_signature_check": "1",
            "envoi_tdt": "1", "envoi_sae": "1", "iparapheur_type": "Actes"})
        assert r.status == 200, await r.text()
        patched = await r.json()
        assert patched["result"] == "ok" and patched["formulaire_ok"] == 0
        assert "arrete" in patched["message"]
        assert patched["content"]["data"]["numero_de_lacte"] == "DEL2026_012"
        assert patched["content"]["last_action"]["action"] == "modification"

        # 3. attach the act and an annex
        form = aiohttp.FormData()
        form.add_field("file_name", "DEL2026_012.pdf")
        form.add_field("file_content", ACT_PDF, filename="DEL2026_012.pdf",
                       content_type="application/pdf")
        r = await api.post(f"{doc_url}/file/arrete", data=form)
        assert r.status == 201, await r.text()
        assert (await r.json())["formulaire_ok"] == 1
        form = aiohttp.FormData()
        form.add_field("file_content", _tiny_pdf("Annexe budgétaire"), filename="annexe.pdf",
                       content_type="application/pdf")
        form.add_field("file_name", "budget-annexe.pdf")  # the name after the content: still taken
        r = await api.post(f"{doc_url}/file/autre_document_attache/0", data=form)
        assert r.status == 201, await r.text()
        detail = (await r.json())["content"]
        assert detail["data"]["autre_document_attache"] == ["budget-annexe.pdf"]
        assert "send-iparapheur" in detail["action_possible"]

        # 4. trigger the send action
        r = await api.post(f"{doc_url}/action/send-iparapheur")
        assert r.status == 201, await r.text()
        assert (await r.json())["result"] is True

        # 5. poll until done, as Pastell clients do
        seen = []
        for _ in range(400):
            detail = await (await api.get(doc_url)).json()
            action = detail["last_action"]["action"]
            if not seen or seen[-1] != action:
                seen.append(action)
            if action == "accepter-sae":  # archived: the end of actes-generique with envoi_sae
                break
            if action == "send-tdt":
                # an actes-generique client clicks "send-tdt" after the signature: accepted, the flow goes on
                r = await api.post(f"{doc_url}/action/send-tdt")
                assert r.status == 201 and (await r.json())["result"] is True
            await asyncio.sleep(0.05)
        assert seen[-1] == "accepter-sae", seen
        assert "send-iparapheur" in seen
        (ar_name,) = detail["data"]["aractes"]
        id_acte = ar_name.removesuffix("-1-2.xml")  # département-SIREN-date-numéro-nature, as the préfecture names it
        assert id_acte.startswith("034-") and id_acte.endswith("-20260302-DEL2026_012-DE")

        # 6. download the signed act and the AR
        r = await api.get(f"{doc_url}/file/arrete")
        assert r.status == 200 and await r.read() == SIGNED
        assert "acte-signe.pdf" in r.headers["Content-Disposition"]
        r = await api.get(f"{doc_url}/file/aractes", params={"receive": "true"})
        payload = await r.json()
        ar = parse_message(base64.b64decode(payload["file_content"]))
        assert payload["file_name"] == f"{id_acte}-1-2.xml" and ar.event == "ar" and ar.id_acte == id_acte
        r = await api.get(f"{doc_url}/file/document_signe")  # Pastell's name for the signed act
        assert await r.read() == SIGNED
        assert s2low.count("post_acte", "DEL2026_012") == 1  # the préfecture received the act once

        # search and journal
        r = await api.get(f"/api/v2/entite/{id_e}/document", params={"type": "actes-generique"})
        listed = await r.json()
        assert [d["id_d"] for d in listed] == [id_d] and listed[0]["last_action"] == "accepter-sae"
        assert listed[0]["id_e"] == id_e
        r = await api.get(f"/api/v2/entite/{id_e}/document", params={"lastetat": "creation"})
        assert await r.json() == []
        # the id this layer answered before (ours) still names the entity for clients that stored it
        r = await api.get("/api/v2/entite/ville-test/document", params={"lastetat": "accepter-sae"})
        assert [d["id_d"] for d in await r.json()] == [id_d]
        journal = await (await api.get("/api/v2/journal", params={"id_e": id_e, "id_d": id_d})).json()
        assert {j["id_e"] for j in journal} == {id_e}
        assert all(j["id_j"].isdigit() for j in journal) and len({j["id_j"] for j in journal}) == len(journal)
        assert {j["document_type"] for j in journal} == {"actes-generique"}
        assert any(j["action"] == "running" for j in journal) and any("ARActes.xml" in j["message"]
                                                                     or j["action"] == "done" for j in journal)

        # counts per Pastell state, by index: the archived act and a draft being written
        r = await api.post(f"/api/v2/entite/{id_e}/document", data={"type": "actes-generique"})
        draft = (await r.json())["id_d"]
        r = await api.patch(f"/api/v2/entite/{id_e}/document/{draft}",
                            data={"numero_de_lacte": "DEL2026_013", "objet": "Subvention au club"})
        assert r.status == 200
        r = await api.get("/api/v2/document/count", params={"id_e": id_e, "type": "actes-generique"})
        assert r.status == 200, await r.text()
        counted = await r.json()
        assert list(counted) == [id_e]
        assert counted[id_e]["flux"] == {"actes-generique": {"accepter-sae": 1, "modification": 1}}
        assert (counted[id_e]["info"]["id_e"], counted[id_e]["info"]["denomination"]) == (id_e, "Ville de Test")
        everything = await (await api.get("/api/v2/document/count")).json()
        assert everything[id_e]["flux"]["actes-generique"] == {"accepter-sae": 1, "modification": 1}
        assert everything[id_e]["flux"]["helios-generique"] == {}
        for filters, expected in [({}, 2), ({"numero_de_lacte": "DEL2026_012"}, 1), ({"numero_de_lacte": "DEL2026%"}, 2),
                                  ({"numero_de_lacte": "DEL2026%", "objet": "%budget%"}, 1),
                                  ({"numero_de_lacte": "AUTRE"}, 0)]:
            r = await api.get("/api/v2/document/count", params={"id_e": id_e, "type": "actes-generique",
                                                                "output": "simple", **filters})
            assert await r.json() == {"count": expected}, filters
        r = await api.get("/api/v2/document/count", params={"output": "simple", "type": "actes-generique"})
        assert r.status == 400
        assert (await r.json())["error-message"] == "Les paramètres id_e et type sont obligatoires."

        # the same search in CSV (fputcsv's format; the header row on request, as for Pastell's journal)
        r = await api.get(f"/api/v2/entite/{id_e}/document", params={"type": "actes-generique", "format": "csv",
                                                                     "csv_entete_colonne": "1"})
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
        import csv
        rows = list(csv.reader((await r.text()).splitlines()))
        assert rows[0][:4] == ["id_d", "id_e", "role", "last_action"]
        assert sorted((row[0], row[1], row[3]) for row in rows[1:]) == sorted(
            [(id_d, id_e, "accepter-sae"), (draft, id_e, "modification")])
        assert any(row[8] == "Subvention au club" for row in rows[1:])

        # roles: only an administrator may list the roles to give
        r = await api.get("/api/v2/role")
        assert r.status == 403
        assert (await r.json())["error-message"] == \
            "Vous devez avoir le droit role:lecture pour accéder à la ressource."

        # a finished document refuses to be deleted, in Pastell's words
        r = await api.post(f"{doc_url}/action/supression")
        assert r.status == 400
        assert "n'est pas permise" in (await r.json())["error-message"]


async def test_pastell_errors_and_rights(runtime_factory, server_factory, pastell_config: Path) -> None:
    rt, url, auth = await _setup(runtime_factory, server_factory, pastell_config)
    async with rt.store.transaction() as tx:
        await repo.insert_entity(tx, Entity("autre", "Autre commune", None, None, rt.clock.now()))
    async with aiohttp.ClientSession(base_url=url) as anon:
        r = await anon.get("/api/v2/version")
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        assert (await r.json())["status"] == "error"
        r = await anon.get("/api/v2/version", headers=_basic("autre-nom", auth["X-Secret"]))
        assert r.status == 401
    async with aiohttp.ClientSession(base_url=url, headers=_only_auth(auth)) as api:
        r = await api.post("/api/v2/entite/autre/document", data={"type": "actes-generique"})
        assert r.status == 403 and "droit=entite:lecture" in (await r.json())["error-message"]
        r = await api.post("/api/v2/entite/ville-test/document", data={"type": "inconnu"})
        assert r.status == 404 and "inconnu" in (await r.json())["error-message"]
        r = await api.post("/api/v2/entite/ville-test/document", data={"type": "helios-generique"})
        id_d = (await r.json())["id_d"]
        r = await api.patch(f"/api/v2/entite/ville-test/document/{id_d}", data={"champ_inconnu": "x"})
        assert r.status == 400 and "champ_inconnu" in (await r.json())["error-message"]
        r = await api.post(f"/api/v2/entite/ville-test/document/{id_d}/action/send-tdt")
        assert r.status == 400 and "incomplet" in (await r.json())["error-message"]
        r = await api.post("/api/v2/entite/ville-test/document", data={"type": "actes-generique"})
        actes = (await r.json())["id_d"]
        r = await api.get(f"/api/v2/entite/ville-test/document/{actes}/externalData/acte_nature")
        assert (await r.json())["3"] == "Arrêté individuel"
        r = await api.patch(f"/api/v2/entite/ville-test/document/{actes}/externalData/acte_nature",
                            data={"acte_nature": "3"})
        assert (await r.json())["content"]["data"]["acte_nature"] == "3"
        r = await api.patch(f"/api/v2/entite/ville-test/document/{actes}/externalData/acte_nature",
                            data={"acte_nature": "9"})
        assert r.status == 400 and "« 9 »" in (await r.json())["error-message"]
        r = await api.get(f"/api/v2/entite/ville-test/document/{actes}/externalData/objet")
        assert r.status == 404
        r = await api.get(f"/api/v2/entite/autre/document/{id_d}")
        assert r.status == 403
        r = await api.get(f"/api/v2/entite/ville-test/document/{id_d}/file/fichier_pes")
        assert r.status == 404
