"""Issue 18's « Done when » for the PES viewer, in Chromium: a reader opens a document holding a 3-bordereau PES,
clicks « Visualiser le PES », sees every pièce with its amount, reaches a bordereau and a PJ by keyboard, downloads
the PJ decoded, and the page holds at 1366×768 and 390 px (screenshots, no sideways scrolling)."""

from __future__ import annotations

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.people.access import Grant
from tests.support.pdfs import pdf
from tests.support.pes import PJ, THREE, pes_aller

pytestmark = pytest.mark.chromium
FACTURE = pdf("Facture FACT20260001 — Papeterie du Midi")
CONVENTION = "Convention de location de la salle des fêtes du 14 mars\n".encode() * 20

# every pièce of tests.support.pes.THREE and its amounts as people read them (HT, TVA, TTC)
PIECES = {
    "Mandat n° 101": ("1\u202f234,56\u00a0€", "246,91\u00a0€", "1\u202f481,47\u00a0€"),
    "Mandat n° 102": ("12\u202f345,67\u00a0€", "—", "12\u202f345,67\u00a0€"),
    "Mandat n° 103": ("800,00\u00a0€", "—", "800,00\u00a0€"),
    "Titre n° 501": ("150,00\u00a0€", "—", "150,00\u00a0€"),
    "Titre n° 502": ("987\u202f654,32\u00a0€", "—", "987\u202f654,32\u00a0€"),
}


async def _one(data: bytes):
    yield data


async def test_reader_views_a_three_bordereau_pes_and_downloads_a_pj(runtime_factory, server_factory, browser,
                                                                    people, screenshots):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune de Saint-Jean-de-Védas", siren=None, parent=None,
                                  actor_name="t")
    data = pes_aller("PES_2026_MARS_003", pjs=(PJ("FACT20260001", "facture-papeterie.pdf", FACTURE),
                                                PJ("CONV202617", "convention.txt", CONVENTION, "text/plain",
                                                   gzip=False)))
    doc = await documents.create_document(rt, entity_id=commune.id, flow_id="pes",
                                          fields={"objet": "Mandats et titres de mars"}, actor="t")
    await documents.attach_file(rt, doc.id, "pes_aller", filename="PES_2026_MARS_003.xml",
                                media_type="application/xml", chunks=_one(data), actor="t")
    await people.user(rt, "tresorerie", name="Léa Comptable", grants=(Grant(commune.id, "reader", ("pes",)),))

    page = await browser.new_page(accept_downloads=True)
    await people.sign_in(page, srv.url, "tresorerie")
    await page.goto(f"{srv.url}/admin/documents/{doc.id}")
    await screenshots(page, "pes-document")
    await page.get_by_role("link", name="Visualiser le PES").click()
    await page.wait_for_url(f"{srv.url}/admin/documents/{doc.id}/pes/pes_aller/0")
    assert await page.get_by_role("heading", level=1).inner_text() == "PES Aller « PES_2026_MARS_003 »"
    assert await page.inner_text("#collectivite") == ("COMMUNE\nIdColl (SIRET du budget) 12345678912345 · "
                                                      "CodCol 123 · CodBud 12")
    assert await page.inner_text("#poste") == "034000" and await page.inner_text("#exercice") == "2026"
    assert await page.inner_text("#signature") == "Non signé"

    summary = await page.locator("#sommaire tbody tr").all_inner_texts()
    assert len(summary) == 3
    assert [s.split("\t")[:2] for s in summary] == [
        ["Bordereau n° 41", "Dépense"], ["Bordereau n° 42", "Dépense"], ["Bordereau n° 17", "Recette"]]
    pieces = page.locator("tr.piece-row")
    assert await pieces.count() == len(PIECES) == sum(len(b.pieces) for b in THREE)
    for name, (ht, tva, ttc) in PIECES.items():
        row = pieces.filter(has=page.get_by_role("rowheader", name=name, exact=True))
        assert await row.count() == 1, name
        assert [await row.locator(f"td[data-label='{label}']").inner_text()
                for label in ("Montant HT", "TVA", "Montant TTC")] == [ht, tva, ttc], name
    lignes = page.locator("#piece-1-1 tr.ligne-row")
    assert await lignes.count() == 2
    assert "CLASSEURS" in await lignes.nth(1).inner_text() and "234,56\u00a0€" in await lignes.nth(1).inner_text()
    tiers = await page.locator("#piece-1-1 td[data-label='Tiers']").first.inner_text()
    assert "PAPETERIE DU MIDI" in tiers and "SIRET 44306184100047" in tiers
    await screenshots(page, "pes-visualisation")

    # keyboard: from the list of bordereaux to the recette bordereau, then from a pièce to its PJ
    link = page.get_by_role("link", name="Bordereau n° 17", exact=True)
    await link.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url("**#bordereau-3")
    assert await page.evaluate("location.hash") == "#bordereau-3"
    await page.get_by_role("link", name="FACT20260001").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url("**#pj-0")

    download_link = page.get_by_role("link", name="Télécharger la pièce justificative « facture-papeterie.pdf »")
    await download_link.focus()
    async with page.expect_download() as info:
        await page.keyboard.press("Enter")
    download = await info.value
    assert download.suggested_filename == "facture-papeterie.pdf"
    assert (await download.path()).read_bytes() == FACTURE  # the PDF itself: base64 decoded, gunzipped
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Télécharger la pièce justificative « convention.txt »").click()
    assert (await (await info.value).path()).read_bytes() == CONVENTION
