"""API keys in the console (Chromium): created for one commune and its RH flows, the secret shown once, revoked."""

from __future__ import annotations

import aiohttp
import pytest

from flowbus import documents
from flowbus.api.entities import create_entity

pytestmark = pytest.mark.chromium


async def test_admin_creates_uses_and_revokes_a_key(runtime_factory, server_factory, browser, people, screenshots):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    await people.admin(rt, "camille")
    commune = await create_entity(rt, name="Commune des Clés", siren=None, parent=None, actor_name="t")
    rh = await documents.create_document(rt, entity_id=commune.id, flow_id="rh-paie", fields={}, actor="t")
    await documents.create_document(rt, entity_id=commune.id, flow_id="deliberation", fields={}, actor="t")
    context = await browser.new_context(locale="fr-FR")
    page = await context.new_page()
    await people.sign_in(page, srv.url, "camille")
    await page.get_by_role("link", name="Clés d'API").click()
    await page.fill("#name", "")
    await page.fill("#entity", commune.id)
    await page.evaluate("document.querySelector('#name').removeAttribute('required')")
    await page.click("section[aria-labelledby=creer] button[type=submit]")
    assert "Donnez un nom à la clé" in await page.inner_text("#name-erreur")
    await page.fill("#name", "Logiciel de paie")
    await page.check("text=Bulletin de paie (RH)")
    await page.click("section[aria-labelledby=creer] button[type=submit]")
    status = await page.inner_text("#cle-creee")
    assert "Copiez-la maintenant : elle ne sera plus jamais affichée." in status
    secret = (await page.inner_text("#secret")).strip()
    assert secret.startswith("fbk_")
    table = await page.inner_text("table")
    assert "Agent — Commune des Clés — flux : Bulletin de paie (RH)" in table
    await screenshots(page, "console-keys")
    async with aiohttp.ClientSession(base_url=srv.url, headers={"Authorization": f"Bearer {secret}"}) as http:
        async with http.get("/api/v1/documents") as resp:
            assert [d["id"] for d in (await resp.json())["items"]] == [rh.id]
    await page.goto(f"{srv.url}/admin/cles")
    assert secret not in await page.content()  # never shown again
    row = page.locator("tr", has_text="Logiciel de paie")
    await row.locator("input[name=confirme]").check()
    await row.get_by_role("button", name="Révoquer la clé Logiciel de paie").click()
    assert "Clé « Logiciel de paie » révoquée" in await page.inner_text("[role=status]")
    async with aiohttp.ClientSession(base_url=srv.url, headers={"Authorization": f"Bearer {secret}"}) as http:
        async with http.get("/api/v1/documents") as resp:
            assert resp.status == 401
    await context.close()
