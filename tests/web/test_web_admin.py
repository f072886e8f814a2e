"""The French admin console in headless Chromium: sign in, find a document in error, retry it."""

from __future__ import annotations

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity


@pytest.mark.chromium
async def test_admin_sees_an_error_and_skips_the_step(runtime_factory, server_factory, engine_config, browser,
                                                     wait_state, people, screenshots):
    rt = await runtime_factory("embedded", config_dir=engine_config)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune de Chromium", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="broken",
                                          fields={"title": "Arrêté en panne"}, actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")
    await wait_state(rt, doc.id, "error", timeout=30)

    await people.admin(rt, "camille")
    page = await browser.new_page()
    await page.goto(f"{srv.url}/admin/")
    assert "/connexion?suivant=" in page.url
    await page.fill("#login", "camille")
    await page.fill("#password", "pas-le-bon-mot-de-passe")
    await page.click("button[type=submit]")
    assert "Identifiant ou mot de passe incorrect." in await page.inner_text("[role=alert]")
    await page.fill("#password", people.password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{srv.url}/admin/")
    await screenshots(page, "admin-dashboard")
    counts = page.get_by_role("navigation", name="Nombre de documents par état")
    assert "En erreur : 1" in await counts.inner_text()
    await counts.get_by_role("link", name="En erreur : 1").click()
    assert "state=error" in page.url
    rows = page.locator("table.stack tbody tr")
    assert await rows.count() == 1 and "Service en panne" not in await rows.inner_text()
    await page.get_by_role("link", name="Arrêté en panne").click()
    assert await page.locator("#etat").inner_text() == "En erreur"
    assert await page.locator("#erreur").count() == 1
    route = await page.locator("ol.route li").all_inner_texts()
    assert route[0].startswith("Service en panne — en erreur (depuis le ") and route[1] == "Après — à venir"
    await page.get_by_role("button", name="Passer l'étape").click()
    assert "Action « Passer l'étape » enregistrée." in await page.content()
    await wait_state(rt, doc.id, "done")
    await page.reload()
    assert await page.locator("#etat").inner_text() == "Terminé"
    route = await page.locator("ol.route li").all_inner_texts()
    assert route[0].startswith("Service en panne — passé par un administrateur (le ")
    assert route[1].startswith("Après — fait (le ")
    journal_text = await page.locator("table").last.inner_text()
    assert "Action sur le document" in journal_text and "camille" in journal_text and "admin.action" not in journal_text
    await screenshots(page, "admin-document")


@pytest.mark.chromium
async def test_dashboard_lists_newest_first_a_page_at_a_time(runtime_factory, server_factory, engine_config, browser,
                                                              people, screenshots):
    from flowbus.people.access import Grant
    rt = await runtime_factory("embedded", config_dir=engine_config, workers=False)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune des Pages", siren=None, parent=None, actor_name="t")
    for n in range(1, 56):
        await documents.create_document(rt, entity_id=ent.id, flow_id="four", fields={"title": f"Arrêté n°{n}"},
                                        actor="t")
    await people.user(rt, "lecteur", grants=(Grant(ent.id, "reader"),))
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "lecteur")
    links = page.locator("section[aria-labelledby=liste] tbody a")
    assert await links.count() == 50
    assert await links.first.inner_text() == "Arrêté n°55"
    assert "Commune des Pages" in await page.locator("section[aria-labelledby=liste] tbody tr").first.inner_text()
    assert "Quatre étapes" in await page.locator("section[aria-labelledby=liste] tbody tr").first.inner_text()
    await page.get_by_role("link", name="Documents plus anciens →").click()
    assert [await links.nth(i).inner_text() for i in range(await links.count())] == [f"Arrêté n°{n}" for n in
                                                                                    range(5, 0, -1)]
    assert await page.get_by_role("link", name="Documents plus anciens →").count() == 0
    assert await page.get_by_role("link", name="Nouveau document").count() == 0  # a reader creates nothing
    assert await page.get_by_role("group", name="Action groupée").count() == 0  # nor acts on documents
    assert "Brouillon : 55" in await page.get_by_role("navigation", name="Nombre de documents par état").inner_text()
    await page.goto(f"{srv.url}/admin/?q=n°7")
    assert [await links.nth(i).inner_text() for i in range(await links.count())] == ["Arrêté n°7"]
