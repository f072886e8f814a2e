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


async def test_platform_admin_reloads_the_flows_and_reads_their_versions(runtime_factory, server_factory, browser,
                                                                         people, engine_config, screenshots):
    rt = await runtime_factory("embedded", config_dir=engine_config, workers=False)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="t")
    await people.admin(rt, "camille")
    await people.user(rt, "admin-commune", grants=(Grant(ent.id, "admin"),))
    flows = engine_config / "flows"
    (flows / "four.yml").write_text((flows / "four.yml").read_text().replace('label: "Quatre étapes"',
                                                                             'label: "Quatre étapes (v2)"'))
    (flows / "retry.yml").write_text("id: retry\nlabel: [cassé\n")
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "camille")
    await page.goto(f"{srv.url}/admin/flux")
    await page.get_by_role("button", name="Recharger les flux").click()
    status = await page.inner_text("[role=status]")
    assert "nouvelles versions : « Quatre étapes (v2) » version 2" in status, status
    refused = await page.inner_text("section[aria-labelledby=refuses]")
    assert "retry.yml" in refused and "la version 1 du flux « retry » reste en service" in refused
    assert "ligne 3 : YAML syntax error" in refused
    assert "Quatre étapes (v2)" in await page.inner_text("table")
    assert "flowbus flows reload" not in refused
    await screenshots(page, "console-flows-reload")
    await page.get_by_role("link", name="Quatre étapes (v2)").click()
    versions = await page.inner_text("section[aria-labelledby=versions]")
    assert "version 2" in versions and "en service" in versions and "version 1" in versions
    await page.get_by_role("link", name="version 1", exact=True).click()
    assert 'label: "Quatre étapes"' in await page.inner_text("pre.code")
    await screenshots(page, "console-flow-version")
    async with rt.store.transaction() as tx:
        kinds = [r["kind"] for r in await tx.fetch("SELECT kind FROM journal WHERE kind = 'admin.flows.reloaded'")]
    assert kinds == ["admin.flows.reloaded"]
    # an entity administrator sees the flows but cannot reload them
    other = await browser.new_page()
    await people.sign_in(other, srv.url, "admin-commune")
    await other.goto(f"{srv.url}/admin/flux?collectivite={ent.id}")
    assert await other.get_by_role("button", name="Recharger les flux").count() == 0
    csrf = await other.locator("input[name=csrf]").first.get_attribute("value")
    resp = await other.request.post(f"{srv.url}/admin/flux/recharger", form={"csrf": csrf})
    assert resp.status == 403
