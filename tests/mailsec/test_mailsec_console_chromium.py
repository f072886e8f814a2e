"""The document page of a payslip sent by secure mail (Chromium): each recipient's status in French, a refused
address shown « Non délivré », « Renvoyer » sends a new link; a PDF preview; cancelling asks to confirm."""

from __future__ import annotations

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from tests.support.pdfs import pdf

pytestmark = pytest.mark.chromium


async def _one(data: bytes):
    yield data


async def test_payslip_page_shows_recipients_and_resends(runtime_factory, server_factory, mailsec_config, smtp,
                                                       wait_state, browser, people, screenshots):
    rt = await runtime_factory("embedded", config_dir=mailsec_config)
    srv = await server_factory(rt)
    ville = await create_entity(rt, name="Ville des Bulletins", siren=None, parent=None, actor_name="t")
    docs = {}
    for address in ("agent1@agents.example.fr", "refuse@agents.example.fr"):
        doc = await documents.create_document(rt, entity_id=ville.id, flow_id="rh-paie", actor="t", fields={
            "agent_nom": "Agent Test", "agent_email": address, "matricule": "M00001", "periode": "2026-10"})
        await documents.attach_file(rt, doc.id, "bulletin", filename="bulletin-octobre.pdf",
                                    media_type="application/pdf", chunks=_one(pdf("bulletin d'octobre")), actor="t")
        await documents.run_action(rt, doc.id, "start", actor="t")
        docs[address] = doc
    await wait_state(rt, docs["agent1@agents.example.fr"].id, "done", timeout=60)
    await wait_state(rt, docs["refuse@agents.example.fr"].id, ("done", "error", "waiting"), timeout=60)
    sent_before = len(smtp.to("agent1@agents.example.fr"))
    subjects = {m.message()["Subject"] for m in smtp.to("agent1@agents.example.fr")}
    assert "Votre bulletin de paie d'octobre 2026" in subjects, subjects  # « d'octobre », not « de octobre »

    await people.admin(rt, "rh.admin")
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "rh.admin")
    await page.goto(f"{srv.url}/admin/documents/{docs['agent1@agents.example.fr'].id}")
    section = page.locator("section[aria-labelledby=courriel]")
    assert "agent1@agents.example.fr" in await section.inner_text()
    assert "Envoyé, pas encore lu" in await section.inner_text()
    assert "Bulletin de paie (PDF)" in await page.locator("table.stack").nth(1).inner_text(), "field by its label"
    frame = page.locator("details.preview iframe")
    assert await frame.count() == 1 and "apercu=1" in await frame.get_attribute("src")
    await screenshots(page, "document-courriel")
    await section.get_by_role("button", name="Renvoyer à agent1@agents.example.fr").click()
    assert "Un nouveau lien a été envoyé à agent1@agents.example.fr." in await page.inner_text("[role=status]")
    assert "renvoyé 1 fois" in await page.locator("section[aria-labelledby=courriel]").inner_text()
    assert len(smtp.to("agent1@agents.example.fr")) > sent_before

    await page.goto(f"{srv.url}/admin/documents/{docs['refuse@agents.example.fr'].id}")
    text = await page.locator("section[aria-labelledby=courriel]").inner_text()
    assert "Non délivré" in text and "Adresse inconnue" in text

    # a PDF shown inline only when asked, and as a download otherwise
    href = await page.locator("a[download]").first.get_attribute("href")
    r = await page.request.get(f"{srv.url}{href}&apercu=1")
    assert r.headers["content-disposition"].startswith("inline;")
    r = await page.request.get(f"{srv.url}{href}")
    assert r.headers["content-disposition"].startswith("attachment;")


async def test_cancel_asks_to_confirm(runtime_factory, server_factory, engine_config, browser, people, screenshots):
    rt = await runtime_factory("embedded", config_dir=engine_config, workers=False)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune Prudente", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="four", fields={"title": "À garder"},
                                          actor="t")
    await people.admin(rt, "prudent")
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "prudent")
    await page.goto(f"{srv.url}/admin/documents/{doc.id}")
    await page.get_by_role("button", name="Annuler le document").click()
    assert await page.inner_text("h1") == "Annuler « À garder » ?"
    assert (await documents.get_document(rt, doc.id)).state == "draft", "nothing happens before the confirmation"
    await screenshots(page, "confirmer-annulation")
    await page.get_by_role("link", name="Non, revenir au document").click()
    assert (await documents.get_document(rt, doc.id)).state == "draft"
    await page.get_by_role("button", name="Annuler le document").click()
    await page.fill("#comment", "Doublon")
    await page.get_by_role("button", name="Oui, annuler le document").click()
    assert "Action « Annuler le document » enregistrée." in await page.inner_text("[role=status]")
    assert (await documents.get_document(rt, doc.id)).state == "cancelled"
