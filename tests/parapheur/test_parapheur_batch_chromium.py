"""Élus in batches (Chromium): the DGS visas ten folders at once, the mayor — told by e-mail that they
arrived — gives her own certificate, then signs the ten in one action with its code; each signed PDF
passes `flowbus verify` with her name, not the seal's."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from flowbus import journal, notifications
from flowbus.signature import parapheur
from flowbus.signature.parapheur_demo import seed_commune
from flowbus.signature.pki import SIGNER_CN
from tests.parapheur.conftest import deliberation_config
from tests.parapheur.test_parapheur_inbox_chromium import local_instance, sign_in

pytestmark = pytest.mark.chromium
N = 10


async def _inbox_size(rt, signer, n, timeout=60.0):
    for _ in range(int(timeout / 0.1)):
        async with rt.store.transaction() as tx:
            if len(await parapheur.inbox(tx, signer, rt.clock.now())) == n:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{signer.login}'s inbox did not reach {n} folders")


async def test_mayor_signs_ten_folders_in_one_action_with_her_certificate(
        seal_pki, acte_pdf, runtime_factory, deliberation, server_factory, browser, smtp_server, tmp_path,
        screenshots):
    rt = await runtime_factory("embedded", config_dir=deliberation_config(tmp_path, local_instance(seal_pki)),
                               smtp_host="127.0.0.1", smtp_port=smtp_server.port)
    await notifications.install(rt).start()
    server = await server_factory(rt)
    c = await seed_commune(rt)
    async with rt.store.transaction() as tx:
        await tx.execute("UPDATE parapheur_signers SET email = $2 WHERE id = $1", c["maire"].id, "maire@commune.fr")
    docs = [await deliberation(rt, c["entity"].id, acte_pdf, numero=f"DEL2026_{i:03d}", objet=f"Délibération {i}")
            for i in range(N)]
    await _inbox_size(rt, c["dgs"], N)

    context = await browser.new_context(locale="fr-FR")
    page = await context.new_page()
    await sign_in(page, server.url, c["dgs"].login, "dgs-motdepasse")
    for box in await page.locator("input[name=tache]").all():
        await box.check()
    await page.fill("#annotation", "Vu, conforme au budget.")
    await page.click("#traiter-selection")
    await page.wait_for_selector("[role=status]")
    assert await page.inner_text("[role=status]") == f"{N} dossiers traités."
    await page.click("text=Se déconnecter")

    # the mayor is told, once per folder, by e-mail
    for _ in range(200):
        if len(smtp_server.to("maire@commune.fr")) == N:
            break
        await asyncio.sleep(0.05)
    mails = smtp_server.to("maire@commune.fr")
    assert len(mails) == N and all(m.message()["Subject"].startswith("[flowbus] Un dossier vous attend : Délibération ")
                                   for m in mails)

    await sign_in(page, server.url, c["maire"].login, "maire-motdepasse")
    assert "cachet électronique de la collectivité" in await page.inner_text("#moyen")
    await page.click("text=Mon certificat")
    await page.set_input_files("#fichier", str(seal_pki.signer_p12))
    await page.fill("#code", "pas-le-bon-code")
    await page.get_by_role("button", name="Enregistrer").click()
    assert "Certificat refusé : code incorrect." in await page.inner_text("[role=alert]")
    await page.set_input_files("#fichier", str(seal_pki.signer_p12))
    await page.fill("#code", seal_pki.password)
    await page.get_by_role("button", name="Enregistrer").click()
    assert f"CN={SIGNER_CN}" in await page.inner_text("[role=status]")
    await screenshots(page, "parapheur-certificat")
    await page.goto(f"{server.url}/parapheur/")
    assert f"votre certificat personnel CN={SIGNER_CN}" in " ".join((await page.inner_text("#moyen")).split())
    for box in await page.locator("input[name=tache]").all():
        await box.check()
    await page.fill("#code-lot", "faux")
    await page.click("#traiter-selection")
    assert "Code du certificat incorrect." in await page.inner_text("[role=alert]")
    assert await page.locator("input[name=tache]").count() == N, "nothing signed with a wrong code"
    await screenshots(page, "parapheur-lot")
    for box in await page.locator("input[name=tache]").all():
        await box.check()
    await page.fill("#code-lot", seal_pki.password)
    await page.click("#traiter-selection")
    await page.wait_for_selector("[role=status]")
    assert await page.inner_text("[role=status]") == f"{N} dossiers traités."
    assert "Aucun dossier n'attend votre décision." in await page.inner_text("main")

    async with rt.store.transaction() as tx:
        for i, doc in enumerate(docs):
            [folder_row] = await tx.fetch("SELECT id FROM parapheur_folders WHERE document_id = $1", doc.id)
            folder = await parapheur.get_folder(tx, folder_row["id"])
            assert folder.status == "approved"
            decisions = await parapheur.decisions_of(tx, folder.id)
            assert [d.decision for d in decisions] == ["visa", "signature"]
            assert decisions[0].comment == "Vu, conforme au budget."
            entries = [e for e in await journal.for_document(tx, doc.id) if e.kind == "signature.decision"]
            assert entries[-1].data["signed_with"].startswith(f"certificat personnel « CN={SIGNER_CN},")
            signed = tmp_path / f"signe-{i}.pdf"
            signed.write_bytes(await rt.blobs.read(folder.current_blob))
            out = subprocess.run([sys.executable, "-m", "flowbus", "verify", str(signed), "--ca", str(seal_pki.ca_pem),
                                  "--json"], capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stdout + out.stderr
            results = json.loads(out.stdout)
            text = json.dumps(results, ensure_ascii=False)
            assert "TOTAL-PASSED" in text and SIGNER_CN in text, text
