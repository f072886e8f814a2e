"""An agent creates a délibération in the browser (Chromium): a form built from the flow's fields, French errors next
to the fields with nothing typed lost, the act PDF and two annexes uploaded, « Envoyer »; then a draft is edited."""

from __future__ import annotations

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.people.access import Grant
from flowbus.signature.textpdf import simple_pdf

pytestmark = pytest.mark.chromium


async def test_agent_creates_and_sends_a_deliberation(runtime_factory, server_factory, browser, people, tmp_path,
                                                      wait_state, screenshots):
    rt = await runtime_factory("embedded")
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune des Formulaires", siren=None, parent=None, actor_name="t")
    await people.user(rt, "agent.delib", name="Agent Délibérations",
                      grants=(Grant(commune.id, "editor", ("deliberation",)),))
    acte, annexe1, annexe2 = tmp_path / "acte.pdf", tmp_path / "annexe-1.pdf", tmp_path / "annexe-2.pdf"
    acte.write_bytes(simple_pdf(["Délibération n° DEL2026_12", "Objet : tarifs de la cantine"]))
    annexe1.write_bytes(simple_pdf(["Annexe 1 : grille tarifaire"]))
    annexe2.write_bytes(simple_pdf(["Annexe 2 : avis de la commission"]))

    page = await browser.new_page()
    await people.sign_in(page, srv.url, "agent.delib")
    await page.get_by_role("link", name="Nouveau document").click()
    await page.select_option("#collectivite", commune.id)
    await page.click("main button[type=submit]")
    assert await page.locator("#flux option").all_inner_texts() == ["Délibération / arrêté"]  # only what is granted
    await page.click("main button[type=submit]")
    assert "Délibération / arrêté — nouveau document" in await page.inner_text("h1")
    await page.fill("#f-objet", "Tarifs de la cantine scolaire")
    await page.select_option("#f-nature", label="Délibération")
    await page.fill("#f-numero_acte", "del 2026/12")
    await page.fill("#f-date_decision", "2026-11-30")
    await page.fill("#f-classification", "7.1")
    assert await page.locator("#f-aractes").count() == 0  # filled by the circuit, not by people
    assert "Rempli par le circuit : Accusé de réception de la préfecture" in await page.inner_text("main form")
    await screenshots(page, "document-form")
    await page.get_by_role("button", name="Envoyer").click()
    error = await page.inner_text("#e-numero_acte")
    assert "« Numéro de l'acte » (numero_acte) : « del 2026/12 » n'a pas la forme attendue" in error
    assert await page.get_attribute("#f-numero_acte", "aria-invalid") == "true"
    assert await page.input_value("#f-objet") == "Tarifs de la cantine scolaire"  # nothing typed is lost
    assert await page.input_value("#f-classification") == "7.1"
    await screenshots(page, "document-form-error")
    await page.fill("#f-numero_acte", "DEL2026_12")
    broken = tmp_path / "acte-abime.pdf"
    broken.write_bytes(acte.read_bytes()[:300])  # cut short: no cross-reference table
    await page.set_input_files("#f-arrete", str(broken))
    await page.get_by_role("button", name="Envoyer").click()
    assert await page.inner_text("#e-arrete") == (
        "Le fichier « acte-abime.pdf » (champ « Acte (PDF) ») est refusé : le PDF est illisible ou endommagé "
        "(Could not read malformed PDF file).")
    assert await page.input_value("#f-numero_acte") == "DEL2026_12"
    await screenshots(page, "document-form-pdf-refused")
    await page.set_input_files("#f-arrete", str(acte))
    await page.set_input_files("#f-annexes", [str(annexe1), str(annexe2)])
    await page.get_by_role("button", name="Envoyer").click()
    assert await page.inner_text("[role=status]") == "Document envoyé : il suit maintenant son circuit."
    doc_id = page.url.split("/admin/documents/")[1].split("?")[0]
    doc = await wait_state(rt, doc_id, ("running", "waiting", "done"))
    assert doc.fields["numero_acte"] == "DEL2026_12" and doc.fields["nature"] == "1"
    assert doc.fields["date_decision"] == "2026-11-30" and doc.fields["envoi_signature"] is True
    assert [f.filename for f in doc.files_of("annexes")] == ["annexe-1.pdf", "annexe-2.pdf"]
    assert (await rt.blobs.read(doc.files_of("arrete")[0].blob_key)) == acte.read_bytes()


async def test_a_draft_is_saved_then_edited(runtime_factory, server_factory, browser, people):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune des Brouillons", siren=None, parent=None, actor_name="t")
    await people.user(rt, "agent.rh", grants=(Grant(commune.id, "editor", ("rh-paie",)),))
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "agent.rh")
    await page.goto(f"{srv.url}/admin/documents/nouveau?collectivite={commune.id}&flux=rh-paie")
    await page.fill("#f-agent_nom", "Martin")
    await page.get_by_role("button", name="Enregistrer le brouillon").click()
    assert await page.inner_text("[role=status]") == "Brouillon enregistré."
    doc_id = page.url.split("/admin/documents/")[1].split("?")[0]
    assert (await documents.get_document(rt, doc_id)).state == "draft"
    await page.get_by_role("link", name="Modifier").click()
    assert await page.input_value("#f-agent_nom") == "Martin"
    await page.get_by_role("button", name="Envoyer").click()  # required fields still missing: said in French
    alert = await page.inner_text("[role=alert]")
    assert "Avant l'envoi, il manque" in alert and "Bulletin de paie (PDF)" in alert
    # another flow of the same commune is not this agent's
    resp = await page.goto(f"{srv.url}/admin/documents/nouveau?collectivite={commune.id}&flux=deliberation")
    assert "Délibération" not in await page.inner_text("main select#flux")
    assert resp.status == 200


async def test_files_are_checked_in_the_browser_before_sending(runtime_factory, server_factory, browser, people,
                                                              tmp_path, screenshots):
    rt = await runtime_factory("embedded", max_upload_size=60_000)
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune Pressée", siren=None, parent=None, actor_name="t")
    await people.user(rt, "agent.presse", grants=(Grant(commune.id, "editor", ("deliberation",)),))
    notes, big = tmp_path / "notes.txt", tmp_path / "gros.pdf"
    notes.write_text("pas un PDF")
    from tests.support.pdfs import large_pdf
    big.write_bytes(large_pdf(100_000))
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "agent.presse")
    await page.goto(f"{srv.url}/admin/documents/nouveau?collectivite={commune.id}&flux=deliberation")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    await page.set_input_files("#f-arrete", str(notes))
    assert await page.inner_text("#c-arrete") == (
        "« notes.txt » n'est pas d'un type accepté par « Acte (PDF) » (application/pdf).")
    assert await page.get_attribute("#f-arrete", "aria-invalid") == "true"
    await page.set_input_files("#f-annexes", str(big))
    assert "« gros.pdf » (98,3 Ko) dépasse la taille permise pour « Annexes » (58,6 Ko)." == \
        await page.inner_text("#c-annexes")
    await screenshots(page, "document-form-client-checks")
    await page.get_by_role("button", name="Envoyer").click()
    await page.wait_for_timeout(300)
    assert sent == [] and await page.evaluate("document.activeElement.id") == "f-arrete", "nothing sent"
    await page.set_input_files("#f-arrete", [])
    assert await page.is_hidden("#c-arrete") and await page.get_attribute("#f-arrete", "aria-invalid") is None
