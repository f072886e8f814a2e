"""The French signer inbox in headless Chromium: sign in, read the PDF, approve (the server seals) or reject."""

from __future__ import annotations

import asyncio
import re

import pytest

from flowbus import journal
from flowbus.signature import parapheur
from flowbus.signature.pades import verify_pdf
from flowbus.signature.parapheur_demo import seed_commune
from flowbus.signature.pki import SEAL_CN

pytestmark = pytest.mark.chromium


def local_instance(pki) -> dict:
    return {"kind": "local", "settings": {"seal_p12_path": str(pki.seal_p12), "seal_password": pki.password,
                                          "circuit": "Délibérations"}}


async def wait_for_inbox(rt, signer, timeout=15.0):
    for _ in range(int(timeout / 0.05)):
        async with rt.store.transaction() as tx:
            if await parapheur.inbox(tx, signer, rt.clock.now()):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing reached {signer.login}'s inbox")


async def submit(page, button: str) -> None:
    """Press a decision button (keyboard: the PDF viewer above may still be laying out) and wait for the inbox."""
    await page.wait_for_load_state("load")
    await page.focus(button)
    await page.keyboard.press("Enter")
    try:
        await page.wait_for_url(re.compile(r"/parapheur/\?message="), wait_until="domcontentloaded", timeout=15000)
    except Exception:
        print("DEBUG-URL", page.url, await page.inner_text("body"))
        raise


async def sign_in(page, url, login, password):
    await page.goto(f"{url}/parapheur/")
    assert page.url.endswith("/parapheur/connexion")
    await page.fill("#login", login)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_selector("h1:has-text('Dossiers à traiter')")


async def test_signer_reads_and_approves_in_chromium(seal_pki, acte_pdf, deliberation_runtime, deliberation,
                                                      wait_state, server_factory, browser):
    rt = await deliberation_runtime(local_instance(seal_pki))
    server = await server_factory(rt)
    c = await seed_commune(rt)
    doc = await deliberation(rt, c["entity"].id, acte_pdf)
    await wait_for_inbox(rt, c["dgs"])

    context = await browser.new_context(locale="fr-FR")
    page = await context.new_page()
    # wrong password: a French message, no session
    await page.goto(f"{server.url}/parapheur/connexion")
    await page.fill("#login", c["dgs"].login)
    await page.fill("#password", "pas-le-bon")
    await page.click("button[type=submit]")
    assert "Identifiant ou mot de passe incorrect." in await page.inner_text("[role=alert]")

    # the DGS gives the visa
    await sign_in(page, server.url, c["dgs"].login, "dgs-motdepasse")
    await page.click("text=Subvention au club de voile")
    await page.wait_for_selector("#approuver")
    assert await page.inner_text("#approuver") == "Viser"
    await submit(page, "#approuver")
    await page.wait_for_selector("[role=status]")
    assert await page.inner_text("[role=status]") == "Dossier visé."
    assert "Aucun dossier n'attend votre décision." in await page.inner_text("main")
    await page.click("text=Se déconnecter")
    await page.wait_for_url(f"{server.url}/parapheur/connexion")

    # the mayor reads the PDF in the page, then signs: the server applies the seal
    await sign_in(page, server.url, c["maire"].login, "maire-motdepasse")
    await page.click("text=Subvention au club de voile")
    frame_src = await page.get_attribute("iframe.viewer", "src")
    pdf = await page.request.get(server.url + frame_src)
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    assert await pdf.body() == acte_pdf
    assert "Visa" in await page.inner_text("table")  # the circuit shows the DGS visa
    await submit(page, "#approuver")
    assert await page.inner_text("[role=status]") == "Dossier signé (cachet de la collectivité)."

    done = await wait_state(rt, doc.id, "done", timeout=30)
    signed = await rt.blobs.read(done.files_of("arrete")[0].blob_key)
    [result] = verify_pdf(signed, trusted=seal_pki.trusted)
    assert result.intact and result.signer == SEAL_CN and result.chain_status == "trusted"
    assert done.fields["signataire"] == "Jeanne Martin"
    async with rt.store.transaction() as tx:
        entries = [e for e in await journal.for_document(tx, doc.id) if e.kind == "signature.decision"]
    assert [(e.actor, e.data["decision"]) for e in entries] == [(f"signataire:{c['dgs'].login}", "visa"),
                                                              (f"signataire:{c['maire'].login}", "signature")]
    # another signer's session cannot open the folder's document
    anon = await browser.new_context()
    resp = await anon.request.get(server.url + frame_src, max_redirects=0)
    assert resp.status == 302
    await anon.close()
    await context.close()


async def test_signer_rejects_with_a_comment_in_chromium(seal_pki, acte_pdf, deliberation_runtime, deliberation,
                                                          wait_state, server_factory, browser):
    rt = await deliberation_runtime(local_instance(seal_pki))
    server = await server_factory(rt)
    c = await seed_commune(rt)
    doc = await deliberation(rt, c["entity"].id, acte_pdf)
    await wait_for_inbox(rt, c["dgs"])
    context = await browser.new_context(locale="fr-FR")
    page = await context.new_page()
    await sign_in(page, server.url, c["dgs"].login, "dgs-motdepasse")
    await page.click("text=Subvention au club de voile")
    await page.fill("#comment-refus", "Il manque la délibération budgétaire")
    await submit(page, "#refuser")
    await page.wait_for_selector("[role=status]")
    assert await page.inner_text("[role=status]") == "Dossier refusé."
    refused = await wait_state(rt, doc.id, "refuse_signature", timeout=30)
    assert refused.fields["signature_refus"] == "Il manque la délibération budgétaire"
    assert refused.fields["signature_refus_par"] == "Paul Durand"
    await context.close()
