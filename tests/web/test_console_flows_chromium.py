"""Flows in the console (Chromium): the diagram drawn by the vendored Mermaid, fields and steps in words, which
flows a commune uses (inherited down the tree), and each step's connector for a commune."""

from __future__ import annotations

import pytest

from flowbus.api.entities import create_entity
from flowbus.people.access import Grant

pytestmark = pytest.mark.chromium


async def test_admin_reads_a_flow_and_stops_a_commune_using_it(runtime_factory, server_factory, browser, people,
                                                               screenshots):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    cc = await create_entity(rt, name="Communauté du Val", siren=None, parent=None, actor_name="t")
    commune = await create_entity(rt, name="Commune du Val", siren=None, parent=cc.id, actor_name="t")
    other = await create_entity(rt, name="Commune d'à côté", siren=None, parent=None, actor_name="t")
    await people.admin(rt, "camille")
    await people.user(rt, "admin-autre", grants=(Grant(other.id, "admin"),))
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "camille")
    await page.get_by_role("link", name="Flux", exact=True).click()
    await page.get_by_role("link", name="Délibération / arrêté").click()
    await page.wait_for_selector("#diagramme svg", timeout=20000)
    svg_text = await page.inner_text("#diagramme")
    steps = rt.flows["deliberation"].steps
    for step in steps:
        assert step.label in svg_text, step.label
    assert await page.locator("#diagramme svg g.node").count() >= len(steps)
    fields = await page.inner_text("section[aria-labelledby=champs]")
    assert "Nature de l'acte" in fields and "choix" in fields and "Délibération, Arrêté réglementaire" in fields
    assert "Oui" in fields and "True" not in fields
    await screenshots(page, "console-flow")

    # the commune's connectors, step by step: the shipped instances are test connectors, and said so
    await page.fill("#collectivite", commune.id)
    await page.get_by_role("button", name="Vérifier").click()
    steps_text = await page.inner_text("section[aria-labelledby=etapes]")
    assert "Connecteur pour Commune du Val" in steps_text and "test : n'envoie rien" in steps_text

    # the communauté stops using the flow: its commune inherits it; a new document is refused
    await page.goto(f"{srv.url}/admin/flux?collectivite={cc.id}")
    await page.get_by_role("button", name="Ne plus utiliser le flux Délibération / arrêté").click()
    assert "« Communauté du Val » n'utilise plus le flux « Délibération / arrêté »." in \
        await page.inner_text("[role=status]")
    await page.goto(f"{srv.url}/admin/flux?collectivite={commune.id}")
    row = page.locator("tr", has_text="Délibération / arrêté")
    assert "non utilisé" in await row.inner_text() and "hérité de « Communauté du Val »" in await row.inner_text()
    await screenshots(page, "console-flows")
    async with srv.client() as http:
        async with http.post("/api/v1/documents", json={"entity": commune.id, "flow": "deliberation",
                                                        "fields": {}}) as resp:
            body = await resp.json()
            assert resp.status == 422 and body["field"] == "flow"
            assert body["detail"] == ("Le flux « Délibération / arrêté » n'est pas utilisé par la collectivité "
                                      "« Commune du Val ».")
        async with http.post("/api/v1/documents", json={"entity": other.id, "flow": "deliberation",
                                                        "fields": {}}) as resp:
            assert resp.status == 201
    # the commune itself can take it back, closer decisions win
    await row.get_by_role("button").click()
    async with srv.client() as http:
        async with http.post("/api/v1/documents", json={"entity": commune.id, "flow": "deliberation",
                                                        "fields": {}}) as resp:
            assert resp.status == 201
    # an administrator of another commune cannot change it
    other_page = await browser.new_page()
    await people.sign_in(other_page, srv.url, "admin-autre")
    resp = await other_page.goto(f"{srv.url}/admin/flux?collectivite={commune.id}")
    assert resp.status == 403
