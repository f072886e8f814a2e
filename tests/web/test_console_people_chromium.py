"""The console in headless Chromium: a platform administrator builds the entity tree and invites an agent with
rights on the RH flows of one commune; the agent sees nothing else — in the pages, over API v1, the Pastell
layer and file downloads, with the same session."""

from __future__ import annotations

import re

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from tests.support.pdfs import pdf

pytestmark = pytest.mark.chromium

CC_SIREN, COMMUNE_SIREN = "200012345", "213401000"


def _valid(siren8: str) -> str:
    from flowbus.entities import siren_ok
    return next(siren8 + str(d) for d in range(10) if siren_ok(siren8 + str(d)))


async def _pdf_doc(rt, entity_id, flow, fields, field):
    doc = await documents.create_document(rt, entity_id=entity_id, flow_id=flow, fields=fields, actor="test")

    async def chunks():
        yield pdf("document de test")
    await documents.attach_file(rt, doc.id, field, filename=f"{flow}.pdf", media_type="application/pdf",
                                chunks=chunks(), actor="test")
    return doc


async def test_admin_builds_the_tree_and_invites_an_agent_who_sees_only_rh_of_the_commune(
        runtime_factory, server_factory, browser, people, screenshots, smtp_server):
    rt = await runtime_factory("embedded", smtp_host="127.0.0.1", smtp_port=smtp_server.port, workers=False)
    srv = await server_factory(rt)
    await people.admin(rt, "camille")
    cc_siren, commune_siren = _valid("20001234"), _valid("21340100")

    admin = await browser.new_context(locale="fr-FR")
    page = await admin.new_page()
    await people.sign_in(page, srv.url, "camille")
    await page.get_by_role("link", name="Collectivités").click()
    await page.fill("#name", "Communauté de communes du Pic")
    await page.fill("#siren", cc_siren)
    await page.click("section[aria-labelledby=creer] button[type=submit]")
    assert "Collectivité « Communauté de communes du Pic » créée." in await page.inner_text("[role=status]")
    await page.get_by_role("link", name="Communauté de communes du Pic").click()
    await screenshots(page, "console-entity")
    await page.get_by_role("link", name="Créer une sous-collectivité").click()
    await page.fill("#name", "Commune de Saint-Martin")
    await page.fill("#siren", "123456789")
    await page.click("section[aria-labelledby=creer] button[type=submit]")
    assert "SIREN « 123456789 » invalide" in await page.inner_text("#siren-erreur")
    assert await page.get_attribute("#siren", "aria-invalid") == "true"
    assert await page.input_value("#name") == "Commune de Saint-Martin"  # nothing typed is lost
    await page.fill("#siren", cc_siren)
    await page.click("section[aria-labelledby=creer] button[type=submit]")
    assert "déjà celui de « Communauté de communes du Pic »" in await page.inner_text("#siren-erreur")
    await page.fill("#siren", commune_siren)
    await page.click("section[aria-labelledby=creer] button[type=submit]")
    assert "Collectivité « Commune de Saint-Martin » créée." in await page.inner_text("[role=status]")
    assert "Commune de Saint-Martin" in await page.inner_text("section[aria-labelledby=niveau]")
    await screenshots(page, "console-entities")

    # invite an agent with agent rights on the RH flows of the commune only
    await page.get_by_role("link", name="Commune de Saint-Martin").click()
    await page.get_by_role("link", name="Personnes et droits").click()
    await page.fill("#name", "Agnès Roux")
    await page.fill("#login", "agnes.roux")
    await page.fill("#email", "agnes.roux@saint-martin.fr")
    assert await page.input_value("#entity") == commune_siren
    await page.select_option("#role", "editor")
    await page.check("text=Contrat de travail (RH)")
    await page.check("text=Bulletin de paie (RH)")
    await screenshots(page, "console-people")
    await page.click("section[aria-labelledby=inviter] button[type=submit]")
    assert "Invitation envoyée à agnes.roux@saint-martin.fr." in await page.inner_text("[role=status]")
    droits = await page.inner_text("#liste-droits")
    assert "Agent — Commune de Saint-Martin — flux : Bulletin de paie (RH), Contrat de travail (RH)" in droits \
        or "Agent — Commune de Saint-Martin — flux : Contrat de travail (RH), Bulletin de paie (RH)" in droits
    await screenshots(page, "console-person")

    # documents: RH and deliberation in the commune, RH in another commune
    async with rt.store.transaction() as tx:
        commune = (await tx.fetchrow("SELECT id FROM entities WHERE siren = $1", commune_siren))["id"]
    other = await create_entity(rt, name="Commune voisine", siren=None, parent=None, actor_name="test")
    rh = await _pdf_doc(rt, commune, "rh-contrat", {"agent_nom": "Durand", "agent_prenom": "Lou"}, "contrat")
    deliberation = await _pdf_doc(rt, commune, "deliberation", {"objet": "Budget primitif"}, "arrete")
    rh_other = await _pdf_doc(rt, other.id, "rh-contrat", {"agent_nom": "Voisin", "agent_prenom": "Max"}, "contrat")

    # the agent opens the e-mailed link, chooses a password, is signed in
    [received] = smtp_server.to("agnes.roux@saint-martin.fr")
    assert received.message()["Subject"] == "Votre compte flowbus"
    link = re.search(r"(http://\S+/mot-de-passe/nouveau/\S+)", received.text()).group(1)
    agent = await browser.new_context(locale="fr-FR")
    apage = await agent.new_page()
    await apage.goto(link)
    await apage.fill("#password", "saint-martin-rh-2026")
    await apage.fill("#confirm", "saint-martin-rh-2026")
    await apage.click("button[type=submit]")
    await apage.wait_for_url(f"{srv.url}/admin/")
    listing = await apage.inner_text("main")
    assert "Contrat de travail (RH)" in listing
    assert "Budget primitif" not in listing and "Voisin" not in listing
    assert await apage.locator("section[aria-labelledby=liste] tbody a").count() == 1
    assert "Collectivités" not in await apage.inner_text("nav.main")
    await screenshots(apage, "agent-dashboard")
    await apage.goto(f"{srv.url}/admin/collectivites")
    assert "Accès refusé" in await apage.inner_text("h1")
    for doc in (deliberation, rh_other):
        resp = await apage.goto(f"{srv.url}/admin/documents/{doc.id}")
        assert resp.status == 404
    resp = await apage.goto(f"{srv.url}/admin/documents/{rh.id}")
    assert resp.status == 200

    # the same session over API v1, the Pastell layer and downloads
    http = agent.request
    items = (await (await http.get(f"{srv.url}/api/v1/documents")).json())["items"]
    assert [d["id"] for d in items] == [rh.id]
    for doc in (deliberation, rh_other):
        assert (await http.get(f"{srv.url}/api/v1/documents/{doc.id}")).status == 404
        assert (await http.get(f"{srv.url}/api/v1/documents/{doc.id}/files/{'arrete' if doc is deliberation else 'contrat'}")).status == 404
        field = "arrete" if doc is deliberation else "contrat"
        assert (await http.get(f"{srv.url}/admin/documents/{doc.id}/files/{field}")).status == 404
    assert (await http.get(f"{srv.url}/api/v1/documents/{rh.id}/files/contrat")).status == 200
    assert (await http.get(f"{srv.url}/admin/documents/{rh.id}/files/contrat")).status == 200
    pastell = await (await http.get(f"{srv.url}/api/v2/entite/{commune}/document")).json()
    assert [d["id_d"] for d in pastell] == [rh.id]
    assert (await http.get(f"{srv.url}/api/v2/entite/{other.id}/document")).status == 403
    assert (await http.get(f"{srv.url}/api/v2/entite/{commune}/document/{deliberation.id}")).status == 404
    # and changing anything without the session's CSRF token is refused
    assert (await http.post(f"{srv.url}/api/v1/documents", data={"entity": commune, "flow": "rh-contrat"})).status == 403
    await agent.close()
    await admin.close()
