"""The journal in the console (Chromium): search, French labels, chain check on demand, CSV export."""

from __future__ import annotations

import csv
import io

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.people.access import Grant

pytestmark = pytest.mark.chromium


async def test_admin_searches_the_journal_and_downloads_its_csv(runtime_factory, server_factory, engine_config,
                                                                 browser, people, wait_state, screenshots):
    rt = await runtime_factory("embedded", config_dir=engine_config)
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune du Journal", siren=None, parent=None, actor_name="t")
    other = await create_entity(rt, name="Commune Discrète", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=commune.id, flow_id="four",
                                          fields={"title": "Arrêté journalisé"}, actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")
    await wait_state(rt, doc.id, "done")
    await documents.create_document(rt, entity_id=other.id, flow_id="four", fields={"title": "Ailleurs"}, actor="t")
    await people.user(rt, "admin-commune", name="Dominique Admin", grants=(Grant(commune.id, "admin"),))

    context = await browser.new_context(accept_downloads=True, locale="fr-FR")
    page = await context.new_page()
    await people.sign_in(page, srv.url, "admin-commune")
    await page.get_by_role("link", name="Journal", exact=True).click()
    # by default: the administrative entries and sign-ins of what this person administers
    assert "Droit donné" in await page.inner_text("section[aria-labelledby=entrees]")
    await page.fill("#entity", commune.id)
    await page.click("form[role=search] button[type=submit]")
    text = await page.inner_text("section[aria-labelledby=entrees]")
    for label in ("Document créé", "Changement d'état", "Collectivité créée"):
        assert label in text
    assert "Ailleurs" not in text and "state.changed" not in text
    await page.get_by_role("button", name="Vérifier la chaîne").click()
    status = await page.inner_text("[role=status]")
    assert status.startswith("Chaîne intègre (") and "entrées vérifiées" in status
    await screenshots(page, "console-journal")
    # another commune's journal is refused
    await page.fill("#entity", other.id)
    await page.click("form[role=search] button[type=submit]")
    assert "Vous n'administrez pas cette collectivité." in await page.inner_text("[role=alert]")

    await page.fill("#entity", commune.id)
    await page.select_option("#kind", "document.created")
    await page.click("form[role=search] button[type=submit]")
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Exporter en CSV").click()
    download = await info.value
    raw = open(await download.path(), "rb").read()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["date (UTC)", "collectivité", "acteur", "événement", "type", "document", "données", "empreinte"]
    assert [(r[1], r[3], r[5]) for r in rows[1:]] == [("Commune du Journal", "Document créé", doc.id)]
    assert len(rows[1][7]) == 64
    await context.close()


async def test_journal_pages_newest_first(runtime_factory, server_factory, browser, people):
    from flowbus.journal_search import Query, search
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune Bavarde", siren=None, parent=None, actor_name="t")
    for n in range(60):
        await documents.create_document(rt, entity_id=commune.id, flow_id="demo", fields={"title": f"n{n}"},
                                        actor=f"user:agent{n:02d}")
    async with rt.store.transaction() as tx:
        newest = await search(tx, Query(entity_id=commune.id), limit=1)
    assert newest[0].actor == "user:agent59"
    await people.admin(rt, "camille")
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "camille")
    await page.goto(f"{srv.url}/admin/journal?entity={commune.id}")
    cells = page.locator("section[aria-labelledby=entrees] tbody tr td:nth-child(3)")
    assert await cells.first.inner_text() == "agent59"
    assert await cells.count() == 50
    await page.get_by_role("link", name="Entrées plus anciennes →").click()
    assert await cells.first.inner_text() == "agent09"
    assert await cells.count() == 11  # agent09 … agent00 and the entity's creation
